//! [`DataKeyRepository`] on PostgreSQL: `tenant_data_keys`, one row per tenant. A destroyed
//! key keeps its row (no envelope, `data_key_destroyed_at` set), so it is never made again
//! and the purge has its record.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgConnection;
use tenantd_domain::ports::{DataKeyRepository, WrappedDataKey};
use tenantd_domain::{Reason, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;

/// A stored key: its envelope and wrapping key id, both NULL once destroyed.
type KeyColumns = (Option<Vec<u8>>, Option<String>);

/// What a second look finds: whether the tenant exists, its key's columns, and whether the
/// key was destroyed.
type Seen = (bool, Option<Vec<u8>>, Option<String>, bool);

fn key_of((envelope, key_id): KeyColumns) -> Option<WrappedDataKey> {
    Some(WrappedDataKey {
        envelope: envelope?,
        key_id: key_id?,
    })
}

fn destroyed(tenant: TenantId) -> RepoError {
    RepoError::Precondition(
        Reason::TenantPurged,
        format!("the data key of tenant {tenant} was destroyed by its purge"),
    )
}

/// `tenant`'s data key on `conn` (in a transaction or not), `fresh` stored as it when it
/// has none yet: [`DataKeyRepository::get_or_create`], for the writes that seal with it.
///
/// # Errors
/// As [`DataKeyRepository::get_or_create`].
pub(crate) async fn get_or_create(
    conn: &mut PgConnection,
    tenant: TenantId,
    fresh: WrappedDataKey,
) -> Result<WrappedDataKey, RepoError> {
    // The insert's row when it won; else the row that was there. A concurrent insert
    // committed while this statement waited on it is not in this statement's snapshot, so
    // a miss is read again by a statement of its own.
    for _ in 0..3 {
        let made: Option<KeyColumns> = sqlx::query_as(
            "WITH made AS (INSERT INTO tenant_data_keys \
                 (tenant_id, data_key_sealed, data_key_id, data_key_created_at) \
                 SELECT tenant_id, $2, $3, $4 FROM tenants WHERE tenant_id = $1 \
                 ON CONFLICT (tenant_id) DO NOTHING \
                 RETURNING data_key_sealed, data_key_id) \
             SELECT data_key_sealed, data_key_id FROM made \
             UNION ALL \
             SELECT data_key_sealed, data_key_id FROM tenant_data_keys \
             WHERE tenant_id = $1 LIMIT 1",
        )
        .bind(tenant.as_uuid())
        .bind(&fresh.envelope)
        .bind(&fresh.key_id)
        .bind(Utc::now())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        if let Some(columns) = made {
            return key_of(columns).ok_or_else(|| destroyed(tenant));
        }
        let (exists, envelope, key_id, gone): Seen = sqlx::query_as(
            "SELECT t.tenant_id IS NOT NULL, k.data_key_sealed, k.data_key_id, \
                 k.data_key_destroyed_at IS NOT NULL \
             FROM (SELECT $1::uuid AS id) AS wanted \
             LEFT JOIN tenants t ON t.tenant_id = wanted.id \
             LEFT JOIN tenant_data_keys k ON k.tenant_id = wanted.id",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if !exists {
            return Err(RepoError::NotFound);
        }
        if gone {
            return Err(destroyed(tenant));
        }
        if let Some(key) = key_of((envelope, key_id)) {
            return Ok(key);
        }
        // No key at all: the insert that held this one back was rolled back; try again.
    }
    Err(RepoError::Unavailable(format!(
        "the data key of tenant {tenant} kept changing"
    )))
}

#[async_trait]
impl DataKeyRepository for PgStore {
    async fn get_or_create(
        &self,
        tenant: TenantId,
        fresh: WrappedDataKey,
    ) -> Result<WrappedDataKey, RepoError> {
        self.in_tx(async |tx| get_or_create(tx, tenant, fresh).await)
            .await
    }

    async fn get(&self, tenant: TenantId) -> Result<Option<WrappedDataKey>, RepoError> {
        let stored: Option<KeyColumns> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT data_key_sealed, data_key_id FROM tenant_data_keys \
                     WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(stored.and_then(key_of))
    }

    async fn destroy(&self, tenant: TenantId) -> Result<bool, RepoError> {
        let destroyed = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenant_data_keys SET data_key_sealed = NULL, data_key_id = NULL, \
                     data_key_destroyed_at = $2 \
                     WHERE tenant_id = $1 AND data_key_sealed IS NOT NULL",
                )
                .bind(tenant.as_uuid())
                .bind(Utc::now())
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(destroyed.rows_affected() == 1)
    }

    async fn wrapped_by_other(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<(TenantId, WrappedDataKey)>, RepoError> {
        let rows: Vec<(Uuid, Vec<u8>, String)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT tenant_id, data_key_sealed, data_key_id FROM tenant_data_keys \
                     WHERE data_key_sealed IS NOT NULL AND data_key_id <> $1 \
                     ORDER BY tenant_id LIMIT $2",
                )
                .bind(key_id)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|(tenant, envelope, key_id)| {
                let tenant = TenantId::from_uuid(tenant).map_err(|_| {
                    RepoError::Internal("stored data key has an invalid tenant".into())
                })?;
                Ok((tenant, WrappedDataKey { envelope, key_id }))
            })
            .collect()
    }

    async fn replace(
        &self,
        tenant: TenantId,
        old: &WrappedDataKey,
        new: &WrappedDataKey,
    ) -> Result<bool, RepoError> {
        let replaced = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenant_data_keys SET data_key_sealed = $3, data_key_id = $4 \
                     WHERE tenant_id = $1 AND data_key_sealed = $2",
                )
                .bind(tenant.as_uuid())
                .bind(&old.envelope)
                .bind(&new.envelope)
                .bind(&new.key_id)
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(replaced.rows_affected() == 1)
    }
}
