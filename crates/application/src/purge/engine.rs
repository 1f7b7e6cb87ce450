//! The purge engine: workers claim due purges under a lease and drive them one step at a
//! time, retrying a failing step with backoff until it succeeds. The start and the end of
//! every attempt are stored before the next action, so a replica that dies mid-step leaves
//! a purge another replica resumes once the lease expires (each step is idempotent: the
//! lost attempt counts, and the next one is safe whatever it left).

use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{Lease, PurgeWrite};
use tenantd_domain::provisioning::{StepError, StepKind};
use tenantd_domain::purge::{Purge, PurgeStepKind, PurgeStepState};
use tenantd_domain::{ApiKeyId, Error, Event, EventId, EventKind, RepoError, Tenant};

use super::{PurgeService, PurgeTargets};
use crate::lease::{Held, Stop, renewing};
use crate::provisioning::{jitter, store_error};

/// Keys revoked per page by the API_KEYS step.
const KEY_PAGE: usize = 100;

/// The purge engine of one replica. Cheap to clone; every worker is a clone.
#[derive(Clone)]
pub struct PurgeEngine {
    service: PurgeService,
    targets: PurgeTargets,
}

impl std::fmt::Debug for PurgeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeEngine")
            .field("settings", &self.service.settings)
            .finish_non_exhaustive()
    }
}

impl PurgeEngine {
    pub(super) fn new(service: PurgeService, targets: PurgeTargets) -> Self {
        Self { service, targets }
    }

