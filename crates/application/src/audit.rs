//! Reading the audit log (ListAuditRecords): newest first, filtered, paginated.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::AuditLog;
use tenantd_domain::{AuditQuery, AuditRecord, Error, Reason, TenantId};
use uuid::Uuid;

use crate::{Page, PageRequest};

/// ListAuditRecords input; empty strings and `None` mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListAuditRecords {
    /// Only about this tenant.
    pub tenant_id: String,
    /// Only by this principal (SPIFFE id).
    pub principal: String,
    /// Only of this method (`/tenant.v1.TenantService/GetTenant`).
    pub method: String,
    /// Only at or after.
    pub start: Option<DateTime<Utc>>,
    /// Only before.
    pub end: Option<DateTime<Utc>>,
    /// Page size (0 = default).
    pub page_size: i32,
    /// Token of the previous page.
    pub page_token: String,
}

/// Reads audit records.
#[derive(Clone)]
pub struct AuditService {
    log: Arc<dyn AuditLog>,
}

impl std::fmt::Debug for AuditService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService").finish_non_exhaustive()
    }
}

impl AuditService {
    /// A service over `log`.
    pub fn new(log: Arc<dyn AuditLog>) -> Self {
        Self { log }
    }

    /// One page of records, newest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed tenant id, an empty time range, or a bad
    /// page size or token; store failures.
    pub async fn list(&self, cmd: ListAuditRecords) -> Result<Page<AuditRecord>, Error> {
        let tenant_id = if cmd.tenant_id.is_empty() {
            None
        } else {
            Some(TenantId::parse_field(&cmd.tenant_id, "tenant_id")?)
        };
        if let (Some(start), Some(end)) = (cmd.start, cmd.end)
            && start >= end
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let filters = format!(
            "audit;tenant={};principal={};method={};start={:?};end={:?}",
            cmd.tenant_id, cmd.principal, cmd.method, cmd.start, cmd.end
        );
        let page = PageRequest::parse(cmd.page_size, &cmd.page_token, &filters)?;
        let before = match &page.after {
            None => None,
            Some(key) => Some(Uuid::parse_str(key).map_err(|_| {
                Error::invalid_because(
                    Reason::PageTokenInvalid,
                    "page_token",
                    "is malformed; start again without it",
                )
            })?),
        };
        let query = AuditQuery {
            before,
            limit: page.fetch_limit(),
            tenant_id,
            principal: (!cmd.principal.is_empty()).then_some(cmd.principal),
            method: (!cmd.method.is_empty()).then_some(cmd.method),
            start: cmd.start,
            end: cmd.end,
        };
        let fetched = self.log.list(&query).await?;
        Ok(page.finish(fetched, &filters, |r| r.id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use tenantd_domain::ports::MockAuditLog;

    use super::*;

    fn record(method: &str) -> AuditRecord {
        AuditRecord {
            id: Uuid::now_v7(),
            principal: "spiffe://tenantd.local/admin".into(),
            method: method.into(),
            tenant_id: None,
            code: "OK".into(),
            at: Utc::now(),
            request_id: "r".into(),
        }
    }

    #[tokio::test]
    async fn pages_newest_first_with_the_filters_passed_down() {
        let mut records: Vec<_> = (0..3)
            .map(|_| record("/tenant.v1.PlanService/ListPlans"))
            .collect();
        records.reverse();
        let all = records.clone();
        let mut log = MockAuditLog::new();
        log.expect_list().returning(move |q| {
            assert_eq!(
                q.method.as_deref(),
                Some("/tenant.v1.PlanService/ListPlans")
            );
            Ok(all
                .iter()
                .filter(|r| q.before.is_none_or(|b| r.id < b))
                .take(q.limit)
                .cloned()
                .collect())
        });
        let svc = AuditService::new(Arc::new(log));
        let cmd = ListAuditRecords {
            method: "/tenant.v1.PlanService/ListPlans".into(),
            page_size: 2,
            ..ListAuditRecords::default()
        };
        let first = svc.list(cmd.clone()).await.unwrap();
        assert_eq!(first.items, records[..2]);
        let second = svc
            .list(ListAuditRecords {
                page_token: first.next_page_token,
                ..cmd
            })
            .await
            .unwrap();
        assert_eq!(second.items, records[2..]);
    }

    #[tokio::test]
    async fn an_empty_time_range_or_bad_tenant_is_invalid() {
        let mut log = MockAuditLog::new();
        log.expect_list().never();
        let svc = AuditService::new(Arc::new(log));
        let now = Utc::now();
        let empty = ListAuditRecords {
            start: Some(now),
            end: Some(now),
            ..ListAuditRecords::default()
        };
        assert!(matches!(
            svc.list(empty).await,
            Err(Error::InvalidArgument { .. })
        ));
        let bad = ListAuditRecords {
            tenant_id: "x".into(),
            ..ListAuditRecords::default()
        };
        assert!(matches!(
            svc.list(bad).await,
            Err(Error::InvalidArgument { .. })
        ));
    }
}
