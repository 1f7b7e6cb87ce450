//! [`DataKeyRepository`] in memory: a destroyed key stays as `None`, never made again.

use async_trait::async_trait;
use tenantd_domain::ports::{DataKeyRepository, WrappedDataKey};
use tenantd_domain::{Reason, RepoError, TenantId};

use super::MemoryStore;

#[async_trait]
impl DataKeyRepository for MemoryStore {
    async fn get_or_create(
        &self,
        tenant: TenantId,
        fresh: WrappedDataKey,
    ) -> Result<WrappedDataKey, RepoError> {
        let mut state = self.lock();
        if !state.tenants.contains_key(&tenant) {
            return Err(RepoError::NotFound);
        }
        state
            .data_keys
            .entry(tenant)
            .or_insert(Some(fresh))
            .clone()
            .ok_or_else(|| {
                RepoError::Precondition(
                    Reason::TenantPurged,
                    format!("the data key of tenant {tenant} was destroyed by its purge"),
                )
            })
    }

    async fn get(&self, tenant: TenantId) -> Result<Option<WrappedDataKey>, RepoError> {
        Ok(self.lock().data_keys.get(&tenant).cloned().flatten())
    }

    async fn destroy(&self, tenant: TenantId) -> Result<bool, RepoError> {
        let mut state = self.lock();
        Ok(state
            .data_keys
            .get_mut(&tenant)
            .and_then(Option::take)
            .is_some())
    }

    async fn wrapped_by_other(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<(TenantId, WrappedDataKey)>, RepoError> {
        let mut keys: Vec<_> = self
            .lock()
            .data_keys
            .iter()
            .filter_map(|(tenant, key)| Some((*tenant, key.clone()?)))
            .filter(|(_, key)| key.key_id != key_id)
            .collect();
        keys.sort_by_key(|(tenant, _)| *tenant);
        keys.truncate(limit);
        Ok(keys)
    }

    async fn replace(
        &self,
        tenant: TenantId,
        old: &WrappedDataKey,
        new: &WrappedDataKey,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        match state.data_keys.get_mut(&tenant) {
            Some(Some(key)) if key == old => {
                *key = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
