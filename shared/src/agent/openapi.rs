//! The `openapi` subcommand: prints the document the agent serves at `/openapi.json`, without serving. Tools that
//! need the agent's routes (the manifest consistency check, `scripts/manifests/consistency.py`) read them from it
//! instead of parsing source code. The document is asked of the agent's own router in process, so it is the one a
//! running agent answers with, not a second rendering of the spec.

use std::{
    io::{self, Write},
    process::ExitCode,
    sync::Arc,
};

use axum::{
    BoxError,
    body::{Body, to_bytes},
    http::Request,
};
use tower::ServiceExt;

use super::{Agent, router};

/// Largest document read back from the router; the agents' are tens of KiB.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Writes `GET /openapi.json` of an agent built from `config` to stdout.
pub(crate) async fn print<A: Agent>(config: &A::Config) -> Result<ExitCode, BoxError> {
    let agent = Arc::new(A::new(config)?);
    let request = Request::get("/openapi.json").body(Body::empty())?;
    let response = match router(&agent).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if !response.status().is_success() {
        return Err(format!("GET /openapi.json answered {}", response.status()).into());
    }
    let document = to_bytes(response.into_body(), MAX_DOCUMENT_BYTES).await?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&document)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
