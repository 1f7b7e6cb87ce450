//! Durable purges and the leases workers claim them under (the same fencing as
//! provisioning runs: every worker write carries the lease it was claimed with).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::Lease;
use crate::purge::Purge;
use crate::{Event, RepoError, Tenant, TenantId};

/// A purge a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedPurge {
    /// The purge as stored when claimed.
    pub purge: Purge,
    /// The worker's lease on it.
    pub lease: Lease,
}

/// A worker's change to a purge, written atomically with the tenant's change (the
/// tombstone) and the events describing both.
#[derive(Debug, Clone, Copy)]
pub struct PurgeWrite<'a> {
    /// The purge as it is to be stored (its `version` is the stored one plus one).
    pub purge: &'a Purge,
    /// The stored version the change was made from.
    pub expected_version: u64,
    /// The writer's lease.
    pub lease: &'a Lease,
    /// The lease runs until then from this write on.
    pub renew_until: DateTime<Utc>,
    /// The tenant, changed, with the stored version it was changed from.
    pub tenant: Option<(&'a Tenant, u64)>,
    /// Events to append.
    pub events: &'a [Event],
}

/// Durable purges, the queue workers claim them from, and what a purge deletes from the
/// control plane's own tables. (Not mocked: the service's tests run on the in-memory
/// adapter, which passes the same contract suite as PostgreSQL.)
#[async_trait]
pub trait PurgeRepository: Send + Sync {
    /// Starts a purge: stores the tenant (now PURGING) if its stored version is
    /// `expected_version`, the new purge and the events, atomically.
    ///
    /// # Errors
    /// [`RepoError::VersionConflict`] when the tenant changed (or its purge started) in
    /// between; [`RepoError::NotFound`]; [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn start(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        purge: &Purge,
        events: &[Event],
    ) -> Result<(), RepoError>;

    /// The tenant's purge, if it started.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn get(&self, tenant: TenantId) -> Result<Option<Purge>, RepoError>;

    /// Claims the purge due longest ago (due at or before `now`, no live lease on it) for
    /// `owner` until `now + lease_for`. Concurrent claimers never get the same purge.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedPurge>, RepoError>;

    /// Extends a lease to `until` while the purge is still at `version`; `false` when the
    /// lease is no longer held (the worker must stop).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn renew(
        &self,
        tenant: TenantId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Gives a lease up (a no-op when it is no longer held).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn release(&self, tenant: TenantId, lease: &Lease) -> Result<(), RepoError>;

    /// Stores a worker's change to a purge with the tenant's change and the events,
    /// atomically.
    ///
    /// # Errors
    /// [`RepoError::LeaseLost`] when the lease is no longer held;
    /// [`RepoError::VersionConflict`] when the purge's or the tenant's stored version
    /// differs; [`RepoError::Unavailable`] / [`RepoError::Internal`]. Nothing is stored on
    /// error.
    async fn save(&self, write: PurgeWrite<'_>) -> Result<(), RepoError>;

    /// DELETED tenants not under legal hold whose purge time is at or before `now`, oldest
    /// purge time first, at most `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn purgeable(&self, now: DateTime<Utc>, limit: usize)
    -> Result<Vec<TenantId>, RepoError>;

    /// Deletes the tenant's CreateTenant idempotency records; returns how many.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn forget_requests(&self, tenant: TenantId) -> Result<u64, RepoError>;

    /// Frees the slugs of tombstones purged before `before` for new tenants; returns how
    /// many.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn release_slugs(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;

    /// How many purges have not finished.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn running(&self) -> Result<u64, RepoError>;
}
