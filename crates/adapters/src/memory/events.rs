//! [`EventLog`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use tenantd_domain::ports::EventLog;
use tenantd_domain::{Event, EventId, RepoError, TenantId};

use super::MemoryStore;
use super::store::after_key;

#[async_trait]
impl EventLog for MemoryStore {
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let events: Vec<Arc<Event>> = {
            let state = self.lock();
            after_key(&state.events, after)
                .filter(|e| tenant.is_none_or(|t| e.subject.tenant() == Some(t)))
                .take(limit)
                .cloned()
                .collect()
        };
        Ok(events.iter().map(|e| Event::clone(e)).collect())
    }
}
