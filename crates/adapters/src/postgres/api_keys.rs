//! [`ApiKeyRepository`] on PostgreSQL. The plan quota is enforced inside the insert's
//! transaction, serialized per tenant by locking the tenant's row, so concurrent creates
//! cannot exceed it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::ports::ApiKeyRepository;
use tenantd_domain::{ApiKey, ApiKeyId, Event, RepoError, TenantId};

use super::PgStore;
use super::errors::db;
use super::tables::api_keys::{KEY_COLUMNS, KeyRow, insert_within_quota};
use super::tables::events::append;

async fn mark_revoked(
    tx: &mut PgConnection,
    id: ApiKeyId,
    at: DateTime<Utc>,
    events: &[Event],
) -> Result<DateTime<Utc>, RepoError> {
    let revoked_at: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT revoked_at FROM api_keys WHERE key_id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    match revoked_at {
        None => Err(RepoError::NotFound),
        Some((Some(revoked_at),)) => Ok(revoked_at),
        Some((None,)) => {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1")
                .bind(id.0)
                .bind(at)
                .execute(&mut *tx)
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
        self.in_tx(async |tx| insert_within_quota(tx, key, events, max_active, now).await)
            .await
    }

    async fn get(&self, id: ApiKeyId) -> Result<Option<ApiKey>, RepoError> {
        let row: Option<KeyRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"
                )))
                .bind(id.0)
                .fetch_optional(conn)
                .await
            })
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
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = "
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
        let rows: Vec<KeyRow> = self
            .on_conn(async |conn| sql.build_query_as().fetch_all(conn).await)
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
        self.in_tx(async |tx| mark_revoked(tx, id, at, events).await)
            .await
    }

    async fn touch(&self, id: ApiKeyId, at: DateTime<Utc>) -> Result<(), RepoError> {
        self.on_conn(async |conn| {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1")
                .bind(id.0)
                .bind(at)
                .execute(conn)
                .await
        })
        .await
        .map_err(db)?;
        Ok(())
    }
}
