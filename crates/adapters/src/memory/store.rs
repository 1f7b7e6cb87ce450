//! Tenants, their event log and idempotency records in one mutex-guarded state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    ApiKeyRepository, AuditLog, EventLog, IdempotencyRecord, TenantQuery, TenantRepository,
};
use tenantd_domain::{
    ApiKey, ApiKeyId, AuditQuery, AuditRecord, Event, EventId, RepoError, Tenant, TenantId,
    TenantStatus,
};

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<TenantId, Tenant>,
    /// Keyed by event id: UUIDv7, so iteration is append order.
    events: BTreeMap<EventId, Event>,
    idempotency: HashMap<String, IdempotencyRecord>,
    api_keys: BTreeMap<ApiKeyId, ApiKey>,
    /// Keyed by id (UUIDv7): time order. Bounded, oldest dropped first: the embedded mode
    /// keeps no more history than it can hold in memory.
    audit: BTreeMap<uuid::Uuid, AuditRecord>,
}

/// Most audit records the in-memory store keeps.
const MAX_AUDIT_RECORDS: usize = 100_000;

/// The in-memory tenant store; cheap to clone (clones share the state).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: every change
        // is validated before the first write.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn append(state: &mut State, events: &[Event]) {
    for event in events {
        state.events.insert(event.id, event.clone());
    }
}

#[async_trait]
impl TenantRepository for MemoryStore {
    async fn create(
        &self,
        tenant: &Tenant,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        if let Some(record) = &idempotency
            && state
                .idempotency
                .get(&record.request_id)
                .is_some_and(|held| held.expires_at > tenant.created_at())
        {
            return Err(RepoError::IdempotencyKeyTaken);
        }
        if state.tenants.values().any(|t| t.slug() == tenant.slug()) {
            return Err(RepoError::SlugTaken(tenant.slug().to_string()));
        }
        if state.tenants.contains_key(&tenant.id()) {
            return Err(RepoError::Internal("duplicate tenant id".into()));
        }
        state.tenants.insert(tenant.id(), tenant.clone());
        append(&mut state, events);
        if let Some(record) = idempotency {
            // Expired records are forgotten now and then, so the map stays bounded by the
            // requests of one TTL.
            if state.idempotency.len() % 1024 == 1023 {
                let now = tenant.created_at();
                state.idempotency.retain(|_, r| r.expires_at > now);
            }
            state.idempotency.insert(record.request_id.clone(), record);
        }
        Ok(())
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        Ok(self.lock().tenants.get(&id).cloned())
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        let stored = state
            .tenants
            .get_mut(&tenant.id())
            .ok_or(RepoError::NotFound)?;
        if stored.version() != expected_version {
            return Err(RepoError::VersionConflict);
        }
        *stored = tenant.clone();
        append(&mut state, events);
        Ok(())
    }

    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError> {
        let state = self.lock();
        let email = query
            .contact_email
            .as_ref()
            .map(tenantd_domain::ContactEmail::normalized);
        let start = query
            .after
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .tenants
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, t)| t)
            .filter(|t| query.include_deleted || t.status() != TenantStatus::Deleted)
            .filter(|t| query.status.is_none_or(|s| t.status() == s))
            .filter(|t| query.plan_id.as_ref().is_none_or(|p| t.plan_id() == p))
            .filter(|t| t.labels().matches(&query.labels))
            .filter(|t| {
                query
                    .slug_prefix
                    .as_deref()
                    .is_none_or(|p| t.slug().as_str().starts_with(p))
            })
            .filter(|t| {
                email
                    .as_ref()
                    .is_none_or(|e| &t.contact_email().normalized() == e)
            })
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        Ok(self
            .lock()
            .idempotency
            .get(request_id)
            .filter(|r| r.expires_at > now)
            .cloned())
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let state = self.lock();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .events
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, e)| e)
            .filter(|e| tenant.is_none_or(|t| e.tenant_id == t))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ApiKeyRepository for MemoryStore {
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        match state.tenants.get(&key.tenant_id) {
            None => return Err(RepoError::NotFound),
            Some(t) if t.status() == TenantStatus::Deleted => {
                return Err(RepoError::Precondition(
                    "a deleted tenant cannot get API keys".into(),
                ));
            }
            Some(_) => {}
        }
        let active = state
            .api_keys
            .values()
            .filter(|k| k.tenant_id == key.tenant_id && k.is_active(now))
            .count();
        if active >= usize::try_from(max_active).unwrap_or(usize::MAX) {
            return Err(RepoError::LimitReached);
        }
        state.api_keys.insert(key.id, key.clone());
        append(&mut state, events);
        Ok(())
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        Ok(self.lock().api_keys.get(&id).cloned())
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let state = self.lock();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .api_keys
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, k)| k)
            .filter(|k| k.tenant_id == tenant)
            .filter(|k| active_at.is_none_or(|at| k.is_active(at)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError> {
        let mut state = self.lock();
        let key = state.api_keys.get_mut(&id).ok_or(RepoError::NotFound)?;
        if let Some(revoked_at) = key.revoked_at {
            return Ok(revoked_at);
        }
        key.revoked_at = Some(at);
        append(&mut state, events);
        Ok(at)
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        if let Some(key) = self.lock().api_keys.get_mut(&id) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError> {
        let mut state = self.lock();
        for record in records {
            state.audit.insert(record.id, record.clone());
        }
        while state.audit.len() > MAX_AUDIT_RECORDS {
            state.audit.pop_first();
        }
        Ok(())
    }

    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError> {
        let state = self.lock();
        let end = query
            .before
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(state
            .audit
            .range((std::ops::Bound::Unbounded, end))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Stores;

    async fn stores() -> Stores {
        let store = MemoryStore::new();
        Stores {
            tenants: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            events: Arc::new(store),
            plans: Arc::new(crate::memory::MemoryPlanRepository::default()),
            guard: None,
        }
    }

    crate::repository_contract_tests!(stores);
}
