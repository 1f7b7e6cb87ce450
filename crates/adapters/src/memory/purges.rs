//! [`PurgeRepository`] in memory: purges with their leases, claimed due-first.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{ClaimedPurge, Lease, PurgeRepository, PurgeWrite};
use tenantd_domain::purge::Purge;
use tenantd_domain::{Event, RepoError, Tenant, TenantId, TenantStatus};

use super::store::{StoredPurge, shared};
use super::{MemoryStore, leases};

#[async_trait]
impl PurgeRepository for MemoryStore {
    async fn start(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        purge: &Purge,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let concealed = Arc::new(self.conceal(tenant));
        let purge = StoredPurge {
            purge: Arc::new(purge.clone()),
            lease: None,
        };
        let events = shared(events);
        let mut state = self.lock();
        let stored = state.tenants.get(&tenant.id()).ok_or(RepoError::NotFound)?;
        if stored.tenant.version() != expected_version || state.purges.contains_key(&tenant.id()) {
            return Err(RepoError::VersionConflict);
        }
        state.tenants.insert(tenant.id(), concealed);
        state.purges.insert(tenant.id(), purge);
        state.append(events);
        Ok(())
    }

    async fn get(&self, tenant: TenantId) -> Result<Option<Purge>, RepoError> {
        let purge = self.lock().purges.get(&tenant).map(|s| s.purge.clone());
        Ok(purge.map(|p| Purge::clone(&p)))
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedPurge>, RepoError> {
        let lease = leases::lease(owner, now, lease_for);
        let mut state = self.lock();
        let claimed = leases::claim_due(&mut state.purges, now, &lease);
        Ok(claimed.map(|stored| ClaimedPurge {
            purge: Purge::clone(&stored.purge),
            lease,
        }))
    }

    async fn renew(
        &self,
        tenant: TenantId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        Ok(leases::renew(
            state.purges.get_mut(&tenant),
            version,
            lease,
            until,
        ))
    }

    async fn release(&self, tenant: TenantId, lease: &Lease) -> Result<(), RepoError> {
        leases::release(self.lock().purges.get_mut(&tenant), lease);
        Ok(())
    }

    async fn save(&self, write: PurgeWrite<'_>) -> Result<(), RepoError> {
        let purge = Arc::new(write.purge.clone());
        let tenant = write
            .tenant
            .map(|(tenant, expected)| (Arc::new(self.conceal(tenant)), expected));
        let events = shared(write.events);
        let mut state = self.lock();
        let id = write.purge.tenant_id;
        let stored = state.purges.get(&id).ok_or(RepoError::NotFound)?;
        if stored
            .lease
            .as_ref()
            .is_none_or(|h| h.token != write.lease.token)
        {
            return Err(RepoError::LeaseLost);
        }
        if stored.purge.version != write.expected_version {
            return Err(RepoError::VersionConflict);
        }
        // Check everything before the first write: the change lands whole or not at all.
        if let Some((tenant, expected)) = &tenant {
            let current = state.tenants.get(&id).ok_or(RepoError::NotFound)?;
            if tenant.tenant.id() != id || current.tenant.version() != *expected {
                return Err(RepoError::VersionConflict);
            }
        }
        let mut lease = stored.lease.clone();
        if let Some(held) = lease.as_mut() {
            held.expires_at = write.renew_until;
        }
        state.purges.insert(id, StoredPurge { purge, lease });
        if let Some((tenant, _)) = tenant {
            state.tenants.insert(id, tenant);
        }
        state.append(events);
        Ok(())
    }

    async fn purgeable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TenantId>, RepoError> {
        let state = self.lock();
        let mut due: Vec<(DateTime<Utc>, TenantId)> = state
            .tenants
            .values()
            .map(|s| &s.tenant)
            .filter(|t| t.status() == TenantStatus::Deleted && t.legal_hold().is_none())
            .filter_map(|t| t.purge_at().filter(|at| *at <= now).map(|at| (at, t.id())))
            .collect();
        due.sort_unstable();
        Ok(due.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    async fn forget_requests(&self, tenant: TenantId) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let before = state.idempotency.len();
        state
            .idempotency
            .retain(|_, r| r.record.response.id() != tenant);
        Ok((before - state.idempotency.len()) as u64)
    }

    async fn release_slugs(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let freed: Vec<(TenantId, String)> = state
            .tenants
            .values()
            .map(|s| &s.tenant)
            .filter(|t| t.purged_at().is_some_and(|at| at < before))
            .filter(|t| !state.released_slugs.contains(&t.id()))
            .map(|t| (t.id(), t.slug().as_str().to_owned()))
            .collect();
        for (id, slug) in &freed {
            state.slugs.remove(slug);
            state.released_slugs.insert(*id);
        }
        Ok(freed.len() as u64)
    }

    async fn running(&self) -> Result<u64, RepoError> {
        let state = self.lock();
        Ok(state.purges.values().filter(|s| !s.purge.is_done()).count() as u64)
    }
}
