//! `data` binary: everything is [`shared::agent::main`] with the data agent's state and routes.

use std::process::ExitCode;

fn main() -> ExitCode {
    shared::agent::main::<data::AppState>()
}
