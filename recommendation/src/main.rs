//! `recommendation` binary: `recommendation eval` compares the models ([`recommendation::eval`]); everything else is
//! [`shared::agent::main`] with the recommendation agent's state and routes.

use std::process::ExitCode;

/// mimalloc instead of the C library's allocator, as in the data agent (see `data/src/main.rs` for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    recommendation::eval::main_if_asked().unwrap_or_else(shared::agent::main::<recommendation::AppState>)
}
