//! `data` binary: everything is [`shared::agent::main`] with the data agent's state and routes.

use std::process::ExitCode;

/// mimalloc instead of the C library's allocator. A request allocates and frees a few dozen small blocks on each
/// hop (headers, the JSON body, log fields); with glibc's malloc that was 9 % of the instructions of a
/// `/recommend` through both agents (bench/callgrind.sh: 141.9k → 128.7k per request), and the static images link
/// musl, whose allocator is slower still.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shared::agent::main::<data::AppState>()
}
