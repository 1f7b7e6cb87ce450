//! API keys in PostgreSQL. The plan quota is enforced inside the insert's transaction,
//! serialized per tenant by locking the tenant's row, so concurrent creates cannot exceed it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Transaction};
use tenantd_domain::ports::{ApiKeyRepository, InitialKey, InitialKeyOutcome, InitialKeyStore};
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, TenantId, TenantStatus};
use uuid::Uuid;

use super::errors::db;
use super::tenants::{PgStore, abort, append};

const COLUMNS: &str = "key_id, tenant_id, display_name, scopes, secret_hash, created_at, \
     expires_at, revoked_at, last_used_at";

/// One `api_keys` row; also the form the cache keeps a key in (a hash, never a secret).
#[derive(sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeyRow {
    key_id: Uuid,
    tenant_id: Uuid,
    display_name: String,
    scopes: Vec<String>,
    secret_hash: Vec<u8>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl KeyRow {
    /// The row of `key`.
    pub(crate) fn of(key: &ApiKey) -> Self {
        Self {
            key_id: key.id.0,
            tenant_id: key.tenant_id.as_uuid(),
            display_name: key.display_name.clone(),
            scopes: key.scopes.clone(),
            secret_hash: key.secret_hash.to_vec(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
        }
    }
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = RepoError;

    fn try_from(row: KeyRow) -> Result<Self, RepoError> {
        let corrupt = || RepoError::Internal("stored API key is malformed".into());
        Ok(ApiKey {
            id: ApiKeyId(row.key_id),
            tenant_id: TenantId::from_uuid(row.tenant_id).map_err(|_| corrupt())?,
            display_name: row.display_name,
            scopes: row.scopes,
            secret_hash: row.secret_hash.try_into().map_err(|_| corrupt())?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        })
    }
}

async fn insert_within_quota(
    tx: &mut Transaction<'_, Postgres>,
    key: &ApiKey,
    events: &[Event],
    max_active: u32,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    let tenant = key.tenant_id.as_uuid();
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
    match status {
        None => return Err(RepoError::NotFound),
        Some((status,)) if status == TenantStatus::Deleted.as_str() => {
            return Err(RepoError::Precondition(
                "a deleted tenant cannot get API keys".into(),
            ));
        }
        Some(_) => {}
    }
    let (active,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(tenant)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    if active >= i64::from(max_active) {
        return Err(RepoError::LimitReached);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(key.id.0)
    .bind(tenant)
    .bind(&key.display_name)
    .bind(&key.scopes)
    .bind(key.secret_hash.as_slice())
    .bind(key.created_at)
    .bind(key.expires_at)
    .bind(key.revoked_at)
    .bind(key.last_used_at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    append(tx, events).await
}

async fn mark_revoked(
    tx: &mut Transaction<'_, Postgres>,
    id: ApiKeyId,
    at: DateTime<Utc>,
    events: &[Event],
) -> Result<DateTime<Utc>, RepoError> {
    let revoked_at: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT revoked_at FROM api_keys WHERE key_id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
    match revoked_at {
        None => Err(RepoError::NotFound),
        Some((Some(revoked_at),)) => Ok(revoked_at),
        Some((None,)) => {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1")
                .bind(id.0)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            append(tx, events).await?;
            Ok(at)
        }
    }
}

#[async_trait]
impl ApiKeyRepository for PgStore {
    async fn create(
        &self,
        key: &ApiKey,
        events: &[Event],
        max_active: u32,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        match insert_within_quota(&mut tx, key, events, max_active, now).await {
            Ok(()) => tx.commit().await.map_err(db),
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        let row: Option<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_id = $1"
        )))
        .bind(id.0)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<ApiKeyId>,
        limit: usize,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ApiKey>, RepoError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = "
        ));
        sql.push_bind(tenant.as_uuid());
        if let Some(after) = after {
            sql.push(" AND key_id > ").push_bind(after.0);
        }
        if let Some(at) = active_at {
            sql.push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                .push_bind(at)
                .push(")");
        }
        sql.push(" ORDER BY key_id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<KeyRow> = sql
            .build_query_as()
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn revoke(
        &self,
        id: ApiKeyId,
        at: DateTime<Utc>,
        events: &[Event],
    ) -> Result<DateTime<Utc>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        match mark_revoked(&mut tx, id, at, events).await {
            Ok(revoked_at) => {
                tx.commit().await.map_err(db)?;
                Ok(revoked_at)
            }
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1")
            .bind(id.0)
            .bind(at)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The writes of [`PgStore::create_initial`], inside `tx`.
async fn insert_initial(
    tx: &mut Transaction<'_, Postgres>,
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
        .fetch_optional(&mut **tx)
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
    .fetch_optional(&mut **tx)
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
    .execute(&mut **tx)
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
        let mut tx = self.pool().begin().await.map_err(db)?;
        match insert_initial(&mut tx, key, sealed_secret, events, max_active, now).await {
            Ok(outcome) => {
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn initial(&self, tenant: TenantId) -> Result<Option<InitialKey>, RepoError> {
        let row: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT key_id, secret_sealed FROM initial_api_keys WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(self.pool())
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
        let row: Option<(Uuid, Vec<u8>)> = sqlx::query_as(
            "UPDATE initial_api_keys i SET secret_sealed = NULL, claimed_at = now() \
             FROM (SELECT tenant_id, secret_sealed AS sealed FROM initial_api_keys \
                   WHERE tenant_id = $1 AND secret_sealed IS NOT NULL FOR UPDATE) AS old \
             WHERE i.tenant_id = old.tenant_id \
             RETURNING i.key_id, old.sealed",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        Ok(row.map(|(key_id, sealed)| (ApiKeyId(key_id), sealed)))
    }
}
