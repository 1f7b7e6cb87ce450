//! What the watches (WatchProvisioning, WatchRollout) share: waiting until their subject may
//! have changed.

use tokio::sync::broadcast;
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;

/// Waits until the subject `key` may have changed: a signal about it on `changes` (or a
/// lagged feed, which may have held one), or the next tick of `poll` (for changes other
/// replicas make). `false` when `stopping` is cancelled first.
pub(crate) async fn may_have_changed<K: PartialEq + Clone>(
    stopping: &CancellationToken,
    changes: &mut broadcast::Receiver<K>,
    poll: &mut Interval,
    key: &K,
) -> bool {
    loop {
        tokio::select! {
            () = stopping.cancelled() => return false,
            signal = changes.recv() => match signal {
                Ok(other) if other != *key => {}
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return true,
                // No sender left: only polling can tell.
                Err(broadcast::error::RecvError::Closed) => {
                    poll.tick().await;
                    return true;
                }
            },
            _ = poll.tick() => return true,
        }
    }
}
