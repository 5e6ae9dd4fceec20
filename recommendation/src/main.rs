//! `recommendation` binary: everything is [`shared::agent::main`] with the recommendation agent's state and routes.

use std::process::ExitCode;

fn main() -> ExitCode {
    shared::agent::main::<recommendation::AppState>()
}
