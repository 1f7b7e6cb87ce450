//! Provisioning (DESIGN.md §4): the use cases behind ProvisioningService (get, cancel,
//! retry, and the watch, `watch.rs`) and the [`Engine`] whose workers drive runs step by
//! step.
//!
//! Every change of a run is stored with the tenant's status change and the events that
//! describe both, in one unit of work ([`RunWrite`]). Workers write under a lease; requests
//! (cancel, retry) write with the run's version, so a worker that loses a race to a request
//! finds its next write refused and stops.

mod engine;
mod steps;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    Clock, IdGenerator, ProvisioningRepository, RunWrite, TenantRepository,
};
use tenantd_domain::provisioning::{
    ProvisioningRun, RetryPolicy, RunState, StepError, StepKind, StepState,
};
use tenantd_domain::{Error, Event, EventId, EventKind, Reason, RepoError, TenantId, TenantStatus};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

pub use engine::Engine;
pub(crate) use engine::jitter;
pub(crate) use steps::store_error;
pub use steps::{INITIAL_KEY_PURPOSE, Providers, StepPorts};
pub use watch::RunWatch;

/// How often a request retries after losing a race to a worker's write.
const MAX_ATTEMPTS: usize = 5;

/// Tunables of the engine (their defaults are the server's configuration defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningSettings {
    /// Workers per replica.
    pub workers: usize,
    /// How long a claim lasts without renewal (renewed every third of it while working).
    pub lease: Duration,
    /// How often an idle worker looks for due work (a local create wakes one at once).
    pub poll_interval: Duration,
    /// Longest attempt of one step (or one undo).
    pub step_timeout: Duration,
    /// Attempts and backoff of a failing step.
    pub retry: RetryPolicy,
    /// How long a run may take before the sweeper cancels it.
    pub run_timeout: Duration,
    /// How often the sweeper looks for overdue runs.
    pub sweep_interval: Duration,
}

impl ProvisioningSettings {
    /// The run deadline as a span of time.
    pub fn run_timeout(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.run_timeout).unwrap_or(chrono::Duration::minutes(30))
    }
}

/// How the engine's work shows in metrics.
pub trait ProvisioningObserver: Send + Sync {
    /// An attempt of `step` ended with `result` (`succeeded`, `failed`, `timeout`).
    fn step_attempt(&self, step: &'static str, result: &'static str, duration: Duration);
    /// A run ended in `state`.
    fn run_finished(&self, state: RunState);
    /// How many runs are running, all replicas together.
    fn runs_in_flight(&self, running: u64);
    /// A watch began.
    fn watch_opened(&self);
    /// A watch ended (its last item was sent, or its consumer went away).
    fn watch_closed(&self);
}

/// In-process signals between the request side and the workers: a wake-up for idle
/// workers (new or cancelled work), a feed of tenants whose run changed (for watchers;
/// changes made by other replicas are seen by polling), and the process stopping.
#[derive(Debug, Clone)]
pub struct Signals {
    wake: Arc<Notify>,
    changes: broadcast::Sender<TenantId>,
    stopping: CancellationToken,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new(CancellationToken::new())
    }
}

impl Signals {
    /// Signals that see the process stop when `stopping` is cancelled.
    pub fn new(stopping: CancellationToken) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            changes: broadcast::channel(1024).0,
            stopping,
        }
    }

    /// Cancelled when the process stops: watches end with [`Reason::ShuttingDown`].
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Wakes one idle worker (or the next to wait).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when a worker is woken.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Announces that `tenant`'s run changed.
    pub fn changed(&self, tenant: TenantId) {
        // No receiver is fine: nobody watches.
        let _no_watchers = self.changes.send(tenant);
    }

    /// A feed of tenants whose run changed in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<TenantId> {
        self.changes.subscribe()
    }
}

/// The ProvisioningService use cases.
#[derive(Clone)]
pub struct ProvisioningService {
    runs: Arc<dyn ProvisioningRepository>,
    tenants: Arc<dyn TenantRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: ProvisioningSettings,
    signals: Signals,
    observer: Arc<dyn ProvisioningObserver>,
}

impl std::fmt::Debug for ProvisioningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ProvisioningService {
    /// A service over its ports.
    pub fn new(
        runs: Arc<dyn ProvisioningRepository>,
        tenants: Arc<dyn TenantRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: ProvisioningSettings,
        signals: Signals,
        observer: Arc<dyn ProvisioningObserver>,
    ) -> Self {
        Self {
            runs,
            tenants,
            clock,
            ids,
            settings,
            signals,
            observer,
        }
    }

