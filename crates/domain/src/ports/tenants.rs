//! Tenants and the plan catalogue: the durable store of tenants, their idempotency
//! records and the plans they subscribe to.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::provisioning::ProvisioningRun;
use crate::{ContactEmail, Event, Plan, PlanId, RepoError, Tenant, TenantId, TenantStatus};

/// A stored idempotency record: the request's fingerprint and the response it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The caller's request id.
    pub request_id: String,
    /// Hash of the request body, to tell a retry from a reuse with another body.
    pub fingerprint: String,
    /// The tenant as the original call returned it.
    pub response: Tenant,
    /// When the record may be forgotten.
    pub expires_at: DateTime<Utc>,
}

/// Which tenants to list: keyset pagination in id (= creation) order plus filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantQuery {
    /// Return tenants with an id strictly greater than this.
    pub after: Option<TenantId>,
    /// Most tenants to return.
    pub limit: usize,
    /// Only this status.
    pub status: Option<TenantStatus>,
    /// Only this plan.
    pub plan_id: Option<PlanId>,
    /// Only tenants carrying all these labels.
    pub labels: BTreeMap<String, String>,
    /// Only slugs with this prefix.
    pub slug_prefix: Option<String>,
    /// Only this contact email (compared normalized).
    pub contact_email: Option<ContactEmail>,
    /// Include DELETED and PURGING tenants (tombstones are never listed).
    pub include_deleted: bool,
}

/// Durable storage of tenants, their events and their idempotency records.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantRepository: Send + Sync {
    /// Stores a new tenant with its provisioning run, its events and, if given, its
    /// idempotency record, atomically.
    ///
    /// # Errors
    /// [`RepoError::SlugTaken`] if a non-purged tenant has the slug;
    /// [`RepoError::IdempotencyKeyTaken`] if another create committed the request id first;
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure. Nothing is
    /// stored on error.
    async fn create(
        &self,
        tenant: &Tenant,
        run: &ProvisioningRun,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError>;

    /// Reads a tenant (including a soft-deleted one), with its latest run's summary.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError>;

    /// Replaces a tenant whose stored version is `expected_version`, with its events,
    /// atomically.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] if the tenant does not exist; [`RepoError::VersionConflict`]
    /// if its stored version differs; [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError>;

    /// Lists tenants matching `query`, ordered by id, at most `query.limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError>;

    /// Finds the unexpired idempotency record of `request_id` as of `now`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError>;
}

/// The plan catalogue.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PlanRepository: Send + Sync {
    /// Every plan, ordered by id.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn list(&self) -> Result<Vec<Plan>, RepoError>;

    /// One plan.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn get(&self, id: &PlanId) -> Result<Option<Plan>, RepoError>;
}
