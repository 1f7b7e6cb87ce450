//! Domain errors: what a use case can refuse, in business terms. The server maps each
//! variant to exactly one gRPC code; adapters translate driver errors into [`RepoError`].

use std::fmt;
use std::time::Duration;

use crate::Reason;

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

/// Why a use case did not do what it was asked. Every variant carries a [`Reason`]: the
/// variant decides the gRPC code, the reason tells clients which failure it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed: one entry per offending field.
    #[error("invalid argument: {}", join(violations))]
    InvalidArgument {
        /// Which validation failed.
        reason: Reason,
        /// The offending fields.
        violations: Vec<FieldViolation>,
    },
    /// The named resource does not exist.
    #[error("{resource} {id} not found")]
    NotFound {
        /// Which resource was missing.
        reason: Reason,
        /// Kind of resource, e.g. `tenant`.
        resource: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The caller may not do this. The message never says whether the target exists.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// Why not.
        reason: Reason,
        /// For a human.
        message: String,
    },
    /// A resource with the same unique key already exists.
    #[error("{resource} already exists: {detail}")]
    AlreadyExists {
        /// Which key collided.
        reason: Reason,
        /// Kind of resource, e.g. `tenant`.
        resource: &'static str,
        /// Which key collided, e.g. `slug "acme" is taken`.
        detail: String,
    },
    /// The resource is not in a state that allows the operation (illegal transition).
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// Which state forbids it.
        reason: Reason,
        /// For a human.
        message: String,
    },
    /// The caller's view is stale (etag mismatch) or a concurrent change won the race.
    #[error("aborted: {message}")]
    Aborted {
        /// Which race was lost.
        reason: Reason,
        /// For a human.
        message: String,
    },
    /// A quota or rate limit is exhausted.
    #[error("resource exhausted: {detail}")]
    ResourceExhausted {
        /// Which limit.
        reason: Reason,
        /// For a human.
        detail: String,
        /// When retrying makes sense, if known.
        retry_after: Option<Duration>,
        /// The limit itself (keys, requests per second), when one number states it.
        limit: Option<u64>,
    },
    /// A dependency (database, cache, broker) is unavailable, or this replica is stopping;
    /// retrying later may work. The cause is for logs, never for callers.
    #[error("unavailable: {cause}")]
    Unavailable {
        /// [`Reason::DependencyUnavailable`] or [`Reason::ShuttingDown`].
        reason: Reason,
        /// What failed, for the log.
        cause: String,
    },
    /// A bug or an unexpected dependency failure. The text is for logs, never for callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The machine-readable reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument { reason, .. }
            | Self::NotFound { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::AlreadyExists { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::Aborted { reason, .. }
            | Self::ResourceExhausted { reason, .. }
            | Self::Unavailable { reason, .. } => *reason,
            Self::Internal(_) => Reason::Internal,
        }
    }

    /// A single-field [`Error::InvalidArgument`] ([`Reason::FieldInvalid`]).
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_because(Reason::FieldInvalid, field, description)
    }

    /// A single-field [`Error::InvalidArgument`] for `reason`.
    pub fn invalid_because(
        reason: Reason,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self::InvalidArgument {
            reason,
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    /// [`Error::InvalidArgument`] for several fields ([`Reason::FieldInvalid`]).
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        Self::InvalidArgument {
            reason: Reason::FieldInvalid,
            violations,
        }
    }

    /// [`Error::NotFound`].
    pub fn not_found(reason: Reason, resource: &'static str, id: impl fmt::Display) -> Self {
        Self::NotFound {
            reason,
            resource,
            id: id.to_string(),
        }
    }

    /// [`Error::NotFound`] for a tenant.
    pub fn tenant_not_found(id: impl fmt::Display) -> Self {
        Self::not_found(Reason::TenantNotFound, "tenant", id)
    }

    /// [`Error::FailedPrecondition`].
    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    /// [`Error::Aborted`].
    pub fn aborted(reason: Reason, message: impl Into<String>) -> Self {
        Self::Aborted {
            reason,
            message: message.into(),
        }
    }

    /// [`Error::Unavailable`] of a dependency.
    pub fn unavailable(cause: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: Reason::DependencyUnavailable,
            cause: cause.into(),
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
    /// was deleted concurrently), with the reason a caller is told.
    #[error("precondition failed: {1}")]
    Precondition(Reason, String),
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
                reason: Reason::SlugTaken,
                resource: "tenant",
                detail: format!("slug {slug:?} is taken"),
            },
            RepoError::VersionConflict => Self::aborted(
                Reason::ConcurrentModification,
                "the resource was changed concurrently; read it again",
            ),
            RepoError::LeaseLost => Self::aborted(
                Reason::LeaseLost,
                "the job was taken over by another worker",
            ),
            RepoError::NotFound => Self::not_found(Reason::RecordNotFound, "record", ""),
            RepoError::Unavailable(detail) => Self::unavailable(detail),
            RepoError::InvalidValue(_) => Self::invalid_because(
                Reason::ValueNotStorable,
                "request",
                "contains a value that cannot be stored (e.g. a NUL character)",
            ),
            RepoError::Precondition(reason, why) => Self::precondition(reason, why),
            RepoError::LimitReached => Self::ResourceExhausted {
                reason: Reason::QuotaExceeded,
                detail: "a quota is exhausted".into(),
                retry_after: None,
                limit: None,
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
        let err = Error::invalid_fields(vec![
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
        assert_eq!(err.reason(), Reason::SlugTaken);
    }

    #[test]
    fn version_conflict_becomes_aborted() {
        let err: Error = RepoError::VersionConflict.into();
        assert!(matches!(err, Error::Aborted { .. }));
        assert_eq!(err.reason(), Reason::ConcurrentModification);
    }
}
