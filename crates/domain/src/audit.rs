//! Audit records: one per RPC, allowed or denied. They name who called what, about which
//! tenant, with which outcome — never a secret or an email address.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::TenantId;

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Id (UUIDv7: time-ordered).
    pub id: Uuid,
    /// The caller's SPIFFE id, or `unauthenticated` when the certificate carried none.
    pub principal: String,
    /// The full RPC method, e.g. `/tenant.v1.TenantService/GetTenant`.
    pub method: String,
    /// The tenant the call was about, when it named a well-formed one.
    pub tenant_id: Option<TenantId>,
    /// The gRPC status code name of the outcome (`OK`, `PERMISSION_DENIED`, ...).
    pub code: String,
    /// When the call ended.
    pub at: DateTime<Utc>,
    /// The caller's `x-request-id`, or one the server assigned.
    pub request_id: String,
}

/// Which audit records to list: newest first, before a cursor, with filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with an id smaller than this (the previous page's last).
    pub before: Option<Uuid>,
    /// Most records to return.
    pub limit: usize,
    /// Only about this tenant.
    pub tenant_id: Option<TenantId>,
    /// Only by this principal.
    pub principal: Option<String>,
    /// Only of this method.
    pub method: Option<String>,
    /// Only at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only before this time.
    pub end: Option<DateTime<Utc>>,
}

impl AuditQuery {
    /// Whether `record` passes the filters (not the cursor or limit).
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.tenant_id.is_none_or(|t| record.tenant_id == Some(t))
            && self
                .principal
                .as_ref()
                .is_none_or(|p| &record.principal == p)
            && self.method.as_ref().is_none_or(|m| &record.method == m)
            && self.start.is_none_or(|s| record.at >= s)
            && self.end.is_none_or(|e| record.at < e)
    }
}
