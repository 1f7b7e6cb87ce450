//! [`ExportRepository`] in memory: exports with their leases, claimed due-first.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::export::{Export, ExportId, ExportProgress};
use tenantd_domain::ports::{ClaimedExport, ExportRepository, Lease};
use tenantd_domain::{RepoError, TenantId};

use super::store::StoredExport;
use super::{MemoryStore, leases};

#[async_trait]
impl ExportRepository for MemoryStore {
    async fn create(&self, export: &Export) -> Result<(), RepoError> {
        let stored = StoredExport {
            export: Arc::new(export.clone()),
            lease: None,
        };
        let mut state = self.lock();
        if !state.tenants.contains_key(&export.tenant_id) {
            return Err(RepoError::NotFound);
        }
        state.exports.insert(export.id, stored);
        Ok(())
    }

    async fn get(&self, id: ExportId) -> Result<Option<Export>, RepoError> {
        let export = self.lock().exports.get(&id).map(|s| s.export.clone());
        Ok(export.map(|e| Export::clone(&e)))
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedExport>, RepoError> {
        let lease = leases::lease(owner, now, lease_for);
        let mut state = self.lock();
        let claimed = leases::claim_due(&mut state.exports, now, &lease);
        Ok(claimed.map(|stored| ClaimedExport {
            export: Export::clone(&stored.export),
            lease,
        }))
    }

    async fn renew(
        &self,
        id: ExportId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        Ok(leases::renew(
            state.exports.get_mut(&id),
            version,
            lease,
            until,
        ))
    }

    async fn progress(
        &self,
        id: ExportId,
        lease: &Lease,
        progress: ExportProgress,
    ) -> Result<bool, RepoError> {
        let mut state = self.lock();
        let Some(stored) = state.exports.get_mut(&id) else {
            return Ok(false);
        };
        if stored.lease.as_ref().is_none_or(|h| h.token != lease.token) {
            return Ok(false);
        }
        let mut export = Export::clone(&stored.export);
        export.progress = progress;
        stored.export = Arc::new(export);
        Ok(true)
    }

    async fn release(&self, id: ExportId, lease: &Lease) -> Result<(), RepoError> {
        leases::release(self.lock().exports.get_mut(&id), lease);
        Ok(())
    }

    async fn save(
        &self,
        export: &Export,
        expected_version: u64,
        lease: &Lease,
        renew_until: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let changed = Arc::new(export.clone());
        let mut state = self.lock();
        let stored = state
            .exports
            .get_mut(&export.id)
            .ok_or(RepoError::NotFound)?;
        let Some(held) = stored.lease.as_mut().filter(|h| h.token == lease.token) else {
            return Err(RepoError::LeaseLost);
        };
        if stored.export.version != expected_version {
            return Err(RepoError::VersionConflict);
        }
        held.expires_at = renew_until;
        stored.export = changed;
        Ok(())
    }

    async fn of_tenant(&self, tenant: TenantId) -> Result<Vec<Export>, RepoError> {
        let state = self.lock();
        Ok(state
            .exports
            .values()
            .filter(|s| s.export.tenant_id == tenant)
            .map(|s| Export::clone(&s.export))
            .collect())
    }

    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Export>, RepoError> {
        let state = self.lock();
        let mut expired: Vec<Export> = state
            .exports
            .values()
            .filter(|s| s.export.expires_at < now)
            .map(|s| Export::clone(&s.export))
            .collect();
        expired.sort_by_key(|e| e.expires_at);
        expired.truncate(limit);
        Ok(expired)
    }

    async fn delete(&self, id: ExportId) -> Result<(), RepoError> {
        self.lock().exports.remove(&id);
        Ok(())
    }
}
