//! Domain errors: what a use case can refuse, in business terms. The server maps each
//! variant to exactly one gRPC code; adapters translate driver errors into [`RepoError`].

use std::fmt;
use std::time::Duration;

/// One invalid field of a request: the field's path (e.g. `tenant.slug`) and why.
///
/// Descriptions never repeat the offending value, so no email or secret leaks through them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, dot-separated (`tenant.labels`).
    pub field: String,
    /// What is wrong with it, for a human.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation with its field path prefixed, e.g. `slug` -> `tenant.slug`.
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Why a use case did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed: one entry per offending field.
    #[error("invalid argument: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{resource} {id} not found")]
    NotFound {
        /// Kind of resource, e.g. `tenant`.
        resource: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The caller may not do this. The message never says whether the target exists.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A resource with the same unique key already exists.
    #[error("{resource} already exists: {detail}")]
    AlreadyExists {
        /// Kind of resource, e.g. `tenant`.
        resource: &'static str,
        /// Which key collided, e.g. `slug "acme" is taken`.
        detail: String,
    },
    /// The resource is not in a state that allows the operation (illegal transition).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The caller's view is stale (etag mismatch) or a concurrent change won the race.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A quota or rate limit is exhausted.
    #[error("resource exhausted: {detail}")]
    ResourceExhausted {
        /// Which limit.
        detail: String,
        /// When retrying makes sense, if known.
        retry_after: Option<Duration>,
    },
    /// A dependency (database, cache, broker) is unavailable; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected dependency failure. The text is for logs, never for callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single-field [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// [`Error::NotFound`] for a tenant.
    pub fn tenant_not_found(id: impl fmt::Display) -> Self {
        Self::NotFound {
            resource: "tenant",
            id: id.to_string(),
        }
    }
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Failures of a repository port, translated from the driver by each adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// The slug belongs to another (not purged) tenant.
    #[error("slug {0:?} is taken")]
    SlugTaken(String),
    /// Another create already committed this idempotency key.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// The stored version differs from the expected one: a concurrent change committed first.
    #[error("version conflict: the record changed concurrently")]
    VersionConflict,
    /// A worker's lease on a job was taken over (it expired) or released: its write is
    /// refused so two workers never both act on one job.
    #[error("the lease on the job was lost")]
    LeaseLost,
    /// The store cannot hold a value of the request (say, a NUL character in text): the
    /// caller's input is at fault, not the store.
    #[error("the store refused a value: {0}")]
    InvalidValue(String),
    /// A state the store checks atomically does not hold (say, the tenant of a new API key
    /// was deleted concurrently).
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// A limit the store enforces atomically (such as a plan quota) is reached.
    #[error("limit reached")]
    LimitReached,
    /// The record to change does not exist.
    #[error("record not found")]
    NotFound,
    /// The store cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt row, driver bug).
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<RepoError> for Error {
    fn from(err: RepoError) -> Self {
        match err {
            RepoError::SlugTaken(slug) => Self::AlreadyExists {
                resource: "tenant",
                detail: format!("slug {slug:?} is taken"),
            },
            RepoError::VersionConflict => {
                Self::Aborted("the tenant was changed concurrently; read it again".into())
            }
            RepoError::LeaseLost => {
                Self::Aborted("the job was taken over by another worker".into())
            }
            RepoError::NotFound => Self::NotFound {
                resource: "record",
                id: String::new(),
            },
            RepoError::Unavailable(detail) => Self::Unavailable(detail),
            RepoError::InvalidValue(_) => Self::invalid(
                "request",
                "contains a value that cannot be stored (e.g. a NUL character)",
            ),
            RepoError::Precondition(why) => Self::FailedPrecondition(why),
            RepoError::LimitReached => Self::ResourceExhausted {
                detail: "a quota is exhausted".into(),
                retry_after: None,
            },
            RepoError::IdempotencyKeyTaken | RepoError::Internal(_) => {
                Self::Internal(err.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_lists_every_violation() {
        let err = Error::InvalidArgument(vec![
            FieldViolation::new("slug", "too short").under("tenant"),
            FieldViolation::new("plan_id", "unknown plan"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid argument: tenant.slug: too short; plan_id: unknown plan"
        );
    }

    #[test]
    fn slug_taken_becomes_already_exists() {
        let err: Error = RepoError::SlugTaken("acme".into()).into();
        assert!(matches!(
            err,
            Error::AlreadyExists {
                resource: "tenant",
                ..
            }
        ));
    }

    #[test]
    fn version_conflict_becomes_aborted() {
        let err: Error = RepoError::VersionConflict.into();
        assert!(matches!(err, Error::Aborted(_)));
    }
}
