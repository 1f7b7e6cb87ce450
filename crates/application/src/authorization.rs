//! The one authorization policy of tenantd (DESIGN.md §6), as a table: which principal may
//! call which operation, on which tenant. Decided before anything is looked up, so a tenant
//! asking about another tenant gets the same PERMISSION_DENIED whether it exists or not.

use tenantd_domain::{Error, Principal, Reason, TenantId};

/// Every RPC that needs a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[expect(missing_docs, reason = "each variant is the RPC of the same name")]
pub enum Operation {
    CreateTenant,
    GetTenant,
    ListTenants,
    UpdateTenant,
    DeleteTenant,
    UndeleteTenant,
    SuspendTenant,
    ResumeTenant,
    SetLegalHold,
    ReleaseLegalHold,
    PurgeTenant,
    GetPurge,
    ExportTenant,
    GetExport,
    DownloadExport,
    GetProvisioning,
    WatchProvisioning,
    CancelProvisioning,
    RetryProvisioning,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
    VerifyApiKey,
    ClaimInitialApiKey,
    ListPlans,
    GetPlan,
    ListTenantEvents,
    ListAuditRecords,
    ListDeadLetters,
    RetryDeadLetters,
    StartRollout,
    GetRollout,
    ListRollouts,
    WatchRollout,
    PauseRollout,
    ResumeRollout,
    CancelRollout,
    RetryFailedTenants,
    ListTenantSchemas,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Operators only.
    Admin,
    /// Operators and services.
    Services,
    /// Operators and the tenant the call is about.
    OwnTenant,
    /// Operators, services and the tenant the call is about.
    ServicesOrOwnTenant,
    /// Every known principal.
    Anyone,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Self; 39] = [
        Self::CreateTenant,
        Self::GetTenant,
        Self::ListTenants,
        Self::UpdateTenant,
        Self::DeleteTenant,
        Self::UndeleteTenant,
        Self::SuspendTenant,
        Self::ResumeTenant,
        Self::SetLegalHold,
        Self::ReleaseLegalHold,
        Self::PurgeTenant,
        Self::GetPurge,
        Self::ExportTenant,
        Self::GetExport,
        Self::DownloadExport,
        Self::GetProvisioning,
        Self::WatchProvisioning,
        Self::CancelProvisioning,
        Self::RetryProvisioning,
        Self::CreateApiKey,
        Self::ListApiKeys,
        Self::RevokeApiKey,
        Self::VerifyApiKey,
        Self::ClaimInitialApiKey,
        Self::ListPlans,
        Self::GetPlan,
        Self::ListTenantEvents,
        Self::ListAuditRecords,
        Self::ListDeadLetters,
        Self::RetryDeadLetters,
        Self::StartRollout,
        Self::GetRollout,
        Self::ListRollouts,
        Self::WatchRollout,
        Self::PauseRollout,
        Self::ResumeRollout,
        Self::CancelRollout,
        Self::RetryFailedTenants,
        Self::ListTenantSchemas,
    ];

    fn rule(self) -> Rule {
        match self {
            Self::CreateTenant
            | Self::UpdateTenant
            | Self::DeleteTenant
            | Self::UndeleteTenant
            | Self::SuspendTenant
            | Self::ResumeTenant
            | Self::SetLegalHold
            | Self::ReleaseLegalHold
            | Self::PurgeTenant
            | Self::GetPurge
            | Self::ExportTenant
            | Self::CancelProvisioning
            | Self::RetryProvisioning
            | Self::ListAuditRecords
            | Self::ListDeadLetters
            | Self::RetryDeadLetters
            | Self::StartRollout
            | Self::GetRollout
            | Self::ListRollouts
            | Self::WatchRollout
            | Self::PauseRollout
            | Self::ResumeRollout
            | Self::CancelRollout
            | Self::RetryFailedTenants
            | Self::ListTenantSchemas => Rule::Admin,
            Self::ListTenants | Self::ListTenantEvents | Self::VerifyApiKey => Rule::Services,
            Self::CreateApiKey
            | Self::RevokeApiKey
            | Self::ClaimInitialApiKey
            | Self::GetExport
            | Self::DownloadExport => Rule::OwnTenant,
            Self::GetTenant
            | Self::GetProvisioning
            | Self::WatchProvisioning
            | Self::ListApiKeys => Rule::ServicesOrOwnTenant,
            Self::ListPlans | Self::GetPlan => Rule::Anyone,
        }
    }
}

