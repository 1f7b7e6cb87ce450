//! Machine-readable reasons of errors: a stable UPPER_SNAKE_CASE name per way a request can
//! fail, so clients branch on the reason (sent as `google.rpc.ErrorInfo.reason`, AIP-193),
//! never on the English message. A reason, once published, keeps its name and meaning; new
//! ways to fail get new reasons. The proto enum `tenant.v1.ErrorReason` lists the same
//! names (a server test keeps the two in step).

/// Declares [`Reason`] with its wire names, its docs and the list of all of them.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Why a request failed, for machines (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Self::$variant),*];

            /// The reason's wire name (`ErrorInfo.reason`), e.g. `SLUG_TAKEN`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    /// A request field is malformed or out of range (each one is named in
    /// `google.rpc.BadRequest`).
    FieldInvalid = "FIELD_INVALID",
    /// The page token is malformed or was issued for a different query.
    PageTokenInvalid = "PAGE_TOKEN_INVALID",
    /// The update mask names an unknown or read-only path, or nothing to update.
    UpdateMaskInvalid = "UPDATE_MASK_INVALID",
    /// The request contains a value the store cannot hold (e.g. a NUL character).
    ValueNotStorable = "VALUE_NOT_STORABLE",
    /// The `request_id` of a create was already used for a different request.
    RequestIdReused = "REQUEST_ID_REUSED",
    /// The plan does not exist (on GetPlan, NOT_FOUND; as a tenant's plan, INVALID_ARGUMENT).
    PlanNotFound = "PLAN_NOT_FOUND",
    /// The tenant does not exist.
    TenantNotFound = "TENANT_NOT_FOUND",
    /// The API key does not exist or belongs to another tenant.
    ApiKeyNotFound = "API_KEY_NOT_FOUND",
    /// The tenant has no provisioning run.
    ProvisioningRunNotFound = "PROVISIONING_RUN_NOT_FOUND",
    /// Provisioning has not made the tenant's first API key (yet).
    InitialApiKeyNotFound = "INITIAL_API_KEY_NOT_FOUND",
    /// The record to change does not exist.
    RecordNotFound = "RECORD_NOT_FOUND",
    /// The tenant-schema rollout does not exist.
    RolloutNotFound = "ROLLOUT_NOT_FOUND",
    /// The tenant's purge has not started.
    PurgeNotFound = "PURGE_NOT_FOUND",
    /// The export does not exist (or belongs to another tenant, or expired).
    ExportNotFound = "EXPORT_NOT_FOUND",
    /// The client certificate carries no identity of this trust domain.
    IdentityMissing = "IDENTITY_MISSING",
    /// The caller's role may not do this (to this tenant).
    OperationNotPermitted = "OPERATION_NOT_PERMITTED",
    /// Another tenant (also a soft-deleted one) holds the slug.
    SlugTaken = "SLUG_TAKEN",
    /// The tenant's lifecycle does not allow this move (e.g. resuming an ACTIVE tenant).
    InvalidTransition = "INVALID_TRANSITION",
    /// The tenant is deleted: undelete it first.
    TenantDeleted = "TENANT_DELETED",
    /// The deleted tenant's purge time has passed; it can no longer be restored.
    PurgeTimePassed = "PURGE_TIME_PASSED",
    /// The provisioning run is not running (it cannot be cancelled).
    RunNotRunning = "RUN_NOT_RUNNING",
    /// The provisioning run neither failed nor was cancelled (it cannot be retried).
    RunNotRetryable = "RUN_NOT_RETRYABLE",
    /// The provisioning run's undo is still in progress; retry once it is done.
    CompensationInProgress = "COMPENSATION_IN_PROGRESS",
    /// Another tenant-schema rollout is running or paused: one at a time.
    RolloutInProgress = "ROLLOUT_IN_PROGRESS",
    /// The rollout's state does not allow this (e.g. resuming a running rollout).
    RolloutStateInvalid = "ROLLOUT_STATE_INVALID",
    /// The tenant has no legal hold to release.
    NoLegalHold = "NO_LEGAL_HOLD",
    /// The tenant is under legal hold: it cannot be purged until the hold is released.
    LegalHold = "LEGAL_HOLD",
    /// The tenant was purged: only its tombstone is left.
    TenantPurged = "TENANT_PURGED",
    /// The tenant is being purged: nothing but the purge can change it.
    PurgeInProgress = "PURGE_IN_PROGRESS",
    /// The deleted tenant's retention has not run out yet (`force` purges it anyway).
    PurgeTimeNotReached = "PURGE_TIME_NOT_REACHED",
    /// The export has not succeeded (yet, or failed): there is nothing to download.
    ExportNotReady = "EXPORT_NOT_READY",
    /// The first API key was claimed already.
    InitialApiKeyClaimed = "INITIAL_API_KEY_CLAIMED",
    /// The first API key was revoked (its provisioning run was undone).
    InitialApiKeyRevoked = "INITIAL_API_KEY_REVOKED",
    /// This server does not provision first API keys.
    InitialApiKeysDisabled = "INITIAL_API_KEYS_DISABLED",
    /// The etag is stale: read the resource again.
    EtagMismatch = "ETAG_MISMATCH",
    /// A concurrent change won the race: read again and retry.
    ConcurrentModification = "CONCURRENT_MODIFICATION",
    /// A concurrent request with the same `request_id` has not finished: retry.
    RequestInProgress = "REQUEST_IN_PROGRESS",
    /// A worker's lease on a job was taken over.
    LeaseLost = "LEASE_LOST",
    /// The plan's API key quota is used up: revoke a key first.
    ApiKeyQuotaExceeded = "API_KEY_QUOTA_EXCEEDED",
    /// A limit the store enforces is reached.
    QuotaExceeded = "QUOTA_EXCEEDED",
    /// The caller exceeded its request rate (`google.rpc.RetryInfo` says when to retry).
    RateLimited = "RATE_LIMITED",
    /// A request or response message is larger than the server's limit (`limit` in the
    /// metadata).
    MessageTooLarge = "MESSAGE_TOO_LARGE",
    /// The request's bytes are not a protobuf message of the method's request type.
    MessageMalformed = "MESSAGE_MALFORMED",
    /// The caller has as many WatchProvisioning streams open as it may: close one first.
    TooManyWatches = "TOO_MANY_WATCHES",
    /// This replica is handling as many calls as it may: retry (`google.rpc.RetryInfo`
    /// says when; another replica may answer now).
    Overloaded = "OVERLOADED",
    /// The call did not finish before its deadline (the client's `grpc-timeout` or the
    /// server's 30 s); what it was doing was abandoned.
    DeadlineExceeded = "DEADLINE_EXCEEDED",
    /// A dependency (database, cache, broker) is unavailable: retry later.
    DependencyUnavailable = "DEPENDENCY_UNAVAILABLE",
    /// This replica is shutting down: retry (elsewhere).
    ShuttingDown = "SHUTTING_DOWN",
    /// A bug or an unexpected failure; the details are in the server's log.
    Internal = "INTERNAL",
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn reasons_are_unique_upper_snake_case_names() {
        let mut seen = HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    && !name.starts_with('_')
                    && !name.ends_with('_'),
                "{name} is not UPPER_SNAKE_CASE"
            );
        }
    }
}
