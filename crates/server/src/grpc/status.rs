//! The one mapping from domain errors to gRPC statuses (DESIGN.md §7). Exhaustive on
//! purpose: a new error variant does not compile until it has a code here. Every status
//! carries a `google.rpc.ErrorInfo` (the error's reason, domain [`ERROR_DOMAIN`], metadata
//! such as the field or the limit, AIP-193) beside `google.rpc.BadRequest` and
//! `google.rpc.RetryInfo` where they apply. Internal causes are logged, never sent.

use std::collections::HashMap;

use tenantd_domain::{Error, Reason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// The `ErrorInfo.domain` of every tenantd error.
pub const ERROR_DOMAIN: &str = "tenantd.dev";

/// Turns a use-case error into the status a caller sees.
pub fn to_status(err: Error) -> Status {
    let reason = err.reason();
    let mut metadata = HashMap::new();
    let mut details = ErrorDetails::new();
    let (code, message) = match err {
        Error::InvalidArgument { violations, .. } => {
            let message = format!(
                "invalid request: {}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if let Some(first) = violations.first() {
                metadata.insert("field".to_owned(), first.field.clone());
            }
            details.set_bad_request(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
            (Code::InvalidArgument, message)
        }
        Error::NotFound { resource, id, .. } => {
            metadata.insert("resource".to_owned(), resource.to_owned());
            let message = format!("{resource} {id} not found");
            if !id.is_empty() {
                metadata.insert("id".to_owned(), id);
            }
            (Code::NotFound, message)
        }
        Error::PermissionDenied { message, .. } => (Code::PermissionDenied, message),
        Error::AlreadyExists {
            resource, detail, ..
        } => {
            metadata.insert("resource".to_owned(), resource.to_owned());
            (
                Code::AlreadyExists,
                format!("{resource} already exists: {detail}"),
            )
        }
        Error::FailedPrecondition { message, .. } => (Code::FailedPrecondition, message),
        Error::Aborted { message, .. } => (Code::Aborted, message),
        Error::ResourceExhausted {
            detail,
            retry_after,
            limit,
            ..
        } => {
            if let Some(limit) = limit {
                metadata.insert("limit".to_owned(), limit.to_string());
            }
            if let Some(delay) = retry_after {
                metadata.insert("retryAfterMs".to_owned(), delay.as_millis().to_string());
                details.set_retry_info(Some(delay));
            }
            (Code::ResourceExhausted, detail)
        }
        Error::Unavailable { reason, cause } => {
            let message = if reason == Reason::ShuttingDown {
                tracing::info!(cause = %cause, "refused: shutting down");
                "tenantd is shutting down; retry (another replica may answer)"
            } else {
                tracing::warn!(cause = %cause, "dependency unavailable");
                "a dependency is unavailable; retry later"
            };
            (Code::Unavailable, message.to_owned())
        }
        Error::Internal(cause) => {
            tracing::error!(cause = %cause, "internal error");
            (Code::Internal, "internal error".to_owned())
        }
    };
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// UNAVAILABLE (`OVERLOADED`, with a RetryInfo of `retry_after`): this replica is
/// handling as many calls as it may. Not a domain error: no use case is involved.
pub fn overloaded(retry_after: std::time::Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(retry_after));
    let metadata = HashMap::from([(
        "retryAfterMs".to_owned(),
        retry_after.as_millis().to_string(),
    )]);
    details.set_error_info(Reason::Overloaded.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::Unavailable,
        "tenantd is handling as many calls as it may; retry (another replica may answer)",
        details,
    )
}

/// DEADLINE_EXCEEDED (`DEADLINE_EXCEEDED`): the call did not finish within `limit` (the
/// client's `grpc-timeout` or the server's own), and what it was doing was abandoned.
pub fn deadline_exceeded(limit: std::time::Duration) -> Status {
    let mut details = ErrorDetails::new();
    let metadata = HashMap::from([("limitMs".to_owned(), limit.as_millis().to_string())]);
    details.set_error_info(Reason::DeadlineExceeded.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::DeadlineExceeded,
        "the call did not finish before its deadline; nothing of it was kept",
        details,
    )
}

/// INVALID_ARGUMENT (`MESSAGE_MALFORMED`): the request's bytes are not a protobuf message
/// of the method's request type; `detail` is the decoder's account (field names and wire
/// types, never values). tonic answers INTERNAL here; the fault is the client's, and
/// INTERNAL stays for tenantd's own bugs.
pub fn malformed(detail: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(
        Reason::MessageMalformed.as_str(),
        ERROR_DOMAIN,
        HashMap::new(),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("the request is not a valid message of the method's type: {detail}"),
        details,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use prost::Message as _;
    use tenantd_domain::FieldViolation as Violation;

    use super::*;

    #[test]
    fn invalid_argument_carries_bad_request_field_violations_and_the_first_field() {
        let status = to_status(Error::invalid_fields(vec![
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
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("FIELD_INVALID", "tenantd.dev")
        );
        assert_eq!(info.metadata["field"], "tenant.slug");
    }

    #[test]
    fn each_error_kind_has_its_code_and_its_reason() {
        let cases = [
            (
                Error::tenant_not_found("x"),
                Code::NotFound,
                "TENANT_NOT_FOUND",
            ),
            (
                Error::AlreadyExists {
                    reason: Reason::SlugTaken,
                    resource: "tenant",
                    detail: "slug".into(),
                },
                Code::AlreadyExists,
                "SLUG_TAKEN",
            ),
            (
                Error::precondition(Reason::InvalidTransition, "no"),
                Code::FailedPrecondition,
                "INVALID_TRANSITION",
            ),
            (
                Error::PermissionDenied {
                    reason: Reason::OperationNotPermitted,
                    message: "no".into(),
                },
                Code::PermissionDenied,
                "OPERATION_NOT_PERMITTED",
            ),
            (
                Error::aborted(Reason::EtagMismatch, "stale"),
                Code::Aborted,
                "ETAG_MISMATCH",
            ),
            (
                Error::ResourceExhausted {
                    reason: Reason::ApiKeyQuotaExceeded,
                    detail: "quota".into(),
                    retry_after: None,
                    limit: Some(20),
                },
                Code::ResourceExhausted,
                "API_KEY_QUOTA_EXCEEDED",
            ),
            (
                Error::unavailable("db down"),
                Code::Unavailable,
                "DEPENDENCY_UNAVAILABLE",
            ),
            (Error::Internal("boom".into()), Code::Internal, "INTERNAL"),
        ];
        for (err, code, reason) in cases {
            let status = to_status(err);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason, ERROR_DOMAIN)
            );
        }
    }

    #[test]
    fn rate_limits_carry_retry_info_and_the_limit() {
        let status = to_status(Error::ResourceExhausted {
            reason: Reason::RateLimited,
            detail: "rate limit".into(),
            retry_after: Some(Duration::from_millis(250)),
            limit: Some(5),
        });
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(250)));
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.metadata["limit"], "5");
        assert_eq!(info.metadata["retryAfterMs"], "250");
    }

    #[test]
    fn internal_and_unavailable_causes_are_not_sent() {
        let status = to_status(Error::Internal("password=hunter2 at db.internal".into()));
        assert_eq!(status.message(), "internal error");
        let status = to_status(Error::unavailable("pg at 10.0.0.3 refused"));
        assert!(!status.message().contains("10.0.0.3"));
        assert!(!format!("{:?}", status.details()).contains("10.0.0.3"));
    }

    /// The proto's `tenant.v1.ErrorReason` lists exactly the domain's reasons, as
    /// `ERROR_REASON_<reason>`, so clients generated from `proto/` have them as constants.
    #[test]
    fn the_proto_error_reasons_are_the_domains() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let values: BTreeSet<String> = set
            .file
            .iter()
            .flat_map(|f| &f.enum_type)
            .filter(|e| e.name() == "ErrorReason")
            .flat_map(|e| &e.value)
            .filter(|v| v.number() != 0)
            .map(|v| v.name().trim_start_matches("ERROR_REASON_").to_owned())
            .collect();
        let reasons: BTreeSet<String> = Reason::ALL.iter().map(|r| r.as_str().to_owned()).collect();
        assert_eq!(values, reasons);
    }
}