/// Decides whether `principal` (`None`: the certificate carries no tenantd identity) may
/// call `operation` about `tenant` (the tenant id exactly as the request sent it, if the
/// operation targets one).
///
/// # Errors
/// [`Error::PermissionDenied`], with a message that never depends on whether the target exists.
pub fn authorize(
    principal: Option<&Principal>,
    operation: Operation,
    tenant: Option<&str>,
) -> Result<(), Error> {
    let Some(principal) = principal else {
        return Err(Error::PermissionDenied {
            reason: Reason::IdentityMissing,
            message:
                "the client certificate carries no tenantd identity (a SPIFFE id of this trust domain)"
                    .into(),
        });
    };
    let own = |id: &TenantId| tenant.is_some_and(|t| t.parse::<TenantId>().is_ok_and(|t| t == *id));
    let allowed = match (operation.rule(), principal) {
        (_, Principal::Admin)
        | (Rule::Anyone, _)
        | (Rule::Services | Rule::ServicesOrOwnTenant, Principal::Service(_)) => true,
        (Rule::OwnTenant | Rule::ServicesOrOwnTenant, Principal::Tenant(id)) => own(id),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            reason: Reason::OperationNotPermitted,
            message: format!(
                "{principal} may not call {operation:?}{}",
                if tenant.is_some() {
                    " on this tenant"
                } else {
                    ""
                }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::Operation::*;
    use super::*;

    /// Columns: admin, service, own tenant, other tenant, unknown identity.
    const TABLE: [(Operation, [bool; 5]); 39] = [
        (CreateTenant, [true, false, false, false, false]),
        (GetTenant, [true, true, true, false, false]),
        (ListTenants, [true, true, false, false, false]),
        (UpdateTenant, [true, false, false, false, false]),
        (DeleteTenant, [true, false, false, false, false]),
        (UndeleteTenant, [true, false, false, false, false]),
        (SuspendTenant, [true, false, false, false, false]),
        (ResumeTenant, [true, false, false, false, false]),
        (SetLegalHold, [true, false, false, false, false]),
        (ReleaseLegalHold, [true, false, false, false, false]),
        (PurgeTenant, [true, false, false, false, false]),
        (GetPurge, [true, false, false, false, false]),
        (ExportTenant, [true, false, false, false, false]),
        (GetExport, [true, false, true, false, false]),
        (DownloadExport, [true, false, true, false, false]),
        (GetProvisioning, [true, true, true, false, false]),
        (WatchProvisioning, [true, true, true, false, false]),
        (CancelProvisioning, [true, false, false, false, false]),
        (RetryProvisioning, [true, false, false, false, false]),
        (CreateApiKey, [true, false, true, false, false]),
        (ListApiKeys, [true, true, true, false, false]),
        (RevokeApiKey, [true, false, true, false, false]),
        (VerifyApiKey, [true, true, false, false, false]),
        (ClaimInitialApiKey, [true, false, true, false, false]),
        (ListPlans, [true, true, true, true, false]),
        (GetPlan, [true, true, true, true, false]),
        (ListTenantEvents, [true, true, false, false, false]),
        (ListAuditRecords, [true, false, false, false, false]),
        (ListDeadLetters, [true, false, false, false, false]),
        (RetryDeadLetters, [true, false, false, false, false]),
        (StartRollout, [true, false, false, false, false]),
        (GetRollout, [true, false, false, false, false]),
        (ListRollouts, [true, false, false, false, false]),
        (WatchRollout, [true, false, false, false, false]),
        (PauseRollout, [true, false, false, false, false]),
        (ResumeRollout, [true, false, false, false, false]),
        (CancelRollout, [true, false, false, false, false]),
        (RetryFailedTenants, [true, false, false, false, false]),
        (ListTenantSchemas, [true, false, false, false, false]),
    ];

    #[test]
    fn the_policy_table_holds_for_every_operation_and_principal() {
        let me = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        let target = me.to_string();
        let principals = [
            Some(Principal::Admin),
            Some(Principal::Service("billing".into())),
            Some(Principal::Tenant(me)),
            Some(Principal::Tenant(
                TenantId::from_uuid(Uuid::now_v7()).unwrap(),
            )),
            None,
        ];
        assert_eq!(TABLE.len(), Operation::ALL.len());
        for (operation, expected) in TABLE {
            for (principal, allowed) in principals.iter().zip(expected) {
                let decision = authorize(principal.as_ref(), operation, Some(&target));
                assert_eq!(decision.is_ok(), allowed, "{principal:?} {operation:?}");
                if let Err(err) = decision {
                    assert!(matches!(err, Error::PermissionDenied { .. }));
                }
            }
        }
    }

    #[test]
    fn a_tenant_is_denied_alike_for_existing_missing_and_malformed_targets() {
        let me = Principal::Tenant(TenantId::from_uuid(Uuid::now_v7()).unwrap());
        let someone = Uuid::now_v7().to_string();
        let messages: Vec<_> = [
            someone.as_str(),
            "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
            "garbage",
        ]
        .iter()
        .map(|t| {
            authorize(Some(&me), GetTenant, Some(t))
                .unwrap_err()
                .to_string()
        })
        .collect();
        assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    }
}
