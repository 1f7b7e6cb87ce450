//! [`Retention`] in memory: published events and audit records past their retention go,
//! except those of tenants under legal hold.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{RetainedTable, Retention};
use tenantd_domain::{RepoError, TenantId};

use super::MemoryStore;

#[async_trait]
impl Retention for MemoryStore {
    async fn trim(
        &self,
        table: RetainedTable,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, RepoError> {
        let mut state = self.lock();
        let held = |tenant: Option<TenantId>| {
            tenant.is_some_and(|id| {
                state
                    .tenants
                    .get(&id)
                    .is_some_and(|t| t.tenant.legal_hold().is_some())
            })
        };
        let doomed: Vec<uuid::Uuid> = match table {
            RetainedTable::Events => state
                .events
                .values()
                .filter(|e| {
                    e.occurred_at < before
                        && !state.unpublished.contains_key(&e.id)
                        && !held(e.subject.tenant())
                })
                .take(limit)
                .map(|e| e.id.0)
                .collect(),
            RetainedTable::Audit => state
                .audit
                .values()
                .filter(|r| r.at < before && !held(r.tenant_id))
                .take(limit)
                .map(|r| r.id)
                .collect(),
        };
        for id in &doomed {
            match table {
                RetainedTable::Events => {
                    state.events.remove(&tenantd_domain::EventId(*id));
                }
                RetainedTable::Audit => {
                    state.audit.remove(id);
                }
            }
        }
        Ok(doomed.len() as u64)
    }

    async fn oldest(&self, table: RetainedTable) -> Result<Option<DateTime<Utc>>, RepoError> {
        let state = self.lock();
        Ok(match table {
            RetainedTable::Events => state
                .events
                .values()
                .filter(|e| !state.unpublished.contains_key(&e.id))
                .map(|e| e.occurred_at)
                .min(),
            RetainedTable::Audit => state.audit.values().map(|r| r.at).min(),
        })
    }
}
