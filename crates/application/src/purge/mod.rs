//! Purges (the offboarding lifecycle's last part): the use cases behind PurgeTenant and
//! GetPurge, the sweeper that purges tenants whose retention ran out, and the
//! [`PurgeEngine`] whose workers drive purges step by step.
//!
//! A purge starts in one unit of work with the tenant's move to PURGING (so nothing can
//! restore, hold or change it from then on) and ends in one with its tombstone and the
//! `TenantPurged` event. In between, every step is stored as it starts and as it ends,
//! under the worker's lease, so a replica that dies mid-step leaves a purge another
//! replica resumes once the lease expires.

mod engine;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    Clock, DataKeyRepository, ExportArchives, ExportRepository, IdGenerator,
    ProvisioningRepository, PurgeRepository, TenantRepository,
};
use tenantd_domain::provisioning::RetryPolicy;
use tenantd_domain::purge::Purge;
use tenantd_domain::{Error, Event, EventId, EventKind, Reason, RepoError, Tenant, TenantId};
use tokio::sync::Notify;
use tracing::instrument;

pub use engine::PurgeEngine;

use crate::provisioning::StepPorts;

/// Who the sweeper's purges are requested by.
pub const RETENTION_REQUESTER: &str = "retention";

/// Tunables of purges (their defaults are the server's configuration defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeSettings {
    /// Workers per replica.
    pub workers: usize,
    /// How long a claim lasts without renewal (renewed every third of it while working).
    pub lease: Duration,
    /// How often an idle worker looks for due work (a local start wakes one at once).
    pub poll_interval: Duration,
    /// Longest attempt of one step.
    pub step_timeout: Duration,
    /// Backoff of a failing step (its attempt count only caps the delay's growth: a purge
    /// never gives up).
    pub retry: RetryPolicy,
    /// How long a tombstone keeps its slug from new tenants.
    pub slug_reuse: chrono::Duration,
    /// Most tenants one sweep starts purging.
    pub batch: usize,
}

/// How purges show in metrics.
pub trait PurgeObserver: Send + Sync {
    /// A purge started, asked for by an operator (`forced` or not) or by the sweeper.
    fn purge_started(&self, by_sweeper: bool, forced: bool);
    /// An attempt of `step` ended with `result` (`succeeded`, `failed`, `timeout`, `lost`).
    fn step_attempt(&self, step: &'static str, result: &'static str, duration: Duration);
    /// A purge finished: the tenant is a tombstone.
    fn purge_finished(&self);
    /// How many purges have not finished, all replicas together.
    fn purges_in_flight(&self, running: u64);
}

/// What a purge takes apart: what provisioning made (through the steps' ports), the
/// tenant's exports, and — to wait for it — its provisioning run.
#[derive(Clone)]
pub struct PurgeTargets {
    /// The provisioning steps' ports (their undo is the purge's work).
    pub steps: StepPorts,
    /// Provisioning runs: a purge waits until the tenant's has settled (cancelled and
    /// undone), so nothing is made again behind it.
    pub runs: Arc<dyn ProvisioningRepository>,
    /// The tenant's exports.
    pub exports: Arc<dyn ExportRepository>,
    /// Their archives.
    pub archives: Arc<dyn ExportArchives>,
    /// The tenants' data keys (DATA_KEY destroys the tenant's).
    pub data_keys: Arc<dyn DataKeyRepository>,
}

impl std::fmt::Debug for PurgeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeTargets").finish_non_exhaustive()
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Purges started.
    pub started: usize,
    /// Slugs of old tombstones freed.
    pub slugs_released: u64,
}

/// Why a purge did not start.
enum Refused {
    /// The tenant's lifecycle does not allow it.
    Rule(Error),
    /// The store refused or failed.
    Store(RepoError),
}

