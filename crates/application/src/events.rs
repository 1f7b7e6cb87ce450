//! EventService use cases: reading the lifecycle event log.

use std::sync::Arc;

use tenantd_domain::ports::EventLog;
use tenantd_domain::{Error, Event, EventId, TenantId};
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
                Error::invalid("page_token", "is malformed; start again without it")
            })?)),
        };
        let fetched = self.log.list(tenant, after, page.fetch_limit()).await?;
        Ok(page.finish(fetched, &filters, |e| e.id.0.to_string()))
    }
}