    /// The tenant's latest run.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id; [`Error::NotFound`] when the tenant or
    /// its run does not exist; store failures.
    pub async fn get(&self, tenant_id: &str) -> Result<ProvisioningRun, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        self.latest(id).await
    }

    async fn latest(&self, id: TenantId) -> Result<ProvisioningRun, Error> {
        self.runs.latest(id).await?.ok_or_else(|| {
            Error::not_found(Reason::ProvisioningRunNotFound, "provisioning run", id)
        })
    }

    /// Cancels the tenant's running run: pending steps are cancelled, the tenant becomes
    /// CANCELLED, and the workers undo what was done, latest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed id or an overlong reason;
    /// [`Error::NotFound`]; [`Error::FailedPrecondition`] when the run is not running.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn cancel(&self, tenant_id: &str, reason: &str) -> Result<ProvisioningRun, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        let reason = reason.trim();
        if reason.chars().count() > 500 || reason.contains('\0') {
            return Err(Error::invalid(
                "reason",
                "must be at most 500 characters, without NUL",
            ));
        }
        let reason = if reason.is_empty() {
            "cancelled on request".to_owned()
        } else {
            reason.to_owned()
        };
        self.cancel_run(id, StepError::new("CANCELLED", reason))
            .await
    }

    /// Cancels every run past its deadline (the sweeper's round); returns how many.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cancel_overdue(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let overdue = self.runs.overdue(now, 100).await?;
        let mut cancelled = 0;
        for tenant in overdue {
            let cause = StepError::new(
                "DEADLINE_EXCEEDED",
                format!(
                    "the run did not finish within {}s",
                    self.settings.run_timeout.as_secs()
                ),
            );
            match self.cancel_run(tenant, cause).await {
                Ok(_) => cancelled += 1,
                // Another replica's sweeper, a worker or a request got there first.
                Err(Error::FailedPrecondition { .. } | Error::Aborted { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        if let Ok(running) = self.runs.running().await {
            self.observer.runs_in_flight(running);
        }
        Ok(cancelled)
    }

    async fn cancel_run(&self, id: TenantId, cause: StepError) -> Result<ProvisioningRun, Error> {
        let run = self
            .change(id, |run, now| {
                run.cancel(cause.clone(), now)?;
                Ok((
                    vec![EventKind::ProvisioningCancelled {
                        run_id: run.id.to_string(),
                        reason: cause.to_string(),
                    }],
                    Some((TenantStatus::Cancelled, cause.to_string())),
                ))
            })
            .await?;
        tracing::info!(tenant_id = %id, run_id = %run.id, reason = %cause.reason, "provisioning cancelled");
        self.observer.run_finished(RunState::Cancelled);
        Ok(run)
    }

    /// Restarts the tenant's failed or cancelled run from the first step not done; the
    /// tenant is PROVISIONING again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]; [`Error::NotFound`]; [`Error::FailedPrecondition`] when
    /// the run is neither failed nor cancelled, its undo is still in progress, or the tenant
    /// is deleted.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn retry(&self, tenant_id: &str) -> Result<ProvisioningRun, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        let timeout = self.settings.run_timeout();
        let run = self
            .change(id, |run, now| {
                run.retry(now, timeout)?;
                Ok((
                    Vec::new(),
                    Some((TenantStatus::Provisioning, String::new())),
                ))
            })
            .await?;
        tracing::info!(tenant_id = %id, run_id = %run.id, "provisioning retried");
        Ok(run)
    }

    /// Applies `change` to the tenant's latest run and stores it with the tenant's new
    /// status, an event per step whose state changed and the change's own events, retrying
    /// when a worker wrote first.
    async fn change(
        &self,
        id: TenantId,
        change: impl Fn(
            &mut ProvisioningRun,
            DateTime<Utc>,
        ) -> Result<(Vec<EventKind>, Option<(TenantStatus, String)>), Error>,
    ) -> Result<ProvisioningRun, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let mut run = self.latest(id).await?;
            let tenant = self
                .tenants
                .get(id)
                .await?
                .ok_or_else(|| Error::tenant_not_found(id))?;
            let expected = run.version;
            let before = run.clone();
            let (outcome, status) = change(&mut run, now)?;
            run.version = expected + 1;
            let mut kinds = transitions(&before, &run, None);
            kinds.extend(outcome);
            let mut changed = tenant.clone();
            let tenant_write = match status {
                Some((TenantStatus::Provisioning, _)) => {
                    changed.restart_provisioning(now)?;
                    Some((&changed, tenant.version()))
                }
                Some((outcome, reason)) => changed
                    .settle_provisioning(outcome, reason, now)?
                    .then_some((&changed, tenant.version())),
                None => None,
            };
            let events = events(&*self.ids, id, kinds, now);
            let write = RunWrite {
                run: &run,
                expected_version: expected,
                lease: None,
                renew_until: None,
                tenant: tenant_write,
                events: &events,
            };
            match self.runs.save(write).await {
                Ok(()) => {
                    self.signals.wake();
                    self.signals.changed(id);
                    return Ok(run);
                }
                Err(RepoError::VersionConflict) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::aborted(
            Reason::ConcurrentModification,
            "the run kept changing while the request was applied; retry",
        ))
    }
}

/// A step's transition as an event.
fn step_changed(
    run: &ProvisioningRun,
    step: StepKind,
    state: StepState,
    attempt: u32,
    error: Option<StepError>,
) -> EventKind {
    EventKind::ProvisioningStepChanged {
        run_id: run.id.to_string(),
        step,
        state,
        attempt,
        error,
    }
}

/// Events for the steps whose state differs between `before` and `after`, except `skip`
/// (whose event, with its error, the caller writes).
fn transitions(
    before: &ProvisioningRun,
    after: &ProvisioningRun,
    skip: Option<StepKind>,
) -> Vec<EventKind> {
    before
        .steps
        .iter()
        .zip(&after.steps)
        .filter(|(b, a)| b.state != a.state && Some(a.kind) != skip)
        .map(|(_, a)| step_changed(after, a.kind, a.state, a.attempts, None))
        .collect()
}

/// Events of `tenant`, in order, at `now`.
fn events(
    ids: &dyn IdGenerator,
    tenant: TenantId,
    kinds: Vec<EventKind>,
    now: DateTime<Utc>,
) -> Vec<Event> {
    kinds
        .into_iter()
        .map(|kind| Event {
            id: EventId(ids.new_v7()),
            subject: tenant.into(),
            occurred_at: now,
            kind,
        })
        .collect()
}
