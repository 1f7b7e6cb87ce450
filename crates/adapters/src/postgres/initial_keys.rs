//! [`InitialKeyStore`] on PostgreSQL: each tenant's first admin key (a row of `api_keys`,
//! under the same quota) and its sealed secret in `initial_api_keys`, destroyed as it is
//! taken.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tenantd_domain::ports::{InitialKey, InitialKeyOutcome, InitialKeyStore};
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::tables::api_keys::insert_within_quota;

/// The writes of [`PgStore::create_initial`], inside its transaction.
async fn insert_initial(
    tx: &mut PgConnection,
    key: &ApiKey,
    sealed_secret: &[u8],
    events: &[Event],
    max_active: u32,
    now: DateTime<Utc>,
) -> Result<InitialKeyOutcome, RepoError> {
    let tenant = key.tenant_id.as_uuid();
    // The tenant's row lock serializes attempts of the step (and API key creates).
    let exists = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if exists.is_none() {
        return Err(RepoError::NotFound);
    }
    let active = sqlx::query(
        "SELECT 1 FROM initial_api_keys i JOIN api_keys k USING (key_id) \
         WHERE i.tenant_id = $1 AND k.revoked_at IS NULL",
    )
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    if active.is_some() {
        return Ok(InitialKeyOutcome::AlreadyPresent);
    }
    insert_within_quota(tx, key, events, max_active, now).await?;
    sqlx::query(
        "INSERT INTO initial_api_keys (tenant_id, key_id, secret_sealed, created_at, claimed_at) \
         VALUES ($1, $2, $3, $4, NULL) \
         ON CONFLICT (tenant_id) DO UPDATE SET key_id = EXCLUDED.key_id, \
             secret_sealed = EXCLUDED.secret_sealed, created_at = EXCLUDED.created_at, \
             claimed_at = NULL",
    )
    .bind(tenant)
    .bind(key.id.0)
    .bind(sealed_secret)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(InitialKeyOutcome::Created)
}

#[async_trait]
impl InitialKeyStore for PgStore {
    async fn create_initial(
        &self,
        key: &ApiKey,
        sealed_secret: &[u8],
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<InitialKeyOutcome, RepoError> {
        self.in_tx(async |tx| insert_initial(tx, key, sealed_secret, events, max_active, now).await)
            .await
    }

    async fn initial(&self, tenant: TenantId) -> Result<Option<InitialKey>, RepoError> {
        let row: Option<(Uuid, Option<Vec<u8>>)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT key_id, secret_sealed FROM initial_api_keys WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(row.map(|(key_id, sealed_secret)| InitialKey {
            key_id: ApiKeyId(key_id),
            sealed_secret,
        }))
    }

    async fn take_initial_secret(
        &self,
        tenant: TenantId,
    ) -> Result<Option<(ApiKeyId, Vec<u8>)>, RepoError> {
        // One statement: of two concurrent claims, the second sees the NULL the first wrote.
        let row: Option<(Uuid, Vec<u8>)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "UPDATE initial_api_keys i SET secret_sealed = NULL, claimed_at = now() \
                     FROM (SELECT tenant_id, secret_sealed AS sealed FROM initial_api_keys \
                           WHERE tenant_id = $1 AND secret_sealed IS NOT NULL FOR UPDATE) AS old \
                     WHERE i.tenant_id = old.tenant_id \
                     RETURNING i.key_id, old.sealed",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(row.map(|(key_id, sealed)| (ApiKeyId(key_id), sealed)))
    }
}
