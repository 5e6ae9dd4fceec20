//! The signal that starts a graceful shutdown.
//!
//! In a container the agent is PID 1, where the kernel ignores SIGTERM unless the process installed a handler:
//! `docker stop` and Kubernetes would wait out their grace period and then SIGKILL. Outside a container, an early
//! SIGTERM before a handler exists kills the process outright. So handlers are installed when [`listen`] is called,
//! first thing in `main`, not when the returned future is first polled.

use std::{future::Future, io};

use tokio::signal::unix::{SignalKind, signal};

/// Installs SIGTERM and SIGINT handlers now; the returned future completes when either arrives.
pub(crate) fn listen() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    })
}
