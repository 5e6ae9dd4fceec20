//! What the data agent's route tests share: the agent's state and its router, driven in-process with `oneshot`.

use std::sync::Arc;

use axum::Router;
use data::{AppState, Config};
use shared::agent::{Agent, router};

/// A data agent with `config`: its routes and its state (to look inside while driving the routes).
pub fn app_with(config: &Config) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState::new(config).expect("the data set loads"));
    (router(&state), state)
}

/// A data agent with the test settings.
pub fn app() -> (Router, Arc<AppState>) {
    app_with(&Config::for_tests())
}
