//! The `api_keys` table: its row and the quota-checked insert that both API key creation
//! and the CREDENTIALS step make.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tenantd_domain::{ApiKey, ApiKeyId, Event, Reason, RepoError, TenantId, TenantStatus};
use uuid::Uuid;

use crate::postgres::errors::db;
use crate::postgres::tables::events::append;

/// The columns [`KeyRow`] reads.
pub(crate) const KEY_COLUMNS: &str = "key_id, tenant_id, display_name, scopes, secret_hash, created_at, \
     expires_at, revoked_at, last_used_at";

/// One `api_keys` row.
#[derive(sqlx::FromRow)]
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

/// Inserts `key` with its events unless its tenant is missing, deleted or already has
/// `max_active` keys active at `now`; the tenant's row lock serializes concurrent creates.
///
/// # Errors
/// [`RepoError::NotFound`], [`RepoError::Precondition`], [`RepoError::LimitReached`];
/// store failures.
pub(crate) async fn insert_within_quota(
    tx: &mut PgConnection,
    key: &ApiKey,
    events: &[Event],
    max_active: u32,
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    let tenant = key.tenant_id.as_uuid();
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    match status {
        None => return Err(RepoError::NotFound),
        Some((status,)) if status == TenantStatus::Deleted.as_str() => {
            return Err(RepoError::Precondition(
                Reason::TenantDeleted,
                "a deleted tenant cannot get API keys".into(),
            ));
        }
        Some((status,))
            if status == TenantStatus::Purging.as_str()
                || status == TenantStatus::Purged.as_str() =>
        {
            return Err(RepoError::Precondition(
                Reason::TenantPurged,
                "a purged tenant cannot get API keys".into(),
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
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if active >= i64::from(max_active) {
        return Err(RepoError::LimitReached);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    append(tx, events).await
}
