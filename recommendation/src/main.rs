//! `recommendation` binary: `recommendation eval` compares the models ([`recommendation::eval`]); everything else is
//! [`shared::agent::main`] with the recommendation agent's state and routes.

use std::process::ExitCode;

fn main() -> ExitCode {
    recommendation::eval::main_if_asked().unwrap_or_else(shared::agent::main::<recommendation::AppState>)
}
