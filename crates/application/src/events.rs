//! EventService use cases: reading the lifecycle event log, and the outbox's dead letters.

use std::sync::Arc;

use tenantd_domain::ports::{DeadLetter, DeadLetterSelection, EventLog, Outbox};
use tenantd_domain::{Error, Event, EventId, FieldViolation, Reason, TenantId};
use uuid::Uuid;

use crate::{Page, PageRequest};

/// Most dead letters one RetryDeadLetters names.
pub const MAX_RETRIED_DEAD_LETTERS: usize = 1000;

/// Reads lifecycle events; lists and retries dead letters.
#[derive(Clone)]
pub struct EventService {
    log: Arc<dyn EventLog>,
    outbox: Arc<dyn Outbox>,
}

impl std::fmt::Debug for EventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventService").finish_non_exhaustive()
    }
}

impl EventService {
    /// A service over `log` and the `outbox` of the same store.
    pub fn new(log: Arc<dyn EventLog>, outbox: Arc<dyn Outbox>) -> Self {
        Self { log, outbox }
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
        let after = page.after.as_deref().map(after_event).transpose()?;
        let fetched = self.log.list(tenant, after, page.fetch_limit()).await?;
        Ok(page.finish(fetched, &filters, |e| e.id.0.to_string()))
    }

    /// One page of dead letters, oldest event first; only `tenant_id`'s when it is not
    /// empty.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed tenant id, page size or token; store failures.
    pub async fn list_dead_letters(
        &self,
        tenant_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<DeadLetter>, Error> {
        let tenant = if tenant_id.is_empty() {
            None
        } else {
            Some(TenantId::parse_field(tenant_id, "tenant_id")?)
        };
        let filters = format!("dead-letters;tenant={tenant_id}");
        let page = PageRequest::parse(page_size, page_token, &filters)?;
        let after = page.after.as_deref().map(after_event).transpose()?;
        let fetched = self
            .outbox
            .dead_letters(tenant, after, page.fetch_limit())
            .await?;
        Ok(page.finish(fetched, &filters, |d| d.event_id.0.to_string()))
    }

    /// Puts dead letters back in the outbox: those of `event_ids`, or every one of
    /// `tenant_id` (exactly one of the two is given). Returns the ids put back.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for neither or both, a malformed id, or more than
    /// [`MAX_RETRIED_DEAD_LETTERS`] ids; store failures.
    pub async fn retry_dead_letters(
        &self,
        event_ids: &[String],
        tenant_id: &str,
    ) -> Result<Vec<EventId>, Error> {
        let selection = match (event_ids.is_empty(), tenant_id.is_empty()) {
            (true, true) | (false, false) => {
                return Err(Error::invalid(
                    "event_ids",
                    "give either event_ids or tenant_id (exactly one)",
                ));
            }
            (true, false) => {
                DeadLetterSelection::Tenant(TenantId::parse_field(tenant_id, "tenant_id")?)
            }
            (false, true) => DeadLetterSelection::Events(event_ids_of(event_ids)?),
        };
        Ok(self.outbox.retry_dead_letters(&selection).await?)
    }
}

/// The event id a page token resumes after.
fn after_event(key: &str) -> Result<EventId, Error> {
    Uuid::parse_str(key).map(EventId).map_err(|_| {
        Error::invalid_because(
            Reason::PageTokenInvalid,
            "page_token",
            "is malformed; start again without it",
        )
    })
}

/// `ids` as event ids, each malformed one a violation of its own.
fn event_ids_of(ids: &[String]) -> Result<Vec<EventId>, Error> {
    if ids.len() > MAX_RETRIED_DEAD_LETTERS {
        return Err(Error::invalid(
            "event_ids",
            format!(
                "names {} events; at most {MAX_RETRIED_DEAD_LETTERS} at a time",
                ids.len()
            ),
        ));
    }
    let mut violations = Vec::new();
    let mut parsed = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        match Uuid::parse_str(id) {
            Ok(uuid) => parsed.push(EventId(uuid)),
            Err(_) => violations.push(FieldViolation {
                field: format!("event_ids[{i}]"),
                description: "is not an event id (a UUID)".into(),
            }),
        }
    }
    if violations.is_empty() {
        Ok(parsed)
    } else {
        Err(Error::invalid_fields(violations))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tenantd_domain::EventKind;
    use tenantd_domain::ports::{MockEventLog, MockOutbox};

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
        let svc = EventService::new(Arc::new(log), Arc::new(MockOutbox::new()));
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
        let svc = EventService::new(Arc::new(log), Arc::new(MockOutbox::new()));
        assert!(matches!(
            svc.list_tenant_events("nope", 0, "").await,
            Err(Error::InvalidArgument { violations: v, .. }) if v[0].field == "tenant_id"
        ));
    }

    fn retrying(outbox: MockOutbox) -> EventService {
        let mut log = MockEventLog::new();
        log.expect_list().never();
        EventService::new(Arc::new(log), Arc::new(outbox))
    }

    #[tokio::test]
    async fn a_retry_names_exactly_one_of_ids_and_tenant_and_each_malformed_id() {
        let mut outbox = MockOutbox::new();
        outbox.expect_retry_dead_letters().never();
        let svc = retrying(outbox);
        let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap().to_string();
        let id = Uuid::now_v7().to_string();
        for (ids, tenant) in [(vec![], ""), (vec![id.clone()], tenant.as_str())] {
            assert!(matches!(
                svc.retry_dead_letters(&ids, tenant).await,
                Err(Error::InvalidArgument { violations: v, .. }) if v[0].field == "event_ids"
            ));
        }
        let bad = vec![id.clone(), "nope".into(), String::new()];
        let Err(Error::InvalidArgument { violations, .. }) = svc.retry_dead_letters(&bad, "").await
        else {
            panic!("malformed ids are invalid");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["event_ids[1]", "event_ids[2]"]);
        let many = vec![id; MAX_RETRIED_DEAD_LETTERS + 1];
        assert!(matches!(
            svc.retry_dead_letters(&many, "").await,
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[tokio::test]
    async fn a_retry_of_ids_or_a_tenant_reaches_the_outbox_as_parsed() {
        let (first, second) = (EventId(Uuid::now_v7()), EventId(Uuid::now_v7()));
        let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        let mut outbox = MockOutbox::new();
        outbox
            .expect_retry_dead_letters()
            .withf(move |s| *s == DeadLetterSelection::Events(vec![first, second]))
            .times(1)
            .returning(move |_| Ok(vec![second]));
        outbox
            .expect_retry_dead_letters()
            .withf(move |s| *s == DeadLetterSelection::Tenant(tenant))
            .times(1)
            .returning(|_| Ok(Vec::new()));
        let svc = retrying(outbox);
        let ids = [first.0.to_string(), second.0.to_string()];
        assert_eq!(
            svc.retry_dead_letters(&ids, "").await.unwrap(),
            vec![second]
        );
        assert!(
            svc.retry_dead_letters(&[], &tenant.to_string())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
