//! [`InitialKeyStore`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{InitialKey, InitialKeyOutcome, InitialKeyStore};
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, TenantId};

use super::MemoryStore;
use super::store::shared;

#[async_trait]
impl InitialKeyStore for MemoryStore {
    async fn create_initial(
        &self,
        key: &ApiKey,
        sealed_secret: &[u8],
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<InitialKeyOutcome, RepoError> {
        let initial = InitialKey {
            key_id: key.id,
            sealed_secret: Some(sealed_secret.to_vec()),
        };
        let (key, events) = (Arc::new(key.clone()), shared(events));
        let mut state = self.lock();
        let present = state
            .initial_keys
            .get(&key.tenant_id)
            .is_some_and(|initial| {
                state
                    .api_keys
                    .get(&initial.key_id)
                    .is_some_and(|k| k.revoked_at.is_none())
            });
        if present {
            return Ok(InitialKeyOutcome::AlreadyPresent);
        }
        let tenant = key.tenant_id;
        state.insert_key(key, events, max_active, now)?;
        state.initial_keys.insert(tenant, initial);
        Ok(InitialKeyOutcome::Created)
    }

    async fn initial(&self, tenant: TenantId) -> Result<Option<InitialKey>, RepoError> {
        Ok(self.lock().initial_keys.get(&tenant).cloned())
    }

    async fn take_initial_secret(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(ApiKeyId, Vec<u8>)>, RepoError> {
        let mut state = self.lock();
        Ok(state.initial_keys.get_mut(&tenant).and_then(|initial| {
            initial
                .sealed_secret
                .take()
                .map(|sealed| (initial.key_id, sealed))
        }))
    }
}
