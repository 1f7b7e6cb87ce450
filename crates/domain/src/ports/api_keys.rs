//! Tenant API keys: their metadata and secret hashes, and the first admin key provisioning
//! makes (sealed until it is claimed once).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{ApiKey, ApiKeyId, Event, RepoError, TenantId};

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
