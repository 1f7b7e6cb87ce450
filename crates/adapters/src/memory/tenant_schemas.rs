//! [`TenantSchemaRepository`] in memory.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantd_domain::ports::{SchemaQuery, TenantSchemaRepository};
use tenantd_domain::tenant_schema::TenantSchema;
use tenantd_domain::{RepoError, TenantId};

use super::MemoryStore;
use super::store::{StoredSchema, after_key};

#[async_trait]
impl TenantSchemaRepository for MemoryStore {
    async fn record(
        &self,
        tenant: TenantId,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let mut state = self.lock();
        let schema = state.schemas.entry(tenant).or_insert(StoredSchema {
            version,
            migrated_at: at,
            last_error: None,
        });
        if schema.version != version {
            schema.version = version;
            schema.migrated_at = at;
        }
        schema.last_error = None;
        Ok(())
    }

    async fn forget(&self, tenant: TenantId) -> Result<(), RepoError> {
        self.lock().schemas.remove(&tenant);
        Ok(())
    }

    async fn list(&self, query: &SchemaQuery) -> Result<Vec<TenantSchema>, RepoError> {
        let state = self.lock();
        Ok(state
            .schemas
            .range((
                query.after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .filter(|(_, s)| query.behind_version.is_none_or(|v| s.version < v))
            .filter_map(|(id, s)| {
                let tenant = state.tenants.get(id)?;
                Some(TenantSchema {
                    tenant_id: *id,
                    placement: tenant.tenant.placement().cloned(),
                    version: s.version,
                    migrated_at: Some(s.migrated_at),
                    last_error: s.last_error.clone(),
                })
            })
            .take(query.page_size)
            .collect())
    }

    async fn versions(&self) -> Result<Vec<(u32, u64)>, RepoError> {
        let state = self.lock();
        let mut versions = BTreeMap::<u32, u64>::new();
        for schema in after_key(&state.schemas, None) {
            *versions.entry(schema.version).or_default() += 1;
        }
        Ok(versions.into_iter().collect())
    }
}
