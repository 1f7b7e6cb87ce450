//! Port traits: what the use cases need from the outside world. Adapters implement them
//! (in memory, PostgreSQL, Redis, Kafka); use-case tests mock them.
//!
//! Unit of work: a change to a tenant, the events describing it and (on create) the
//! idempotency record commit together or not at all, because the repository methods that
//! change a tenant take those along.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api_key::SECRET_BYTES;
use crate::provisioning::{ProvisioningRun, RunId, StepError};
use crate::{
    ApiKey, ApiKeyId, AuditQuery, AuditRecord, ContactEmail, DisplayName, Event, EventId, Plan,
    PlanId, RepoError, Slug, Tenant, TenantId, TenantStatus,
};

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
    /// Include DELETED tenants.
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

/// The lifecycle event log (the outbox), read side. Events are appended by the
/// repositories in the same unit of work as the change.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events in id order after `after`, only of `tenant` if given, at most `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure.
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError>;
}

/// The current time (a port so tests can fix it).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// Fresh ids (a port so tests can predict them).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait IdGenerator: Send + Sync {
    /// A new UUIDv7, greater than every one this generator returned before.
    fn new_v7(&self) -> Uuid;
}

/// Tenant API keys (metadata and secret hashes; never secrets).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ApiKeyRepository: Send + Sync {
    /// Stores `key` with its events, atomically refusing it when its tenant already has
    /// `max_active` keys active at `now` (so concurrent creates cannot exceed a quota).
    ///
    /// # Errors
    /// [`RepoError::LimitReached`] at the quota; [`RepoError::NotFound`] if the tenant does
    /// not exist; [`RepoError::Precondition`] if it is deleted (checked under the same lock
    /// as the quota); [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError>;

    /// One key.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError>;

    /// A tenant's keys in id order after `after`, at most `limit`; only those active at
    /// `active_at` when it is given.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError>;

    /// Marks a key revoked at `at` with its events, atomically, unless it already is (then
    /// nothing is written). Returns the key's revocation time as stored.
    ///
    /// # Errors
    /// [`RepoError::NotFound`]; [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError>;

    /// Records a successful verification at `at`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError>;
}

/// Cryptographically secure randomness for secrets.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SecretGenerator: Send + Sync {
    /// Fresh random bytes for an API key secret.
    fn api_key_secret(&self) -> [u8; SECRET_BYTES];
}

/// The audit log: appended in batches by a write-behind writer, read by operators.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends records (ids are unique; appending one twice stores it once).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]; nothing is stored on error.
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError>;

    /// Records matching `query`, newest first.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError>;
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The envelope names a key the ring does not hold.
    #[error("the envelope was sealed with unknown key {0:?}")]
    UnknownKey(String),
    /// The envelope is not in the expected format.
    #[error("the envelope is malformed")]
    Malformed,
    /// The ciphertext, its tenant or its field does not authenticate: tampering, a copy
    /// from another row, or a wrong key.
    #[error("the envelope does not authenticate")]
    Authentication,
}

/// A sealed contact email and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEmail {
    /// The envelope: version, key id, nonce, ciphertext.
    pub envelope: Vec<u8>,
    /// The sealing key's id.
    pub key_id: String,
}

/// Encryption of contact emails at rest, bound to their tenant, with a blind index for
/// exact-match lookups.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait EmailCipher: Send + Sync {
    /// Seals `email` so it opens only for `tenant`, with the ring's primary key.
    fn seal(&self, tenant: TenantId, email: &ContactEmail) -> SealedEmail;

    /// Opens an envelope sealed for `tenant`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope is malformed, names an unknown key, or does not
    /// authenticate for this tenant.
    fn open(&self, tenant: TenantId, envelope: &[u8]) -> Result<ContactEmail, CipherError>;

    /// The blind index of `email`: a keyed hash of its normalized form.
    fn blind_index(&self, email: &ContactEmail) -> [u8; 32];

    /// The id of the key new envelopes are sealed with.
    fn primary_key_id(&self) -> String;
}

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

/// What a provisioning step knows about the tenant it provisions.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisioningTarget {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its slug (DNS names derive from it).
    pub slug: Slug,
    /// Its display name.
    pub display_name: DisplayName,
    /// Its plan.
    pub plan_id: PlanId,
    /// Its contact (the tenant's first admin user).
    pub contact_email: ContactEmail,
}

/// The DATABASE step's provider: the tenant's own schema, migrated and seeded.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantDatabases: Send + Sync {
    /// Creates and migrates the tenant's schema; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Drops the tenant's schema and everything in it; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError>;
}

/// The DNS step's provider.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Publishes the tenant's records; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason (e.g. a name held by another tenant).
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Withdraws every record of the tenant; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError>;
}

