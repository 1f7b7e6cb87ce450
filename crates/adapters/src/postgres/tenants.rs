//! [`TenantRepository`] on PostgreSQL: tenants with their provisioning run, events and
//! idempotency records, each change in one transaction.
//!
//! On create the idempotency record is inserted *first*: a concurrent create with the same
//! request id then waits on that row and is answered from it, instead of racing for the
//! slug.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use tenantd_domain::ports::{IdempotencyRecord, TenantQuery, TenantRepository};
use tenantd_domain::provisioning::ProvisioningRun;
use tenantd_domain::{Event, RepoError, Tenant, TenantId, TenantStatus};

use super::PgStore;
use super::errors::{db, translate};
use super::tables::tenants::{SELECT_TENANT_BY_ID, SELECT_TENANTS, TenantRow};
use super::tables::{events, runs, tenants};

/// A replica sweeps expired idempotency records at most this often.
const SWEEP_EVERY_SECS: i64 = 10;
/// Records one sweep statement deletes at most (a sweep repeats until one deletes fewer).
const SWEEP_BATCH: i64 = 1_000;

impl PgStore {
    /// Deletes every idempotency record expired at `now`, in batches of their own
    /// statements (row locks of a sweep inside a create transaction could deadlock two
    /// creates), skipping rows another sweep holds. Returns how many it deleted.
    ///
    /// # Errors
    /// When the database fails; what was deleted stays deleted.
    pub async fn sweep_idempotency(&self, now: DateTime<Utc>) -> Result<u64, RepoError> {
        let mut swept = 0;
        loop {
            let deleted = self
                .on_conn(async |conn| {
                    sqlx::query(
                        "DELETE FROM idempotency_records WHERE request_id IN (SELECT request_id \
                         FROM idempotency_records WHERE expires_at <= $1 LIMIT $2 \
                         FOR UPDATE SKIP LOCKED)",
                    )
                    .bind(now)
                    .bind(SWEEP_BATCH)
                    .execute(conn)
                    .await
                })
                .await
                .map_err(db)?
                .rows_affected();
            swept += deleted;
            if deleted < SWEEP_BATCH.unsigned_abs() {
                return Ok(swept);
            }
        }
    }

    /// Starts [`Self::sweep_idempotency`] in the background, unless this store started
    /// one within the last [`SWEEP_EVERY_SECS`]: off the request path, which never waits
    /// for it. (An expired record is overwritten by the next create with its request id
    /// anyway; sweeping only keeps the table small.) A failure only delays the sweep.
    fn sweep_idempotency_soon(&self, now: DateTime<Utc>) {
        let last = self.last_idempotency_sweep.load(Ordering::Relaxed);
        let at = now.timestamp();
        if at - last < SWEEP_EVERY_SECS
            || self
                .last_idempotency_sweep
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(err) = store.sweep_idempotency(now).await {
                tracing::warn!(error = %err, "cannot sweep expired idempotency records");
            }
        });
    }
}

