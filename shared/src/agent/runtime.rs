//! The async runtime of an agent binary, with a bounded exit.

use std::{error::Error, future::Future, process::ExitCode, time::Duration};

/// How long exiting waits for blocking-pool threads (e.g. a DNS lookup stuck in `getaddrinfo`, which cannot be
/// cancelled) before the process leaves without them. Without a bound the process outlives its drain.
const BLOCKING_THREADS_GRACE: Duration = Duration::from_millis(200);

/// Runs an agent's `main` body on a multi-threaded runtime; a startup error is printed on one line, exit status 1.
pub(crate) fn block_on<F>(name: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, Box<dyn Error + Send + Sync>>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(main).unwrap_or_else(|err| {
        tracing::error!(error = %err, "fatal");
        eprintln!("{name}: {err}");
        ExitCode::FAILURE
    });
    runtime.shutdown_timeout(BLOCKING_THREADS_GRACE);
    code
}
