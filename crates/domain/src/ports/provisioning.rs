//! Durable provisioning runs and the leases workers claim them under.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::provisioning::{ProvisioningRun, RunId};
use crate::{Event, RepoError, Tenant, TenantId};

/// A worker's exclusive, expiring claim on a provisioning run. Every write a worker makes
/// carries it; a write under a lease that was taken over is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per claim: the fencing token.
    pub token: Uuid,
    /// Who holds it (replica and worker), for operators.
    pub owner: String,
    /// When it lapses unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// A run a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// The run as stored when claimed.
    pub run: ProvisioningRun,
    /// The worker's lease on it.
    pub lease: Lease,
}

/// A change to a run, written atomically with the tenant's status change (if any) and the
/// events describing both.
#[derive(Debug, Clone, Copy)]
pub struct RunWrite<'a> {
    /// The run as it is to be stored (its `version` is the stored one plus one).
    pub run: &'a ProvisioningRun,
    /// The stored version the change was made from.
    pub expected_version: u64,
    /// The writer's lease, for a worker; `None` for a request (cancel, retry).
    pub lease: Option<&'a Lease>,
    /// With a lease: it runs until then from this write on (the write renews it, so a
    /// worker needs no renewal of its own before a step).
    pub renew_until: Option<DateTime<Utc>>,
    /// The tenant, changed, with the stored version it was changed from.
    pub tenant: Option<(&'a Tenant, u64)>,
    /// Events to append.
    pub events: &'a [Event],
}

/// Durable provisioning runs and the queue workers claim them from. (Not mocked: its
/// engine tests run on the in-memory adapter, which passes the same contract suite as
/// PostgreSQL.)
#[async_trait]
pub trait ProvisioningRepository: Send + Sync {
    /// The tenant's latest run.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError>;

    /// Claims the run due longest ago (due at or before `now`, no live lease on it) for
    /// `owner` until `now + lease_for`. Concurrent claimers never get the same run.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError>;

    /// Extends a lease to `until` while the run is still at `version`. Returns `false` when
    /// the lease is no longer held or the run changed under it (a request cancelled it):
    /// either way the worker must stop what it is doing.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn renew(
        &self,
        run: RunId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Gives a lease up (a no-op when it is no longer held).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError>;

    /// Stores a change to a run with the tenant's change and the events, atomically.
    ///
    /// # Errors
    /// [`RepoError::LeaseLost`] when `write.lease` is no longer held;
    /// [`RepoError::VersionConflict`] when the run's or the tenant's stored version differs;
    /// [`RepoError::NotFound`]; [`RepoError::Unavailable`] / [`RepoError::Internal`].
    /// Nothing is stored on error.
    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError>;

    /// Tenants whose running run's deadline is before `now`, at most `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError>;

    /// How many runs are running.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn running(&self) -> Result<u64, RepoError>;
}
