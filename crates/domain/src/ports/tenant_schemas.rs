//! What the control plane records of the tenant schemas, and the durable rollouts that
//! bring them to a new version.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::tenant_schema::{
    ClaimedTenant, Rollout, RolloutCommand, RolloutId, RolloutTenant, TenantOutcome,
    TenantRolloutState, TenantSchema, Wave,
};
use crate::{Event, EventId, RepoError, TenantId};

use super::Lease;

/// A page of tenant schemas, in tenant creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaQuery {
    /// Only schemas below this version.
    pub behind_version: Option<u32>,
    /// At most this many.
    pub page_size: usize,
    /// After this tenant (the previous page's last).
    pub after: Option<TenantId>,
}

/// The version of every tenant schema, as provisioning and rollouts leave them. A tenant
/// has a record from the moment its schema is made until it is dropped.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantSchemaRepository: Send + Sync {
    /// Records that the tenant's schema is at `version` now (made, or found there),
    /// clearing an earlier failure.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn record(
        &self,
        tenant: TenantId,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<(), RepoError>;

    /// Forgets the tenant's schema (it was dropped); a no-op without a record.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn forget(&self, tenant: TenantId) -> Result<(), RepoError>;

    /// A page of schemas with their tenant's placement.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn list(&self, query: &SchemaQuery) -> Result<Vec<TenantSchema>, RepoError>;

    /// How many schemas are at each version, lowest version first.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn versions(&self) -> Result<Vec<(u32, u64)>, RepoError>;
}

/// How a worker's tenant ended, stored with the rollout's reaction to it.
#[derive(Debug, Clone, Copy)]
pub struct TenantFinish<'a> {
    /// The rollout.
    pub rollout: RolloutId,
    /// The tenant.
    pub tenant: TenantId,
    /// The worker's lease on the tenant's entry.
    pub lease: &'a Lease,
    /// What happened.
    pub outcome: &'a TenantOutcome,
    /// When.
    pub now: DateTime<Utc>,
    /// Events to append (the tenant's `TenantSchemaMigrated`).
    pub events: &'a [Event],
    /// The id of the `RolloutStateChanged` event, should the rollout change state.
    pub state_event: EventId,
}

/// Durable rollouts, their tenants, and the queue workers claim tenants from. (Not mocked:
/// the engine's tests run on the in-memory adapter, which passes the contract suite the
/// PostgreSQL adapter passes.)
#[async_trait]
pub trait RolloutRepository: Send + Sync {
    /// Stores a new rollout with its tenants: every tenant whose schema is recorded below
    /// the target, the canary wave first (as the spec chooses it), then the rest, each in
    /// creation order. A rollout without tenants ends SUCCEEDED at once. Writes one
    /// `RolloutStateChanged` event (id `state_event`) with the state it starts in.
    ///
    /// # Errors
    /// [`RepoError::Precondition`] (`ROLLOUT_IN_PROGRESS`) while another rollout is
    /// running or paused; [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn start(&self, rollout: &Rollout, state_event: EventId) -> Result<Rollout, RepoError>;

    /// The rollout.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn get(&self, id: RolloutId) -> Result<Option<Rollout>, RepoError>;

    /// The running or paused rollout, if any.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn active(&self) -> Result<Option<Rollout>, RepoError>;

    /// Rollouts, newest first, after `after` (the previous page's last).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn list(
        &self,
        page_size: usize,
        after: Option<RolloutId>,
    ) -> Result<Vec<Rollout>, RepoError>;

    /// The rollout's tenants in wave and position order, optionally in one state, after
    /// `after` (the previous page's last `(wave, position)`).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn tenants(
        &self,
        id: RolloutId,
        state: Option<TenantRolloutState>,
        page_size: usize,
        after: Option<(Wave, u32)>,
    ) -> Result<Vec<RolloutTenant>, RepoError>;

    /// Claims a tenant for `owner` until `now + lease_for`: first one whose worker was
    /// lost (RUNNING, lease expired, in any rollout), else the next pending one of the
    /// running rollout in the wave [`Rollout::claimable_wave`] allows, while fewer than
    /// its `max_parallel` tenants are in flight. Concurrent claimers never get the same
    /// tenant.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedTenant>, RepoError>;

    /// Extends a lease to `until`; `false` when it is no longer held.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn renew(
        &self,
        rollout: RolloutId,
        tenant: TenantId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Stores a tenant's outcome under the worker's lease, atomically with the tenant's
    /// schema record (its version, or its failure), the events, and the rollout's
    /// reaction ([`Rollout::after_finish`]). Returns the rollout after it.
    ///
    /// # Errors
    /// [`RepoError::LeaseLost`] when the lease is no longer held (nothing is stored);
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn finish(&self, finish: TenantFinish<'_>) -> Result<Rollout, RepoError>;

    /// Applies an operator's command ([`Rollout::command`]): the state change, the tenants
    /// it queues again or cancels, and a `RolloutStateChanged` event (id `state_event`),
    /// atomically. Returns the rollout after it.
    ///
    /// # Errors
    /// [`RepoError::NotFound`]; [`RepoError::Precondition`] (`ROLLOUT_STATE_INVALID`) when
    /// its state does not allow the command; [`RepoError::Unavailable`] /
    /// [`RepoError::Internal`].
    async fn command(
        &self,
        id: RolloutId,
        command: RolloutCommand,
        now: DateTime<Utc>,
        state_event: EventId,
    ) -> Result<Rollout, RepoError>;
}
