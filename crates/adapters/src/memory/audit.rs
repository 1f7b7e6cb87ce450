//! [`AuditLog`] in memory, bounded: the oldest records go first.

use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use tenantd_domain::ports::AuditLog;
use tenantd_domain::{AuditQuery, AuditRecord, RepoError};

use super::MemoryStore;

/// Most audit records the in-memory store keeps.
const MAX_AUDIT_RECORDS: usize = 100_000;

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError> {
        let records: Vec<Arc<AuditRecord>> = records.iter().cloned().map(Arc::new).collect();
        let mut state = self.lock();
        for record in records {
            state.audit.insert(record.id, record);
        }
        while state.audit.len() > MAX_AUDIT_RECORDS {
            state.audit.pop_first();
        }
        Ok(())
    }

    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError> {
        let end = query.before.map_or(Bound::Unbounded, Bound::Excluded);
        let records: Vec<Arc<AuditRecord>> = {
            let state = self.lock();
            state
                .audit
                .range((Bound::Unbounded, end))
                .rev()
                .map(|(_, r)| r)
                .filter(|r| query.matches(r))
                .take(query.limit)
                .cloned()
                .collect()
        };
        Ok(records.iter().map(|r| AuditRecord::clone(r)).collect())
    }
}
