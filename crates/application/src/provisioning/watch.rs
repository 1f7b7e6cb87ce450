//! WatchProvisioning as a use case: a stream of a tenant's run — its state now, then every
//! change — that ends once the run is settled.
//!
//! Changes made in this process are signalled at once ([`Signals::changed`]); changes
//! other replicas make are seen by re-reading every poll interval. Nothing is buffered:
//! the stream reads the run when its consumer asks for the next item, so a consumer that
//! reads slowly holds up only its own watch and then gets the latest state. The stream
//! ends with [`Reason::ShuttingDown`] when the process stops, and with the store's error
//! when a read fails.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tenantd_domain::provisioning::ProvisioningRun;
use tenantd_domain::{Error, Reason, TenantId};
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};

use crate::watching::may_have_changed;

use super::{ProvisioningObserver, ProvisioningService};

/// A run's states as a watch sends them (see the module docs).
pub type RunWatch = Pin<Box<dyn Stream<Item = Result<ProvisioningRun, Error>> + Send>>;

impl ProvisioningService {
    /// Follows the tenant's latest run: its state now, then every change, ending after a
    /// settled state (at once when the run is settled already).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id; [`Error::NotFound`] when the tenant or
    /// its run does not exist; store failures. Items are errors only as the last item: the
    /// store failing later, or [`Reason::ShuttingDown`].
    pub async fn watch(&self, tenant_id: &str) -> Result<RunWatch, Error> {
        let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
        // Subscribe before the first read, so no change between the two is missed.
        let changes = self.signals.subscribe();
        let first = self.latest(tenant).await?;
        let period = self.settings.poll_interval;
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // One ticker for the whole watch: signals about other tenants never postpone it.
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let watching = Watching {
            service: self.clone(),
            tenant,
            changes,
            poll,
            next: Next::First(first),
            _open: OpenWatch::new(self.observer.clone()),
        };
        Ok(Box::pin(futures::stream::unfold(watching, Watching::next)))
    }
}

/// What a watch sends next.
enum Next {
    /// The state read when the watch began.
    First(ProvisioningRun),
    /// A state that differs from this one.
    Change(ProvisioningRun),
    /// Nothing: the last item was sent.
    End,
}

/// A watch between two items.
struct Watching {
    service: ProvisioningService,
    tenant: TenantId,
    changes: broadcast::Receiver<TenantId>,
    poll: Interval,
    next: Next,
    _open: OpenWatch,
}

impl Watching {
    async fn next(mut self) -> Option<(Result<ProvisioningRun, Error>, Self)> {
        let last = match std::mem::replace(&mut self.next, Next::End) {
            Next::End => return None,
            Next::First(run) => return Some(self.send(run)),
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
            match self.service.latest(self.tenant).await {
                Ok(run) if run.id == last.id && run.version == last.version => {}
                Ok(run) => return Some(self.send(run)),
                Err(err) => return Some((Err(err), self)),
            }
        }
    }

    /// Sends `run`; the watch ends after it when it is settled.
    fn send(mut self, run: ProvisioningRun) -> (Result<ProvisioningRun, Error>, Self) {
        if !run.is_settled() {
            self.next = Next::Change(run.clone());
        }
        (Ok(run), self)
    }

    /// Waits until the run may have changed: a signal about this tenant (or a lagged feed,
    /// which may have held one) or the poll interval. `false` when the process stops.
    async fn wait(&mut self) -> bool {
        let stopping = self.service.signals.stopping().clone();
        may_have_changed(&stopping, &mut self.changes, &mut self.poll, &self.tenant).await
    }
}

/// Counts a watch as open for as long as it lives.
struct OpenWatch(Arc<dyn ProvisioningObserver>);

impl OpenWatch {
    fn new(observer: Arc<dyn ProvisioningObserver>) -> Self {
        observer.watch_opened();
        Self(observer)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.watch_closed();
    }
}
