//! Purges in the background: `--purge-workers` workers per replica drive purges (claimed
//! with `FOR UPDATE SKIP LOCKED`, under a lease), and a sweeper every
//! `--purge-interval-ms` starts purging the deleted tenants whose retention ran out and
//! frees the slugs of tombstones older than `--purged-slug-reuse-days`.

use std::time::Duration;

use tenantd_application::PurgeEngine;
use tokio_util::sync::CancellationToken;

use crate::app::{Worker, work};
use crate::tasks::Tasks;

impl Worker for PurgeEngine {
    fn work_once(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, tenantd_domain::Error>> + Send {
        PurgeEngine::work_once(self, name)
    }

    fn idle(&self) -> impl Future<Output = ()> + Send {
        PurgeEngine::idle(self)
    }
}

/// Starts the workers and the sweeper on `tasks`; they stop once its token is cancelled.
pub fn spawn(engine: &PurgeEngine, interval: Duration, tasks: &mut Tasks) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "tenantd".to_owned(), |h| h.trim().to_owned());
    let pid = std::process::id();
    for i in 0..engine.settings().workers {
        let name = format!("{host}/{pid}/purge-{i}");
        let stop = tasks.stop_token().clone();
        tasks.spawn("purge worker", work("purge", engine.clone(), name, stop));
    }
    let stop = tasks.stop_token().clone();
    tasks.spawn("purge sweeper", sweep(engine.clone(), interval, stop));
}

async fn sweep(engine: PurgeEngine, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match engine.sweep().await {
            Ok(swept) if swept.started > 0 || swept.slugs_released > 0 => tracing::info!(
                started = swept.started,
                slugs_released = swept.slugs_released,
                "purge sweep: purges started for tenants past their retention"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purge sweep failed; retried at the next one"),
        }
    }
}
