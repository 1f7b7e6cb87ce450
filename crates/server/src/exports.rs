//! Exports in the background: `--export-workers` workers per replica write archives
//! (claimed with `FOR UPDATE SKIP LOCKED`, under a lease), and a sweeper deletes exports
//! past `--export-retention-hours` with their archives.

use std::time::Duration;

use tenantd_application::exports::ExportEngine;
use tokio_util::sync::CancellationToken;

use crate::app::{Worker, work};
use crate::tasks::Tasks;

/// How often the sweeper looks for expired exports.
const SWEEP_EVERY: Duration = Duration::from_mins(1);

impl Worker for ExportEngine {
    fn work_once(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, tenantd_domain::Error>> + Send {
        ExportEngine::work_once(self, name)
    }

    fn idle(&self) -> impl Future<Output = ()> + Send {
        ExportEngine::idle(self)
    }
}

/// Starts the workers and the sweeper on `tasks`; they stop once its token is cancelled.
pub fn spawn(engine: &ExportEngine, tasks: &mut Tasks) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "tenantd".to_owned(), |h| h.trim().to_owned());
    let pid = std::process::id();
    for i in 0..engine.settings().workers {
        let name = format!("{host}/{pid}/export-{i}");
        let stop = tasks.stop_token().clone();
        tasks.spawn("export worker", work("export", engine.clone(), name, stop));
    }
    let stop = tasks.stop_token().clone();
    tasks.spawn("export sweeper", sweep(engine.clone(), stop));
}

async fn sweep(engine: ExportEngine, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match engine.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "export sweep: expired exports deleted"),
            Err(err) => {
                tracing::warn!(error = %err, "export sweep failed; retried at the next one");
            }
        }
    }
}
