//! [`TenantRepository`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{IdempotencyRecord, TenantQuery, TenantRepository};
use tenantd_domain::provisioning::ProvisioningRun;
use tenantd_domain::{Event, RepoError, Tenant, TenantId, TenantStatus};

use super::MemoryStore;
use super::store::{StoredRecord, StoredRun, after_key, shared};

/// Idempotency records are swept of expired ones every this many inserts, so the map
/// stays bounded by the requests of one TTL.
const SWEEP_EVERY: usize = 1024;

#[async_trait]
impl TenantRepository for MemoryStore {
    async fn create(
        &self,
        tenant: &Tenant,
        run: &ProvisioningRun,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError> {
        let stored = Arc::new(self.conceal(tenant));
        let record = idempotency.map(|mut record| {
            let concealed = self.conceal(&record.response);
            record.response = concealed.tenant;
            Arc::new(StoredRecord {
                record,
                sealed: concealed.sealed,
            })
        });
        let run = StoredRun {
            run: Arc::new(run.clone()),
            lease: None,
        };
        let events = shared(events);
        let now = tenant.created_at();
        let mut state = self.lock();
        if let Some(record) = &record
            && state
                .idempotency
                .get(&record.record.request_id)
                .is_some_and(|held| held.record.expires_at > now)
        {
            return Err(RepoError::IdempotencyKeyTaken);
        }
        if state.slugs.contains(tenant.slug().as_str()) {
            return Err(RepoError::SlugTaken(tenant.slug().to_string()));
        }
        if state.tenants.contains_key(&tenant.id()) {
            return Err(RepoError::Internal("duplicate tenant id".into()));
        }
        state.slugs.insert(tenant.slug().as_str().to_owned());
        state.tenants.insert(tenant.id(), stored);
        state.latest_run.insert(tenant.id(), run.run.id);
        state.put_run(run);
        state.append(events);
        if let Some(record) = record {
            if state.idempotency.len() % SWEEP_EVERY == SWEEP_EVERY - 1 {
                state.idempotency.retain(|_, r| r.record.expires_at > now);
            }
            state
                .idempotency
                .insert(record.record.request_id.clone(), record);
        }
        Ok(())
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let view = {
            let state = self.lock();
            state.tenants.get(&id).map(|t| state.tenant_view(t))
        };
        view.map(|v| self.reveal(&v)).transpose()
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let concealed = Arc::new(self.conceal(tenant));
        let events = shared(events);
        let mut state = self.lock();
        let stored = state
            .tenants
            .get_mut(&tenant.id())
            .ok_or(RepoError::NotFound)?;
        if stored.tenant.version() != expected_version {
            return Err(RepoError::VersionConflict);
        }
        *stored = concealed;
        state.append(events);
        Ok(())
    }

    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError> {
        let email = query.contact_email.as_ref();
        let index = email.and_then(|e| self.blind_index(e));
        let views: Vec<_> = {
            let state = self.lock();
            after_key(&state.tenants, query.after)
                // Tombstones are never listed; tenants on their way out only on request.
                .filter(|s| s.tenant.status() != TenantStatus::Purged)
                .filter(|s| {
                    query.include_deleted
                        || !matches!(
                            s.tenant.status(),
                            TenantStatus::Deleted | TenantStatus::Purging
                        )
                })
                .filter(|s| query.status.is_none_or(|st| s.tenant.status() == st))
                .filter(|s| {
                    query
                        .plan_id
                        .as_ref()
                        .is_none_or(|p| s.tenant.plan_id() == p)
                })
                .filter(|s| s.tenant.labels().matches(&query.labels))
                .filter(|s| {
                    query
                        .slug_prefix
                        .as_deref()
                        .is_none_or(|p| s.tenant.slug().as_str().starts_with(p))
                })
                .filter(|s| match (email, index) {
                    (None, _) => true,
                    (Some(_), Some(index)) => s.sealed.as_ref().is_some_and(|x| x.index == index),
                    (Some(e), None) => s
                        .tenant
                        .contact_email()
                        .is_some_and(|own| own.normalized() == e.normalized()),
                })
                .take(query.limit)
                .map(|s| state.tenant_view(s))
                .collect()
        };
        views.iter().map(|v| self.reveal(v)).collect()
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let stored = self
            .lock()
            .idempotency
            .get(request_id)
            .filter(|r| r.record.expires_at > now)
            .cloned();
        let Some(stored) = stored else {
            return Ok(None);
        };
        let response = self.open(&stored.record.response, stored.sealed.as_ref())?;
        Ok(Some(IdempotencyRecord {
            request_id: stored.record.request_id.clone(),
            fingerprint: stored.record.fingerprint.clone(),
            response,
            expires_at: stored.record.expires_at,
        }))
    }
}
