//! WatchRollout as a use case: a rollout's view now, then every change (state, counts,
//! failures), ending after it is no longer running or paused. Changes made in this
//! process are signalled at once; other replicas' are seen by re-reading every poll
//! interval. Like WatchProvisioning, nothing is buffered and the stream ends with
//! [`Reason::ShuttingDown`] when the process stops.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tenantd_domain::tenant_schema::RolloutId;
use tenantd_domain::{Error, Reason};
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};

use crate::watching::may_have_changed;

use super::{MigrationObserver, MigrationService, RolloutView, parse_id};

/// A rollout's views as a watch sends them.
pub type RolloutWatch = Pin<Box<dyn Stream<Item = Result<RolloutView, Error>> + Send>>;

impl MigrationService {
    /// Follows a rollout: its view now, then every change, ending after a view in a final
    /// state (at once when it has ended already).
    ///
    /// # Errors
    /// As [`MigrationService::get`]. Items are errors only as the last item.
    pub async fn watch(&self, rollout_id: &str) -> Result<RolloutWatch, Error> {
        let id = parse_id(rollout_id)?;
        let changes = self.signals.subscribe();
        let first = self.view(id).await?;
        let period = self.settings.poll_interval;
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let watching = Watching {
            service: self.clone(),
            id,
            changes,
            poll,
            next: Next::First(first),
            _open: OpenWatch::new(self.observer.clone()),
        };
        Ok(Box::pin(futures::stream::unfold(watching, Watching::next)))
    }
}

enum Next {
    First(RolloutView),
    Change(RolloutView),
    End,
}

struct Watching {
    service: MigrationService,
    id: RolloutId,
    changes: broadcast::Receiver<RolloutId>,
    poll: Interval,
    next: Next,
    _open: OpenWatch,
}

impl Watching {
    async fn next(mut self) -> Option<(Result<RolloutView, Error>, Self)> {
        let last = match std::mem::replace(&mut self.next, Next::End) {
            Next::End => return None,
            Next::First(view) => return Some(self.send(view)),
            Next::Change(last) => last,
        };
        loop {
            if !self.wait().await {
                let stopping = Error::Unavailable {
                    reason: Reason::ShuttingDown,
                    cause: "tenantd is shutting down; watch again".into(),
                };
                return Some((Err(stopping), self));
            }
            match self.service.view(self.id).await {
                Ok(view) if view == last => {}
                Ok(view) => return Some(self.send(view)),
                Err(err) => return Some((Err(err), self)),
            }
        }
    }

    fn send(mut self, view: RolloutView) -> (Result<RolloutView, Error>, Self) {
        if view.rollout.state.is_active() {
            self.next = Next::Change(view.clone());
        }
        (Ok(view), self)
    }

    async fn wait(&mut self) -> bool {
        let stopping = self.service.signals.stopping().clone();
        may_have_changed(&stopping, &mut self.changes, &mut self.poll, &self.id).await
    }
}

struct OpenWatch(Arc<dyn MigrationObserver>);

impl OpenWatch {
    fn new(observer: Arc<dyn MigrationObserver>) -> Self {
        observer.watch_opened();
        Self(observer)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.watch_closed();
    }
}