/// The BILLING step's provider.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BillingProvider: Send + Sync {
    /// Makes sure the tenant is a customer with an active subscription to its plan;
    /// idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Cancels the tenant's subscription; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError>;
}

/// The sealed secret of a tenant's first admin key, kept until claimed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKey {
    /// The key.
    pub key_id: ApiKeyId,
    /// The sealed secret; `None` once claimed.
    pub sealed_secret: Option<Vec<u8>>,
}

/// What storing a first admin key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialKeyOutcome {
    /// The key was stored.
    Created,
    /// The tenant already has an active first key (an earlier attempt made it).
    AlreadyPresent,
}

/// The CREDENTIALS step's store: first admin keys and their sealed secrets.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait InitialKeyStore: Send + Sync {
    /// Stores `key` as the tenant's first admin key, with its sealed secret and events,
    /// atomically, unless the tenant already has an active one (then nothing is written).
    /// A revoked earlier first key (compensated by a failed run) is replaced.
    ///
    /// # Errors
    /// [`RepoError::LimitReached`] at the plan's key quota; [`RepoError::NotFound`];
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn create_initial(
        &self,
        key: &ApiKey,
        sealed_secret: &[u8],
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<InitialKeyOutcome, RepoError>;

    /// The tenant's first admin key, if any.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn initial(&self, tenant: TenantId) -> Result<Option<InitialKey>, RepoError>;

    /// Takes the sealed secret of the tenant's first key, destroying the stored copy in the
    /// same step, so exactly one caller ever gets it. `None` when there is none (any more).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn take_initial_secret(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(ApiKeyId, Vec<u8>)>, RepoError>;
}

/// Sealing of small secrets at rest (AES-GCM), bound to their tenant and purpose.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SecretSealer: Send + Sync {
    /// Seals `secret` so it opens only for `tenant` and `purpose`.
    fn seal_secret(&self, tenant: TenantId, purpose: &'static str, secret: &[u8]) -> Vec<u8>;

    /// Opens an envelope sealed for `tenant` and `purpose`.
    ///
    /// # Errors
    /// [`CipherError`] when the envelope does not open.
    fn open_secret(
        &self,
        tenant: TenantId,
        purpose: &'static str,
        envelope: &[u8],
    ) -> Result<Vec<u8>, CipherError>;
}

/// A request rate: tokens refill at `per_second`, up to `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second (at least 1).
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// A rate limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Over the limit: a request would be admitted after this long.
    Denied {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
}

/// Token buckets keyed by principal, shared by every replica when the adapter can.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one token from `key`'s bucket of `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when the limiter cannot decide (the caller fails open).
    async fn admit(&self, key: &str, limit: RateLimit) -> Result<Admission, RepoError>;
}

/// How far behind the event relay is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Events not yet published.
    pub events: u64,
    /// When the oldest of them was written.
    pub oldest: Option<DateTime<Utc>>,
}

/// Unpublished events claimed by one relay: no other relay publishes them (or a later
/// event of the same tenants) until the batch is finished or dropped. Dropping it without
/// [`OutboxBatch::finish`] gives every event back.
#[async_trait]
pub trait OutboxBatch: Send {
    /// The claimed events: oldest first, each tenant's in the order they happened.
    fn events(&self) -> &[Event];

    /// Marks `published` (a subset of [`OutboxBatch::events`]) as published and gives the
    /// rest back.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]: nothing is marked (the events
    /// will be published again: delivery is at least once).
    async fn finish(self: Box<Self>, published: &[EventId]) -> Result<(), RepoError>;
}

/// The outbox, relay side: events written with their change, waiting to be published.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims at most `limit` unpublished events, oldest first, skipping those another
    /// relay holds and any event of a tenant with an earlier event still unpublished
    /// outside the batch (so each tenant's events go out in order). The claim lasts at
    /// least `hold` (the longest publishing may take); a relay that dies or hangs loses it
    /// after that.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        limit: usize,
        hold: std::time::Duration,
    ) -> Result<Box<dyn OutboxBatch>, RepoError>;

    /// How many events wait, and since when.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn backlog(&self) -> Result<OutboxBacklog, RepoError>;
}

/// Why an event was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event not delivered: {0}")]
pub struct PublishError(pub String);

/// Where events are published (a message broker).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` in order, each tenant's in order, and waits for the broker to
    /// confirm each delivery (or give up on it). One outcome per event, in the same order.
    async fn publish(&self, events: &[Event]) -> Vec<Result<(), PublishError>>;

    /// Waits at most `timeout` for deliveries still in flight.
    ///
    /// # Errors
    /// When some were still undelivered at the timeout.
    async fn flush(&self, timeout: std::time::Duration) -> Result<(), PublishError>;
}
