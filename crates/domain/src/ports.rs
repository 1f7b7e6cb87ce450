//! Port traits: what the use cases need from the outside world. Adapters implement them
//! (in-memory now, PostgreSQL/Redis/Kafka later); use-case tests mock them.
//!
//! Unit of work: a change to a tenant, the events describing it and (on create) the
//! idempotency record commit together or not at all, because the repository methods that
//! change a tenant take those along.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api_key::SECRET_BYTES;
use crate::{
    ApiKey, ApiKeyId, AuditQuery, AuditRecord, ContactEmail, Event, EventId, Plan, PlanId,
    RepoError, Tenant, TenantId, TenantStatus,
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
    /// Stores a new tenant with its events and, if given, its idempotency record, atomically.
    ///
    /// # Errors
    /// [`RepoError::SlugTaken`] if a non-purged tenant has the slug;
    /// [`RepoError::IdempotencyKeyTaken`] if another create committed the request id first;
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`] on store failure. Nothing is
    /// stored on error.
    async fn create(
        &self,
        tenant: &Tenant,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError>;

    /// Reads a tenant (including a soft-deleted one).
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
