//! [`ProvisioningRepository`] in memory: runs with their leases, claimed due-first.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{ClaimedRun, Lease, ProvisioningRepository, RunWrite};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, RunState};
use tenantd_domain::{RepoError, TenantId};

use super::store::{StoredRun, shared};
use super::{MemoryStore, leases};

#[async_trait]
impl ProvisioningRepository for MemoryStore {
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError> {
        let run = self.lock().latest(tenant).cloned();
        Ok(run.map(|r| ProvisioningRun::clone(&r)))
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError> {
        let lease = leases::lease(owner, now, lease_for);
        let claimed = {
            let mut state = self.lock();
            // The run due longest ago that no live lease holds.
            let next = state
                .due
                .iter()
                .take_while(|(due, _)| *due <= now)
                .map(|(_, id)| *id)
                .find(|id| {
                    state.runs.get(id).is_some_and(|stored| {
                        stored.lease.as_ref().is_none_or(|l| l.expires_at <= now)
                    })
                });
            next.and_then(|id| state.runs.get_mut(&id)).map(|stored| {
                stored.lease = Some(lease.clone());
                stored.run.clone()
            })
        };
        Ok(claimed.map(|run| ClaimedRun {
            run: ProvisioningRun::clone(&run),
            lease,
        }))
    }

    async fn renew(
        &self,
        run: RunId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        Ok(leases::renew(
            state.runs.get_mut(&run),
            version,
            lease,
            until,
        ))
    }

    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError> {
        leases::release(self.lock().runs.get_mut(&run), lease);
        Ok(())
    }

    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError> {
        let run = Arc::new(write.run.clone());
        let tenant = write
            .tenant
            .map(|(tenant, expected)| (Arc::new(self.conceal(tenant)), expected));
        let events = shared(write.events);
        let mut state = self.lock();
        let stored = state.runs.get(&write.run.id).ok_or(RepoError::NotFound)?;
        if let Some(lease) = write.lease
            && stored.lease.as_ref().is_none_or(|h| h.token != lease.token)
        {
            return Err(RepoError::LeaseLost);
        }
        if stored.run.version != write.expected_version {
            return Err(RepoError::VersionConflict);
        }
        // Check everything before the first write: the change lands whole or not at all.
        if let Some((tenant, expected)) = &tenant {
            let current = state
                .tenants
                .get(&tenant.tenant.id())
                .ok_or(RepoError::NotFound)?;
            if current.tenant.version() != *expected {
                return Err(RepoError::VersionConflict);
            }
        }
        let mut lease = stored.lease.clone();
        if let (Some(held), Some(_), Some(until)) = (lease.as_mut(), write.lease, write.renew_until)
        {
            held.expires_at = until;
        }
        state.put_run(StoredRun { run, lease });
        if let Some((tenant, _)) = tenant {
            state.tenants.insert(tenant.tenant.id(), tenant);
        }
        state.append(events);
        Ok(())
    }

    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError> {
        let state = self.lock();
        Ok(state
            .runs
            .values()
            .filter(|s| s.run.state == RunState::Running && s.run.deadline < now)
            .map(|s| s.run.tenant_id)
            .take(limit)
            .collect())
    }

    async fn running(&self) -> Result<u64, RepoError> {
        let state = self.lock();
        Ok(state
            .runs
            .values()
            .filter(|s| s.run.state == RunState::Running)
            .count() as u64)
    }
}
