//! The one mapping from domain errors to gRPC statuses (DESIGN.md §7). Exhaustive on
//! purpose: a new error variant does not compile until it has a code here. Internal causes
//! are logged, never sent.

use tenantd_domain::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// Turns a use-case error into the status a caller sees.
pub fn to_status(err: Error) -> Status {
    match err {
        Error::InvalidArgument(violations) => {
            let message = format!(
                "invalid request: {}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let details = ErrorDetails::with_bad_request(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::NotFound { resource, id } => Status::not_found(format!("{resource} {id} not found")),
        Error::PermissionDenied(message) => Status::permission_denied(message),
        Error::AlreadyExists { resource, detail } => {
            Status::already_exists(format!("{resource} already exists: {detail}"))
        }
        Error::FailedPrecondition(message) => Status::failed_precondition(message),
        Error::Aborted(message) => Status::aborted(message),
        Error::ResourceExhausted {
            detail,
            retry_after,
        } => match retry_after {
            Some(delay) => Status::with_error_details(
                Code::ResourceExhausted,
                detail,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => Status::resource_exhausted(detail),
        },
        Error::Unavailable(cause) => {
            tracing::warn!(cause = %cause, "dependency unavailable");
            Status::unavailable("a dependency is unavailable; retry later")
        }
        Error::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tenantd_domain::FieldViolation as Violation;

    use super::*;

    #[test]
    fn invalid_argument_carries_bad_request_field_violations() {
        let status = to_status(Error::InvalidArgument(vec![
            Violation::new("tenant.slug", "must start with a letter"),
            Violation::new("tenant.plan_id", "is required"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["tenant.slug", "tenant.plan_id"]);
    }

    #[test]
    fn each_error_kind_has_its_code() {
        let cases = [
            (Error::tenant_not_found("x"), Code::NotFound),
            (
                Error::AlreadyExists {
                    resource: "tenant",
                    detail: "slug".into(),
                },
                Code::AlreadyExists,
            ),
            (
                Error::FailedPrecondition("no".into()),
                Code::FailedPrecondition,
            ),
            (Error::PermissionDenied("no".into()), Code::PermissionDenied),
            (Error::Aborted("stale".into()), Code::Aborted),
            (
                Error::ResourceExhausted {
                    detail: "quota".into(),
                    retry_after: None,
                },
                Code::ResourceExhausted,
            ),
            (Error::Unavailable("db down".into()), Code::Unavailable),
            (Error::Internal("boom".into()), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(to_status(err).code(), code);
        }
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = to_status(Error::ResourceExhausted {
            detail: "rate limit".into(),
            retry_after: Some(Duration::from_millis(250)),
        });
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
    }

    #[test]
    fn internal_and_unavailable_causes_are_not_sent() {
        let status = to_status(Error::Internal("password=hunter2 at db.internal".into()));
        assert_eq!(status.message(), "internal error");
        let status = to_status(Error::Unavailable("pg at 10.0.0.3 refused".into()));
        assert!(!status.message().contains("10.0.0.3"));
    }
}
