//! [`ApiKeyRepository`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::ApiKeyRepository;
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, TenantId};

use super::MemoryStore;
use super::store::{after_key, shared};

#[async_trait]
impl ApiKeyRepository for MemoryStore {
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let (key, events) = (Arc::new(key.clone()), shared(events));
        self.lock().insert_key(key, events, max_active, now)
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        let key = self.lock().api_keys.get(&id).cloned();
        Ok(key.map(|k| ApiKey::clone(&k)))
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let keys: Vec<Arc<ApiKey>> = {
            let state = self.lock();
            after_key(&state.api_keys, after)
                .filter(|k| k.tenant_id == tenant)
                .filter(|k| active_at.is_none_or(|at| k.is_active(at)))
                .take(limit)
                .cloned()
                .collect()
        };
        Ok(keys.iter().map(|k| ApiKey::clone(k)).collect())
    }

    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError> {
        let events = shared(events);
        let mut state = self.lock();
        let key = state.api_keys.get_mut(&id).ok_or(RepoError::NotFound)?;
        if let Some(revoked_at) = key.revoked_at {
            return Ok(revoked_at);
        }
        // Copy-on-write: only a key some reader still holds is copied.
        Arc::make_mut(key).revoked_at = Some(at);
        state.append(events);
        Ok(at)
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        let mut state = self.lock();
        if let Some(key) = state.api_keys.get_mut(&id) {
            // Copy-on-write: only a key some reader still holds is copied.
            Arc::make_mut(key).last_used_at = Some(at);
        }
        Ok(())
    }
}
