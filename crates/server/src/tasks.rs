//! The server's background tasks (provisioning workers, sweeper, relay, health prober,
//! TLS reloader and acceptor): spawned on one [`TaskTracker`], stopped by one
//! [`CancellationToken`]. Each task ends by itself once the token is cancelled — a worker
//! once the run it is driving can go no further for now, the relay after the batch in
//! flight, the sweeper after its round, the others at once — and [`Tasks::stop`] waits for
//! them until a deadline, then aborts what is left (naming it).

use std::future::Future;

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The running background tasks.
#[derive(Debug)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
    running: Vec<(&'static str, AbortHandle)>,
}

impl Tasks {
    /// No tasks yet; they will stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            tracker: TaskTracker::new(),
            running: Vec::new(),
        }
    }

    /// The token the tasks stop on.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Runs `task` (named for the log) until it ends; its handle, for a task that must be
    /// waited for on its own.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let handle = self.tracker.spawn(task);
        self.running.push((name, handle.abort_handle()));
        handle
    }

    /// Cancels the token and waits until `deadline` for every task to end; those still
    /// running then are aborted (a worker's transaction rolls back and its run resumes
    /// after the lease, here after a restart or in another replica).
    pub async fn stop(self, deadline: Instant) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        for (name, handle) in &self.running {
            if !handle.is_finished() {
                tracing::warn!(task = name, "still busy at the shutdown deadline; aborted");
                handle.abort();
            }
        }
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tasks_that_stop_end_and_a_task_past_the_deadline_is_aborted() {
        let stop = CancellationToken::new();
        let mut tasks = Tasks::new(stop.clone());
        let polite_done = Arc::new(AtomicBool::new(false));
        let done = polite_done.clone();
        let token = stop.clone();
        tasks.spawn("polite", async move {
            token.cancelled().await;
            done.store(true, Ordering::SeqCst);
        });
        let stubborn_done = Arc::new(AtomicBool::new(false));
        let done = stubborn_done.clone();
        tasks.spawn("stubborn", async move {
            tokio::time::sleep(Duration::from_hours(1)).await;
            done.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        tasks.stop(started + Duration::from_secs(5)).await;
        assert!(stop.is_cancelled());
        assert!(
            polite_done.load(Ordering::SeqCst),
            "the polite task ended by itself"
        );
        assert!(
            !stubborn_done.load(Ordering::SeqCst),
            "the stubborn one was aborted"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
