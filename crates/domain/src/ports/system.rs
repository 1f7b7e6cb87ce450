//! What the use cases take from the machine: time, fresh ids, randomness for secrets, and
//! the token buckets of rate limits.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::RepoError;
use crate::api_key::SECRET_BYTES;

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

/// Cryptographically secure randomness for secrets.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SecretGenerator: Send + Sync {
    /// Fresh random bytes for an API key secret.
    fn api_key_secret(&self) -> [u8; SECRET_BYTES];
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