/// The purge use cases.
#[derive(Clone)]
pub struct PurgeService {
    purges: Arc<dyn PurgeRepository>,
    tenants: Arc<dyn TenantRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: PurgeSettings,
    observer: Arc<dyn PurgeObserver>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for PurgeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PurgeService {
    /// A service over its ports.
    pub fn new(
        purges: Arc<dyn PurgeRepository>,
        tenants: Arc<dyn TenantRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: PurgeSettings,
        observer: Arc<dyn PurgeObserver>,
    ) -> Self {
        Self {
            purges,
            tenants,
            clock,
            ids,
            settings,
            observer,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The engine whose workers drive purges over `targets`, on `purges` and `tenants`
    /// (background work's stores); it sweeps too, and wakes when this service starts a
    /// purge.
    pub fn engine(
        &self,
        purges: Arc<dyn PurgeRepository>,
        tenants: Arc<dyn TenantRepository>,
        targets: PurgeTargets,
    ) -> PurgeEngine {
        let service = Self {
            purges,
            tenants,
            ..self.clone()
        };
        PurgeEngine::new(service, targets)
    }

    /// The settings.
    pub fn settings(&self) -> &PurgeSettings {
        &self.settings
    }

    /// Starts purging a DELETED tenant now (PurgeTenant), for `requested_by` (the
    /// caller's principal). A tenant whose purge started
    /// already answers with it (a repeated request is idempotent; its etag is not
    /// checked, since the purge itself moves the version).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Aborted`] for a stale etag or a lost race;
    /// [`Error::FailedPrecondition`] when the tenant is not DELETED (`INVALID_TRANSITION`),
    /// is held (`LEGAL_HOLD`), or its retention runs on without `force`
    /// (`PURGE_TIME_NOT_REACHED`).
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn purge(
        &self,
        requested_by: &str,
        tenant_id: &str,
        etag: &str,
        force: bool,
    ) -> Result<(Tenant, Purge), Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        let tenant = self
            .tenants
            .get(id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        if tenant.status().is_purge() {
            let purge = self.get_purge(id).await?;
            return Ok((tenant, purge));
        }
        tenant.check_etag(etag)?;
        match self.start(tenant, force, requested_by).await {
            Ok(started) => Ok(started),
            Err(Refused::Rule(err)) => Err(err),
            Err(Refused::Store(RepoError::VersionConflict)) => Err(Error::aborted(
                Reason::ConcurrentModification,
                "the tenant changed while its purge was starting; read it again",
            )),
            Err(Refused::Store(RepoError::NotFound)) => Err(Error::tenant_not_found(id)),
            Err(Refused::Store(err)) => Err(err.into()),
        }
    }

    /// A tenant's purge (GetPurge).
    ///
    /// # Errors
    /// [`Error::NotFound`] (`PURGE_NOT_FOUND`) when its purge has not started.
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn get(&self, tenant_id: &str) -> Result<Purge, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        self.get_purge(id).await
    }

    async fn get_purge(&self, id: TenantId) -> Result<Purge, Error> {
        self.purges
            .get(id)
            .await?
            .ok_or_else(|| Error::not_found(Reason::PurgeNotFound, "purge", id))
    }

    /// One round of the sweeper: starts purging the tenants whose retention ran out (at
    /// most a batch; each at most once, whichever replica gets there first) and frees the
    /// slugs of tombstones older than the reuse window.
    ///
    /// # Errors
    /// Store failures (the next round tries again).
    pub async fn sweep(&self) -> Result<Swept, Error> {
        let now = self.clock.now();
        let mut swept = Swept::default();
        for id in self.purges.purgeable(now, self.settings.batch).await? {
            let Some(tenant) = self.tenants.get(id).await? else {
                continue;
            };
            match self.start(tenant, false, RETENTION_REQUESTER).await {
                Ok(_) => swept.started += 1,
                // Another replica started it, or it was held or restored in between.
                Err(Refused::Rule(_) | Refused::Store(RepoError::VersionConflict)) => {}
                Err(Refused::Store(err)) => return Err(err.into()),
            }
        }
        swept.slugs_released = self
            .purges
            .release_slugs(now - self.settings.slug_reuse)
            .await?;
        if let Ok(running) = self.purges.running().await {
            self.observer.purges_in_flight(running);
        }
        Ok(swept)
    }

    /// Moves `tenant` to PURGING with its new purge.
    async fn start(
        &self,
        mut tenant: Tenant,
        force: bool,
        requested_by: &str,
    ) -> Result<(Tenant, Purge), Refused> {
        let now = self.clock.now();
        let expected = tenant.version();
        tenant.begin_purge(force, now).map_err(Refused::Rule)?;
        let purge = Purge::new(tenant.id(), force, requested_by.to_owned(), now);
        let event = self.event(
            tenant.id(),
            EventKind::TenantPurgeStarted { forced: force },
            now,
        );
        self.purges
            .start(&tenant, expected, &purge, &[event])
            .await
            .map_err(Refused::Store)?;
        tracing::info!(tenant_id = %tenant.id(), forced = force, requested_by, "purge started");
        self.observer
            .purge_started(requested_by == RETENTION_REQUESTER, force);
        self.wake.notify_one();
        Ok((tenant, purge))
    }

    fn event(&self, tenant: TenantId, kind: EventKind, now: DateTime<Utc>) -> Event {
        Event {
            id: EventId(self.ids.new_v7()),
            subject: tenant.into(),
            occurred_at: now,
            kind,
        }
    }
}