    /// Claims one due purge as `worker` and drives it as far as it can go now. Returns
    /// whether there was one.
    ///
    /// # Errors
    /// Store failures (the purge is released and picked up again later).
    pub async fn work_once(&self, worker: &str) -> Result<bool, Error> {
        let service = &self.service;
        let Some(claimed) = service
            .purges
            .claim(worker, service.clock.now(), self.lease_for())
            .await?
        else {
            return Ok(false);
        };
        let mut purge = claimed.purge;
        let lease = claimed.lease;
        let outcome = self.drive(&mut purge, &lease).await;
        if let Err(err) = service.purges.release(purge.tenant_id, &lease).await {
            tracing::warn!(tenant_id = %purge.tenant_id, error = %err, "cannot release a purge lease");
        }
        match outcome {
            Ok(()) => Ok(true),
            Err(Stop::Superseded) => {
                tracing::info!(tenant_id = %purge.tenant_id, "the purge changed under this worker; it stops driving it");
                Ok(true)
            }
            Err(Stop::Failed(err)) => Err(err),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &super::PurgeSettings {
        &self.service.settings
    }

    /// One round of the sweeper (see [`PurgeService::sweep`]).
    ///
    /// # Errors
    /// Store failures (the next round tries again).
    pub async fn sweep(&self) -> Result<super::Swept, Error> {
        self.service.sweep().await
    }

    /// Waits until a worker should look for work again: a local start, or the poll
    /// interval.
    pub async fn idle(&self) {
        tokio::select! {
            () = self.service.wake.notified() => {}
            () = tokio::time::sleep(self.service.settings.poll_interval) => {}
        }
    }

    async fn drive(&self, purge: &mut Purge, lease: &Lease) -> Result<(), Stop> {
        loop {
            let Some(step) = purge.current() else {
                return Ok(());
            };
            let kind = step.kind;
            if step.state == PurgeStepState::Running {
                // Claimed while RUNNING: the worker that started it stopped.
                let lost = StepError::new(
                    "WORKER_LOST",
                    "the worker running this step stopped before it finished",
                );
                self.service.observer.step_attempt(
                    kind.as_str(),
                    "lost",
                    std::time::Duration::ZERO,
                );
                self.fail(purge, lease, kind, lost).await?;
                continue;
            }
            if step
                .next_attempt_at
                .is_some_and(|due| due > self.service.clock.now())
            {
                return Ok(());
            }
            self.attempt(purge, lease, kind).await?;
        }
    }

    async fn attempt(
        &self,
        purge: &mut Purge,
        lease: &Lease,
        kind: PurgeStepKind,
    ) -> Result<(), Stop> {
        let mut next = purge.clone();
        next.start(kind, self.service.clock.now())?;
        self.store(purge, next, lease, None, Vec::new()).await?;
        let attempt = purge.step(kind).attempts;
        tracing::info!(tenant_id = %purge.tenant_id, step = %kind, attempt, "purge step started");
        let tenant = self.tenant(purge).await?;
        let started = Instant::now();
        if kind == PurgeStepKind::Tombstone {
            return self.tombstone(purge, lease, tenant, started).await;
        }
        let outcome = self.leased(purge, lease, self.run(kind, &tenant)).await?;
        let elapsed = started.elapsed();
        let error = match outcome {
            Some(Ok(())) => {
                self.service
                    .observer
                    .step_attempt(kind.as_str(), "succeeded", elapsed);
                let mut next = purge.clone();
                next.succeed(kind, self.service.clock.now())?;
                self.store(purge, next, lease, None, Vec::new()).await?;
                tracing::info!(tenant_id = %purge.tenant_id, step = %kind, "purge step succeeded");
                return Ok(());
            }
            Some(Err(error)) => {
                self.service
                    .observer
                    .step_attempt(kind.as_str(), "failed", elapsed);
                error
            }
            None => {
                self.service
                    .observer
                    .step_attempt(kind.as_str(), "timeout", elapsed);
                StepError::new(
                    "STEP_TIMEOUT",
                    format!(
                        "the attempt did not finish within {}ms",
                        self.service.settings.step_timeout.as_millis()
                    ),
                )
            }
        };
        self.fail(purge, lease, kind, error).await
    }

    /// The last step: the tenant becomes its tombstone, the purge is done and
    /// `TenantPurged` is written, in one unit of work.
    async fn tombstone(
        &self,
        purge: &mut Purge,
        lease: &Lease,
        mut tenant: Tenant,
        started: Instant,
    ) -> Result<(), Stop> {
        let now = self.service.clock.now();
        let expected = tenant.version();
        tenant.tombstone(now)?;
        let mut next = purge.clone();
        next.succeed(PurgeStepKind::Tombstone, now)?;
        let purged = self.event(&tenant, EventKind::TenantPurged, now);
        match self
            .store(purge, next, lease, Some((&tenant, expected)), vec![purged])
            .await
        {
            Ok(()) => {
                self.service.observer.step_attempt(
                    PurgeStepKind::Tombstone.as_str(),
                    "succeeded",
                    started.elapsed(),
                );
                self.service.observer.purge_finished();
                tracing::info!(tenant_id = %purge.tenant_id, "purge finished; the tenant is a tombstone");
                Ok(())
            }
            Err(Stop::Failed(err)) => {
                let error = StepError::new(
                    "STORE_UNAVAILABLE",
                    format!("cannot store the tombstone: {err}"),
                );
                self.fail(purge, lease, PurgeStepKind::Tombstone, error)
                    .await
            }
            Err(stop) => Err(stop),
        }
    }

    /// Runs one step (all but the tombstone) for `tenant`.
    async fn run(&self, kind: PurgeStepKind, tenant: &Tenant) -> Result<(), StepError> {
        let now = self.service.clock.now();
        let steps = &self.targets.steps;
        match kind {
            PurgeStepKind::Database => {
                self.provisioning_settled(tenant).await?;
                steps.undo(StepKind::Database, tenant, now).await
            }
            PurgeStepKind::Dns => steps.undo(StepKind::Dns, tenant, now).await,
            PurgeStepKind::Billing => steps.undo(StepKind::Billing, tenant, now).await,
            PurgeStepKind::ApiKeys => self.revoke_keys(tenant, now).await,
            PurgeStepKind::Idempotency => self
                .service
                .purges
                .forget_requests(tenant.id())
                .await
                .map(drop)
                .map_err(|e| store_error("cannot delete the idempotency records", &e)),
            PurgeStepKind::Exports => self.delete_exports(tenant).await,
            PurgeStepKind::DataKey => self.destroy_data_key(tenant).await,
            PurgeStepKind::Tombstone => Ok(()),
        }
    }

    /// Destroys the tenant's data key (crypto-shredding); a key destroyed by an earlier
    /// attempt, or never made, leaves nothing to do.
    async fn destroy_data_key(&self, tenant: &Tenant) -> Result<(), StepError> {
        let destroyed = self
            .targets
            .data_keys
            .destroy(tenant.id())
            .await
            .map_err(|e| store_error("cannot destroy the data key", &e))?;
        if destroyed {
            tracing::info!(tenant_id = %tenant.id(), "the tenant's data key is destroyed");
        }
        Ok(())
    }

    /// Fails (to be retried) while the tenant's provisioning run has not settled: deleting
    /// or purging cancels it, and its undo must end before the purge takes the rest apart,
    /// or a step in flight could make again what the purge removed.
    async fn provisioning_settled(&self, tenant: &Tenant) -> Result<(), StepError> {
        let run = self
            .targets
            .runs
            .latest(tenant.id())
            .await
            .map_err(|e| store_error("cannot read the provisioning run", &e))?;
        match run {
            Some(run) if !run.is_settled() => Err(StepError::new(
                "PROVISIONING_IN_PROGRESS",
                "the tenant's provisioning run is being cancelled; the purge waits for it",
            )),
            _ => Ok(()),
        }
    }

    /// Deletes every export of the tenant, archive first.
    async fn delete_exports(&self, tenant: &Tenant) -> Result<(), StepError> {
        let exports = self
            .targets
            .exports
            .of_tenant(tenant.id())
            .await
            .map_err(|e| store_error("cannot list the exports", &e))?;
        for export in exports {
            if let Some(archive) = &export.archive {
                self.targets
                    .archives
                    .delete(&archive.name)
                    .await
                    .map_err(|e| store_error("cannot delete an export archive", &e))?;
            }
            self.targets
                .exports
                .delete(export.id)
                .await
                .map_err(|e| store_error("cannot delete an export", &e))?;
        }
        Ok(())
    }

    /// Destroys the unclaimed first key's sealed secret and revokes every key still active.
    async fn revoke_keys(&self, tenant: &Tenant, now: DateTime<Utc>) -> Result<(), StepError> {
        self.targets
            .steps
            .initial_keys
            .take_initial_secret(tenant.id())
            .await
            .map_err(|e| store_error("cannot delete the first key's secret", &e))?;
        let mut after: Option<ApiKeyId> = None;
        loop {
            let page = self
                .targets
                .steps
                .api_keys
                .list(tenant.id(), after, KEY_PAGE, None)
                .await
                .map_err(|e| store_error("cannot list the API keys", &e))?;
            for key in page.iter().filter(|k| k.revoked_at.is_none()) {
                let revoked = self.event(
                    tenant,
                    EventKind::ApiKeyRevoked {
                        key_id: key.id.to_string(),
                    },
                    now,
                );
                match self
                    .targets
                    .steps
                    .api_keys
                    .revoke(key.id, now, &[revoked])
                    .await
                {
                    Ok(_) | Err(RepoError::NotFound) => {}
                    Err(err) => return Err(store_error("cannot revoke an API key", &err)),
                }
            }
            if page.len() < KEY_PAGE {
                return Ok(());
            }
            after = page.last().map(|k| k.id);
        }
    }

    async fn fail(
        &self,
        purge: &mut Purge,
        lease: &Lease,
        kind: PurgeStepKind,
        error: StepError,
    ) -> Result<(), Stop> {
        let mut next = purge.clone();
        let jitter = jitter(&*self.service.ids);
        let at = next.fail(
            kind,
            error.clone(),
            &self.service.settings.retry,
            jitter,
            self.service.clock.now(),
        )?;
        self.store(purge, next, lease, None, Vec::new()).await?;
        tracing::warn!(tenant_id = %purge.tenant_id, step = %kind, attempt = purge.step(kind).attempts, reason = %error.reason, message = %error.message, retry_at = %at, "purge step failed; it will be retried");
        Ok(())
    }

    /// Stores `next` (a change of `purge`) under the lease, with the tenant's change and
    /// the events; on success `purge` becomes `next`.
    async fn store(
        &self,
        purge: &mut Purge,
        mut next: Purge,
        lease: &Lease,
        tenant: Option<(&Tenant, u64)>,
        events: Vec<Event>,
    ) -> Result<(), Stop> {
        let expected = purge.version;
        next.version = expected + 1;
        let write = PurgeWrite {
            purge: &next,
            expected_version: expected,
            lease,
            renew_until: self.service.clock.now() + self.lease_for(),
            tenant,
            events: &events,
        };
        self.service.purges.save(write).await?;
        *purge = next;
        Ok(())
    }

    /// Runs `work` while renewing `lease`: `Some` with its output, `None` when it timed
    /// out. When the lease is lost the work is dropped (the next attempt is safe, every
    /// step being idempotent) and the worker stops.
    async fn leased<T>(
        &self,
        purge: &Purge,
        lease: &Lease,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, Stop> {
        let settings = &self.service.settings;
        let purges = &self.service.purges;
        let renew = |until| purges.renew(purge.tenant_id, purge.version, lease, until);
        match renewing(
            "purge",
            &*self.service.clock,
            settings.lease,
            settings.step_timeout,
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

    fn lease_for(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.service.settings.lease)
            .unwrap_or(chrono::Duration::seconds(30))
    }

    async fn tenant(&self, purge: &Purge) -> Result<Tenant, Stop> {
        self.service
            .tenants
            .get(purge.tenant_id)
            .await?
            .ok_or_else(|| {
                Stop::Failed(Error::Internal(format!(
                    "tenant {} of a purge is missing",
                    purge.tenant_id
                )))
            })
    }

    fn event(&self, tenant: &Tenant, kind: EventKind, now: DateTime<Utc>) -> Event {
        Event {
            id: EventId(self.service.ids.new_v7()),
            subject: tenant.id().into(),
            occurred_at: now,
            kind,
        }
    }
}
