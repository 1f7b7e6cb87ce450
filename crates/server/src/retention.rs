//! The retention sweeper: every replica trims published events and audit records past
//! their retention every `--retention-interval-ms` (the stores' deletes skip rows another
//! replica's delete holds). A round that stopped at its batch limit is followed by another
//! a moment later instead of after the interval, so a backlog drains without one long
//! transaction or one round that never ends.

use std::time::Duration;

use tenantd_application::RetentionService;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

/// The pause before the next round when the last one left rows past retention.
const CATCH_UP_AFTER: Duration = Duration::from_secs(1);

/// Starts the sweeper on `tasks`: it stops between rounds once the tasks' token is
/// cancelled.
pub fn spawn(retention: RetentionService, interval: Duration, tasks: &mut Tasks) {
    let stop = tasks.stop_token().clone();
    tasks.spawn("retention sweeper", sweep(retention, interval, stop));
}

async fn sweep(retention: RetentionService, interval: Duration, stop: CancellationToken) {
    loop {
        let delay = match retention.round().await {
            Ok(trimmed) if trimmed.iter().any(|t| t.more) => CATCH_UP_AFTER.min(interval),
            Ok(_) => interval,
            Err(err) => {
                tracing::warn!(error = %err, "retention round failed; retried at the next one");
                interval
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
