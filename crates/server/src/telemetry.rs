//! Logging set-up: human-readable or JSON lines, filtered by the configured directive.
//! Called once by `main`; tests leave it alone unless they opt in with `TEST_LOG=1`.
//!
//! Lines are written to stderr by a thread of their own through a bounded queue: a call
//! that logs never waits for stderr, so a slow or blocked log reader never slows calls.
//! When the queue (65,536 lines) is full, lines are dropped rather than calls held up;
//! [`flush`] writes what is queued before the process exits.

use std::sync::{Mutex, PoisonError};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines the queue holds before dropping.
const QUEUED_LINES: usize = 65_536;

/// The writer thread's guard: dropping it writes what is queued.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the global subscriber. A second call (e.g. from a test) is ignored.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("tenantd-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        *GUARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
    }
}

/// Writes every queued line and stops the writer thread (lines logged after it are lost):
/// for the end of `main`.
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(PoisonError::into_inner).take());
}
