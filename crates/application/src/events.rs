//! EventService use cases: reading the lifecycle event log.

use std::sync::Arc;

use tenantd_domain::ports::EventLog;
use tenantd_domain::{Error, Event, EventId, Reason, TenantId};
use uuid::Uuid;

use crate::{Page, PageRequest};

/// Reads lifecycle events.
#[derive(Clone)]
pub struct EventService {
    log: Arc<dyn EventLog>,
}

impl std::fmt::Debug for EventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventService").finish_non_exhaustive()
    }
}

impl EventService {
    /// A service over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// One page of events, oldest first; only `tenant_id`'s when it is not empty.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed tenant id, page size or token; store failures.
    pub async fn list_tenant_events(
        &self,
        tenant_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Event>, Error> {
        let tenant = if tenant_id.is_empty() {
            None
        } else {
            Some(TenantId::parse_field(tenant_id, "tenant_id")?)
        };
        let filters = format!("events;tenant={tenant_id}");
        let page = PageRequest::parse(page_size, page_token, &filters)?;
        let after = match &page.after {
            None => None,
            Some(key) => Some(EventId(Uuid::parse_str(key).map_err(|_| {
                Error::invalid_because(
                    Reason::PageTokenInvalid,
                    "page_token",
                    "is malformed; start again without it",
                )
            })?)),
        };
        let fetched = self.log.list(tenant, after, page.fetch_limit()).await?;
        Ok(page.finish(fetched, &filters, |e| e.id.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tenantd_domain::EventKind;
    use tenantd_domain::ports::MockEventLog;

    use super::*;

    fn event(tenant: TenantId) -> Event {
        Event {
            id: EventId(Uuid::now_v7()),
            subject: tenant.into(),
            occurred_at: Utc::now(),
            kind: EventKind::TenantResumed,
        }
    }

    #[tokio::test]
    async fn pages_through_one_tenants_events_after_the_last_id() {
        let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        let events: Vec<Event> = (0..3).map(|_| event(tenant)).collect();
        let all = events.clone();
        let mut log = MockEventLog::new();
        log.expect_list().returning(move |t, after, limit| {
            assert_eq!(t, Some(tenant));
            Ok(all
                .iter()
                .filter(|e| after.is_none_or(|a| e.id > a))
                .take(limit)
                .cloned()
                .collect())
        });
        let svc = EventService::new(Arc::new(log));
        let id = tenant.to_string();
        let first = svc.list_tenant_events(&id, 2, "").await.unwrap();
        assert_eq!(first.items, events[..2]);
        let second = svc
            .list_tenant_events(&id, 2, &first.next_page_token)
            .await
            .unwrap();
        assert_eq!(second.items, events[2..]);
        assert!(second.next_page_token.is_empty());
        let other = Uuid::now_v7().to_string();
        assert!(matches!(
            svc.list_tenant_events(&other, 2, &first.next_page_token)
                .await,
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[tokio::test]
    async fn malformed_tenant_id_is_invalid_and_reads_nothing() {
        let mut log = MockEventLog::new();
        log.expect_list().never();
        let svc = EventService::new(Arc::new(log));
        assert!(matches!(
            svc.list_tenant_events("nope", 0, "").await,
            Err(Error::InvalidArgument { violations: v, .. }) if v[0].field == "tenant_id"
        ));
    }
}
