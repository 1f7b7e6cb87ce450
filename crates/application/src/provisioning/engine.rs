//! The engine: workers claim due runs under a lease and drive them — one step at a time,
//! retrying failed attempts with backoff, then compensating in reverse order when a run
//! fails or is cancelled. Every transition is stored with its events before the next
//! action, so a replica that dies mid-step leaves a run another replica resumes once the
//! lease expires.
//!
//! One file of a little over 500 lines, on purpose: claiming, driving, an attempt under a
//! renewed lease, a failure, an undo and the store of each transition are one state
//! machine, read best top to bottom.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use tenantd_domain::ports::{
    Clock, IdGenerator, Lease, ProvisioningRepository, RunWrite, TenantRepository,
};
use tenantd_domain::provisioning::{
    AfterFailure, ProvisioningRun, RunState, StepError, StepKind, StepState,
};
use tenantd_domain::{Error, EventKind, Reason, RepoError, Tenant, TenantStatus};

use super::steps::StepPorts;
use super::{
    ProvisioningObserver, ProvisioningSettings, Signals, events, step_changed, transitions,
};
use crate::lease::{Held, Stop, renewing};

/// How often a worker re-reads the tenant after a concurrent change to it.
const TENANT_RACE_ATTEMPTS: usize = 5;

/// The provisioning engine of one replica. Cheap to clone; every worker is a clone.
#[derive(Clone)]
pub struct Engine {
    runs: Arc<dyn ProvisioningRepository>,
    tenants: Arc<dyn TenantRepository>,
    steps: StepPorts,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: ProvisioningSettings,
    signals: Signals,
    observer: Arc<dyn ProvisioningObserver>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over its ports.
    #[expect(
        clippy::too_many_arguments,
        reason = "a composition root passes every port once"
    )]
    pub fn new(
        runs: Arc<dyn ProvisioningRepository>,
        tenants: Arc<dyn TenantRepository>,
        steps: StepPorts,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: ProvisioningSettings,
        signals: Signals,
        observer: Arc<dyn ProvisioningObserver>,
    ) -> Self {
        Self {
            runs,
            tenants,
            steps,
            clock,
            ids,
            settings,
            signals,
            observer,
        }
    }

    /// The engine's settings.
    pub fn settings(&self) -> &ProvisioningSettings {
        &self.settings
    }

    /// Claims one due run as `worker` and drives it as far as it can go now. Returns
    /// whether there was one.
    ///
    /// # Errors
    /// Store failures (the run is released and picked up again later).
    pub async fn work_once(&self, worker: &str) -> Result<bool, Error> {
        let Some(claimed) = self
            .runs
            .claim(worker, self.clock.now(), self.lease_for())
            .await?
        else {
            return Ok(false);
        };
        let mut run = claimed.run;
        let lease = claimed.lease;
        let tenant_id = run.tenant_id;
        let outcome = self.drive(&mut run, &lease).await;
        if let Err(err) = self.runs.release(run.id, &lease).await {
            // The lease lapses on its own.
            tracing::warn!(run_id = %run.id, error = %err, "cannot release a provisioning lease");
        }
        match outcome {
            Ok(()) => Ok(true),
            Err(Stop::Superseded) => {
                tracing::info!(tenant_id = %tenant_id, run_id = %run.id, "the run changed under this worker; it stops driving it");
                // What superseded us may have left work (an undo) for the next worker.
                self.signals.wake();
                Ok(true)
            }
            Err(Stop::Failed(err)) => Err(err),
        }
    }

    async fn drive(&self, run: &mut ProvisioningRun, lease: &Lease) -> Result<(), Stop> {
        loop {
            let now = self.clock.now();
            if let Some(step) = run.current() {
                let kind = step.kind;
                if step.state == StepState::Running {
                    // Claimed while RUNNING: the worker that started it stopped (its lease
                    // expired). The attempt counts; the step is idempotent, so the next one
                    // is safe whatever the lost attempt left.
                    let lost = StepError::new(
                        "WORKER_LOST",
                        "the worker running this step stopped before it finished",
                    );
                    self.observer
                        .step_attempt(kind.as_str(), "lost", Duration::ZERO);
                    self.fail(run, lease, kind, lost).await?;
                    continue;
                }
                if step.next_attempt_at.is_some_and(|due| due > now) {
                    return Ok(());
                }
                self.attempt(run, lease, kind).await?;
                continue;
            }
            if let Some(kind) = run.pending_compensation.first().copied() {
                if run.compensation_retry_at.is_some_and(|due| due > now) {
                    return Ok(());
                }
                self.undo(run, lease, kind).await?;
                continue;
            }
            return Ok(());
        }
    }

    /// Runs `work` while renewing `lease`: `Some` with its output, `None` when it timed
    /// out. When the lease is lost or the run changes under it (cancelled), the work is
    /// dropped — abandoned mid-way, which compensation covers — and the worker stops.
    async fn leased<T>(
        &self,
        run: &ProvisioningRun,
        lease: &Lease,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, Stop> {
        let runs = &self.runs;
        let renew = |until| runs.renew(run.id, run.version, lease, until);
        match renewing(
            "provisioning",
            &*self.clock,
            self.settings.lease,
            self.settings.step_timeout,
            work,
            renew,
        )
        .await
        {
            Held::Done(done) => Ok(Some(done)),
            Held::TimedOut => Ok(None),
            Held::Lost => Err(Stop::Superseded),
        }
    }

    /// Extends the lease; when it expires now. [`Stop::Superseded`] when it was lost or the
    /// run changed under it.
    async fn renew(&self, run: &ProvisioningRun, lease: &Lease) -> Result<DateTime<Utc>, Stop> {
        let until = self.clock.now() + self.lease_for();
        match self.runs.renew(run.id, run.version, lease, until).await {
            Ok(true) => Ok(until),
            Ok(false) => Err(Stop::Superseded),
            Err(err) => Err(Stop::Failed(err.into())),
        }
    }

    /// How long a lease runs from its claim or renewal.
    fn lease_for(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    async fn tenant(&self, run: &ProvisioningRun) -> Result<Tenant, Stop> {
        self.tenants.get(run.tenant_id).await?.ok_or_else(|| {
            Stop::Failed(Error::Internal(format!(
                "tenant {} of run {} is missing",
                run.tenant_id, run.id
            )))
        })
    }

    async fn attempt(
        &self,
        run: &mut ProvisioningRun,
        lease: &Lease,
        kind: StepKind,
    ) -> Result<(), Stop> {
        // The write that marks the step RUNNING renews the lease (see `store`): a store
        // that cannot be written now costs no attempt.
        let tenant = self.tenant(run).await?;
        if tenant.status() == TenantStatus::Deleted || tenant.status().is_purge() {
            // Deleting (or purging) a tenant cancels its provisioning: nothing more is made
            // for it, and what was made is undone.
            let reason = StepError::new(
                "TENANT_DELETED",
                "the tenant was deleted while it was being provisioned",
            );
            return self.cancel(run, lease, reason).await;
        }
        let mut next = run.clone();
        next.start(kind, self.clock.now())?;
        let attempt = next.step(kind).attempts;
        self.store(
            run,
            next,
            lease,
            vec![step_changed(run, kind, StepState::Running, attempt, None)],
            None,
        )
        .await?;
        tracing::info!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, attempt, "provisioning step started");

        let started = Instant::now();
        let outcome = self
            .leased(run, lease, self.steps.run(kind, &tenant, self.clock.now()))
            .await?;
        let elapsed = started.elapsed();
        match outcome {
            Some(Ok(extra)) => {
                self.observer
                    .step_attempt(kind.as_str(), "succeeded", elapsed);
                self.succeed(run, lease, kind, extra, tenant).await
            }
            Some(Err(error)) => {
                self.observer.step_attempt(kind.as_str(), "failed", elapsed);
                self.fail(run, lease, kind, error).await
            }
            None => {
                self.observer
                    .step_attempt(kind.as_str(), "timeout", elapsed);
                let error = StepError::new(
                    "STEP_TIMEOUT",
                    format!(
                        "the attempt did not finish within {}ms",
                        self.settings.step_timeout.as_millis()
                    ),
                );
                self.fail(run, lease, kind, error).await
            }
        }
    }

    async fn succeed(
        &self,
        run: &mut ProvisioningRun,
        lease: &Lease,
        kind: StepKind,
        extra: Vec<EventKind>,
        tenant: Tenant,
    ) -> Result<(), Stop> {
        let mut next = run.clone();
        next.succeed(kind, self.clock.now())?;
        let attempt = next.step(kind).attempts;
        let mut kinds = vec![step_changed(run, kind, StepState::Succeeded, attempt, None)];
        kinds.extend(extra);
        let finished = next.state == RunState::Succeeded;
        let settle = finished.then(|| (TenantStatus::Active, String::new()));
        // The tenant as the attempt read it: settling needs no read of its own (a change
        // since then is a conflict, and the retry reads it again).
        self.store_with(run, next, lease, kinds, settle, Some(tenant))
            .await?;
        tracing::info!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, "provisioning step succeeded");
        if finished {
            tracing::info!(tenant_id = %run.tenant_id, run_id = %run.id, "provisioning succeeded; the tenant is active");
            self.observer.run_finished(RunState::Succeeded);
        }
        Ok(())
    }

    async fn fail(
        &self,
        run: &mut ProvisioningRun,
        lease: &Lease,
        kind: StepKind,
        error: StepError,
    ) -> Result<(), Stop> {
        let mut next = run.clone();
        let jitter = jitter(&*self.ids);
        let after = next.fail(
            kind,
            error.clone(),
            &self.settings.retry,
            jitter,
            self.clock.now(),
        )?;
        let attempt = next.step(kind).attempts;
        match after {
            AfterFailure::RetryAt(at) => {
                let kinds = vec![step_changed(
                    run,
                    kind,
                    StepState::Pending,
                    attempt,
                    Some(error.clone()),
                )];
                self.store(run, next, lease, kinds, None).await?;
                tracing::warn!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, attempt, reason = %error.reason, retry_at = %at, "provisioning step failed; it will be retried");
            }
            AfterFailure::Compensate(undo) => {
                let mut kinds = vec![step_changed(
                    run,
                    kind,
                    StepState::Failed,
                    attempt,
                    Some(error.clone()),
                )];
                // The steps that will not run now.
                kinds.extend(transitions(run, &next, Some(kind)));
                // The dead letter: what failed, and why.
                kinds.push(EventKind::ProvisioningFailed {
                    run_id: run.id.to_string(),
                    failed_step: kind,
                    error: error.clone(),
                });
                let settle = Some((TenantStatus::Failed, error.to_string()));
                self.store(run, next, lease, kinds, settle).await?;
                tracing::error!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, attempt, reason = %error.reason, message = %error.message, undo = ?undo, "provisioning failed; compensating");
                self.observer.run_finished(RunState::Failed);
            }
        }
        Ok(())
    }

    async fn cancel(
        &self,
        run: &mut ProvisioningRun,
        lease: &Lease,
        reason: StepError,
    ) -> Result<(), Stop> {
        let mut next = run.clone();
        next.cancel(reason.clone(), self.clock.now())?;
        let mut kinds = transitions(run, &next, None);
        kinds.push(EventKind::ProvisioningCancelled {
            run_id: run.id.to_string(),
            reason: reason.to_string(),
        });
        let settle = Some((TenantStatus::Cancelled, reason.to_string()));
        self.store(run, next, lease, kinds, settle).await?;
        tracing::info!(tenant_id = %run.tenant_id, run_id = %run.id, reason = %reason.reason, "provisioning cancelled");
        self.observer.run_finished(RunState::Cancelled);
        Ok(())
    }

    async fn undo(
        &self,
        run: &mut ProvisioningRun,
        lease: &Lease,
        kind: StepKind,
    ) -> Result<(), Stop> {
        self.renew(run, lease).await?;
        let tenant = self.tenant(run).await?;
        let started = Instant::now();
        let outcome = self
            .leased(run, lease, self.steps.undo(kind, &tenant, self.clock.now()))
            .await?;
        let now = self.clock.now();
        let mut next = run.clone();
        match outcome {
            Some(Ok(())) => {
                next.compensated(kind, now)?;
                let attempt = next.step(kind).attempts;
                let kinds = vec![step_changed(
                    run,
                    kind,
                    StepState::Compensated,
                    attempt,
                    None,
                )];
                self.store(run, next, lease, kinds, None).await?;
                tracing::info!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, elapsed_ms = started.elapsed().as_millis(), "provisioning step compensated");
            }
            failed => {
                let error = match failed {
                    Some(Err(error)) => error,
                    _ => StepError::new("STEP_TIMEOUT", "the undo did not finish in time"),
                };
                let at = next.compensation_failed(
                    error.clone(),
                    &self.settings.retry,
                    jitter(&*self.ids),
                    now,
                )?;
                self.observer
                    .step_attempt(kind.as_str(), "undo_failed", started.elapsed());
                self.store(run, next, lease, Vec::new(), None).await?;
                tracing::warn!(tenant_id = %run.tenant_id, run_id = %run.id, step = %kind, reason = %error.reason, message = %error.message, retry_at = %at, "cannot undo a provisioning step; will try again");
            }
        }
        Ok(())
    }

    /// Stores `next` (a change of `run`) under the lease with the events and, if `settle`,
    /// the tenant's new status; on success `run` becomes `next`. A concurrent change of the
    /// tenant (not of the run) is retried with the tenant read again.
    async fn store(
        &self,
        run: &mut ProvisioningRun,
        next: ProvisioningRun,
        lease: &Lease,
        kinds: Vec<EventKind>,
        settle: Option<(TenantStatus, String)>,
    ) -> Result<(), Stop> {
        self.store_with(run, next, lease, kinds, settle, None).await
    }

    /// [`Self::store`], settling from `known` (the tenant as last read) on the first try.
    async fn store_with(
        &self,
        run: &mut ProvisioningRun,
        mut next: ProvisioningRun,
        lease: &Lease,
        kinds: Vec<EventKind>,
        settle: Option<(TenantStatus, String)>,
        mut known: Option<Tenant>,
    ) -> Result<(), Stop> {
        let expected = run.version;
        next.version = expected + 1;
        for _ in 0..TENANT_RACE_ATTEMPTS {
            let now = self.clock.now();
            let mut changed = None;
            let mut kinds = kinds.clone();
            if let Some((outcome, reason)) = &settle {
                let tenant = match known.take() {
                    Some(tenant) => tenant,
                    None => self.tenant(run).await?,
                };
                let before = tenant.version();
                let mut after = tenant;
                if after.settle_provisioning(*outcome, reason.clone(), now)? {
                    if *outcome == TenantStatus::Active && after.status() == TenantStatus::Active {
                        kinds.push(EventKind::TenantActivated {
                            plan_id: after.plan_id().to_string(),
                        });
                    }
                    changed = Some((after, before));
                }
            }
            let events = events(&*self.ids, run.tenant_id, kinds, now);
            let write = RunWrite {
                run: &next,
                expected_version: expected,
                lease: Some(lease),
                // Every write renews the lease: a run driven through several steps never
                // outlives it between them.
                renew_until: Some(now + self.lease_for()),
                tenant: changed.as_ref().map(|(t, v)| (t, *v)),
                events: &events,
            };
            match self.runs.save(write).await {
                Ok(()) => {
                    *run = next;
                    self.signals.changed(run.tenant_id);
                    return Ok(());
                }
                Err(RepoError::VersionConflict) if changed.is_some() => {
                    // The run or the tenant changed. If the run still is as we know it,
                    // it was the tenant (say, a rename): read it again and retry.
                    let stored = self.runs.latest(run.tenant_id).await?;
                    if stored.is_none_or(|s| s.id != run.id || s.version != expected) {
                        return Err(Stop::Superseded);
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(Stop::Failed(Error::aborted(
            Reason::ConcurrentModification,
            "the tenant kept changing while its provisioning outcome was stored",
        )))
    }

    /// One round of the deadline sweeper is [`super::ProvisioningService::cancel_overdue`];
    /// this waits until a worker should look for work again.
    pub async fn idle(&self) {
        tokio::select! {
            () = self.signals.woken() => {}
            () = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }
}

/// A jitter factor in [0, 1) from the random bits of a fresh UUIDv7.
pub(crate) fn jitter(ids: &dyn IdGenerator) -> f64 {
    let random = ids.new_v7().as_u128() & 0xFFFF_FFFF;
    #[expect(clippy::cast_precision_loss, reason = "32 bits fit an f64 exactly")]
    let fraction = random as f64 / 4_294_967_296.0;
    fraction
}