/// The create, in one statement (one round trip, atomic without a transaction of its
/// own): the idempotency record is claimed *first* (a concurrent create with the same
/// request id waits on that row, then finds it held), then the tenant, its data key (which
/// seals its contact email), its run, the run's steps and the events are inserted only if
/// the claim succeeded. `Ok(false)`: the request id is held by an unexpired record.
async fn insert_created(
    store: &PgStore,
    tenant: &Tenant,
    run: &ProvisioningRun,
    events: &[Event],
    idempotency: Option<&IdempotencyRecord>,
) -> Result<bool, RepoError> {
    let cipher = store.cipher();
    let key = cipher.new_data_key(tenant.id());
    let row = TenantRow::seal(tenant, cipher, Some(&key))?;
    let mut sql = QueryBuilder::<Postgres>::new("WITH ");
    if let Some(record) = idempotency {
        // The response snapshot keeps the contact email sealed, like the tenants table.
        let response = serde_json::to_value(TenantRow::seal(&record.response, cipher, Some(&key))?)
            .map_err(|e| RepoError::Internal(format!("cannot encode response snapshot: {e}")))?;
        sql.push(
            "claim AS (INSERT INTO idempotency_records \
                 (request_id, fingerprint, tenant_id, response, created_at, expires_at) VALUES (",
        );
        let mut values = sql.separated(", ");
        values
            .push_bind(record.request_id.clone())
            .push_bind(record.fingerprint.clone())
            .push_bind(record.response.id().as_uuid())
            .push_bind(response)
            .push_bind(tenant.created_at())
            .push_bind(record.expires_at);
        sql.push(
            ") ON CONFLICT (request_id) DO UPDATE SET \
                 fingerprint = EXCLUDED.fingerprint, tenant_id = EXCLUDED.tenant_id, \
                 response = EXCLUDED.response, created_at = EXCLUDED.created_at, \
                 expires_at = EXCLUDED.expires_at \
             WHERE idempotency_records.expires_at <= EXCLUDED.created_at RETURNING 1), ",
        );
    }
    sql.push("tenant AS (");
    tenants::push_insert(&mut sql, &row, &run.summary());
    if idempotency.is_some() {
        sql.push(" WHERE EXISTS (SELECT 1 FROM claim)");
    }
    sql.push(
        " RETURNING tenant_id), data_key AS (INSERT INTO tenant_data_keys \
             (tenant_id, data_key_sealed, data_key_id, data_key_created_at) SELECT tenant_id, ",
    );
    sql.separated(", ")
        .push_bind(&key.envelope)
        .push_bind(&key.key_id)
        .push_bind(tenant.created_at());
    sql.push(" FROM tenant), run AS (");
    runs::push_insert(&mut sql, run)?;
    sql.push(" FROM tenant RETURNING run_id), steps AS (");
    runs::push_insert_steps(&mut sql, run, "run");
    sql.push(")");
    if !events.is_empty() {
        sql.push(", events AS (");
        events::push_insert(&mut sql, events, "tenant");
        sql.push(")");
    }
    sql.push(" SELECT count(*) FROM tenant");
    let (inserted,): (i64,) = store
        .on_conn(async |conn| sql.build_query_as().fetch_one(conn).await)
        .await
        .map_err(|e| translate(e, Some(&row.slug)))?;
    Ok(inserted == 1)
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
        let created = insert_created(self, tenant, run, events, idempotency.as_ref()).await;
        if idempotency.is_some() {
            self.sweep_idempotency_soon(tenant.created_at());
        }
        if created? {
            Ok(())
        } else {
            Err(RepoError::IdempotencyKeyTaken)
        }
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let row: Option<TenantRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(SELECT_TENANT_BY_ID.as_str()))
                    .bind(id.as_uuid())
                    .fetch_optional(conn)
                    .await
            })
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
            sql.push(" AND status NOT IN (")
                .push_bind(TenantStatus::Deleted.as_str())
                .push(", ")
                .push_bind(TenantStatus::Purging.as_str())
                .push(")");
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
        let rows: Vec<TenantRow> = self
            .on_conn(async |conn| sql.build_query_as().fetch_all(conn).await)
            .await
            .map_err(db)?;
        rows.into_iter().map(|r| r.open(self.cipher())).collect()
    }

    async fn find_idempotency(
        &self,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        type Found = (
            String,
            String,
            sqlx::types::Json<TenantRow>,
            DateTime<Utc>,
            Option<Vec<u8>>,
            Option<String>,
        );
        // The snapshot's contact email is sealed with the tenant's data key.
        let row: Option<Found> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT r.request_id, r.fingerprint, r.response, r.expires_at, \
                         k.data_key_sealed, k.data_key_id \
                     FROM idempotency_records r \
                     LEFT JOIN tenant_data_keys k ON k.tenant_id = r.tenant_id \
                     WHERE r.request_id = $1 AND r.expires_at > $2",
                )
                .bind(request_id)
                .bind(now)
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        row.map(
            |(request_id, fingerprint, response, expires_at, sealed, key_id)| {
                let mut response = response.0;
                response.data_key_sealed = sealed;
                response.data_key_id = key_id;
                Ok(IdempotencyRecord {
                    request_id,
                    fingerprint,
                    response: response.open(self.cipher())?,
                    expires_at,
                })
            },
        )
        .transpose()
    }
}
