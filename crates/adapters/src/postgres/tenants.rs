//! [`TenantRepository`] on PostgreSQL: tenants with their provisioning run, events and
//! idempotency records, each change in one transaction.
//!
//! On create the idempotency record is inserted *first*: a concurrent create with the same
//! request id then waits on that row and is answered from it, instead of racing for the
//! slug.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::ports::{EmailCipher, IdempotencyRecord, TenantQuery, TenantRepository};
use tenantd_domain::provisioning::ProvisioningRun;
use tenantd_domain::{Event, RepoError, Tenant, TenantId, TenantStatus};

use super::PgStore;
use super::errors::db;
use super::tables::tenants::{SELECT_TENANT_BY_ID, SELECT_TENANTS, TenantRow};
use super::tables::{events, runs, tenants};

impl PgStore {
    /// Forgets a few expired idempotency records: bounded work, in its own statement (row
    /// locks of a sweep inside a create transaction could deadlock two creates), skipping
    /// busy rows. A failure only delays the sweep.
    async fn sweep_idempotency(&self, now: DateTime<Utc>) {
        let swept = sqlx::query(
            "DELETE FROM idempotency_records WHERE request_id IN (SELECT request_id \
             FROM idempotency_records WHERE expires_at <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .execute(self.pool())
        .await;
        if let Err(err) = swept {
            tracing::warn!(error = %err, "cannot sweep expired idempotency records");
        }
    }
}

/// Inserts `record` unless an unexpired one holds its request id; `false` if one does.
async fn claim_request_id(
    tx: &mut PgConnection,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
    cipher: &dyn EmailCipher,
) -> Result<bool, RepoError> {
    // The response snapshot keeps the contact email sealed, like the tenants table.
    let response = serde_json::to_value(TenantRow::seal(&record.response, cipher))
        .map_err(|e| RepoError::Internal(format!("cannot encode response snapshot: {e}")))?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_records \
             (request_id, fingerprint, tenant_id, response, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (request_id) DO UPDATE SET \
             fingerprint = EXCLUDED.fingerprint, tenant_id = EXCLUDED.tenant_id, \
             response = EXCLUDED.response, created_at = EXCLUDED.created_at, \
             expires_at = EXCLUDED.expires_at \
         WHERE idempotency_records.expires_at <= EXCLUDED.created_at",
    )
    .bind(&record.request_id)
    .bind(&record.fingerprint)
    .bind(record.response.id().as_uuid())
    .bind(response)
    .bind(now)
    .bind(record.expires_at)
    .execute(tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(claimed == 1)
}

#[async_trait]
impl TenantRepository for PgStore {
    async fn create(
        &self,
        tenant: &Tenant,
        run: &ProvisioningRun,
        events: &[Event],
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), RepoError> {
        if idempotency.is_some() {
            self.sweep_idempotency(tenant.created_at()).await;
        }
        let cipher = self.cipher();
        self.in_tx(async |tx| {
            // The request id first: a concurrent twin blocks here and is answered from it.
            if let Some(record) = &idempotency
                && !claim_request_id(tx, record, tenant.created_at(), cipher).await?
            {
                return Err(RepoError::IdempotencyKeyTaken);
            }
            tenants::insert(tx, tenant, cipher).await?;
            runs::insert(tx, run).await?;
            events::append(tx, events).await
        })
        .await
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let row: Option<TenantRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(SELECT_TENANT_BY_ID.as_str()))
                .bind(id.as_uuid())
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
        row.map(|r| r.open(self.cipher())).transpose()
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        self.in_tx(async |tx| {
            tenants::update(tx, tenant, expected_version, self.cipher()).await?;
            events::append(tx, events).await
        })
        .await
    }

    async fn list(&self, query: &TenantQuery) -> Result<Vec<Tenant>, RepoError> {
        let mut sql =
            QueryBuilder::<Postgres>::new(format!("{SELECT_TENANTS} WHERE purged_at IS NULL"));
        if let Some(after) = query.after {
            sql.push(" AND tenant_id > ").push_bind(after.as_uuid());
        }
        if !query.include_deleted {
            sql.push(" AND status <> ")
                .push_bind(TenantStatus::Deleted.as_str());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(plan) = &query.plan_id {
            sql.push(" AND plan_id = ")
                .push_bind(plan.as_str().to_owned());
        }
        if !query.labels.is_empty() {
            sql.push(" AND labels @> ")
                .push_bind(sqlx::types::Json(query.labels.clone()));
        }
        if let Some(prefix) = &query.slug_prefix {
            sql.push(" AND starts_with(slug, ")
                .push_bind(prefix.clone())
                .push(")");
        }
        if let Some(email) = &query.contact_email {
            sql.push(" AND contact_email_index = ")
                .push_bind(self.cipher().blind_index(email).to_vec());
        }
        sql.push(" ORDER BY tenant_id LIMIT ")
            .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows: Vec<TenantRow> = sql
            .build_query_as()
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        rows.into_iter().map(|r| r.open(self.cipher())).collect()
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let row: Option<(String, String, sqlx::types::Json<TenantRow>, DateTime<Utc>)> =
            sqlx::query_as(
                "SELECT request_id, fingerprint, response, expires_at FROM idempotency_records \
                 WHERE request_id = $1 AND expires_at > $2",
            )
            .bind(request_id)
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        row.map(|(request_id, fingerprint, response, expires_at)| {
            Ok(IdempotencyRecord {
                request_id,
                fingerprint,
                response: response.0.open(self.cipher())?,
                expires_at,
            })
        })
        .transpose()
    }
}
