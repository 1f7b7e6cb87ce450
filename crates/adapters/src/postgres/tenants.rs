//! Tenants, their event log (outbox) and idempotency records in PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use tenantd_domain::ports::{
    EmailCipher, EventLog, IdempotencyRecord, SecretSealer, TenantQuery, TenantRepository,
};
use tenantd_domain::provisioning::ProvisioningRun;
use tenantd_domain::{Event, EventId, RepoError, Tenant, TenantId, TenantStatus};
use uuid::Uuid;

use super::errors::{db, translate};
use super::provisioning::insert_run;
use super::rows::{EventRow, SELECT_TENANTS, TenantRow};

/// The PostgreSQL store: implements [`TenantRepository`], [`EventLog`], the API key
/// repository and the audit log. Contact emails are sealed with `cipher` on the way in and
/// opened on the way out; the database never sees them in clear.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    cipher: Arc<dyn EmailCipher>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store over `pool` (migrated), sealing contact emails with `cipher`.
    pub fn new(pool: PgPool, cipher: Arc<dyn EmailCipher>) -> Self {
        Self { pool, cipher }
    }

    /// Re-seals, in batches of `batch_size`, every contact email not sealed with the
    /// cipher's primary key; safe while the service runs (rows are locked one batch at a
    /// time and skipped if busy, and the tenant's version is not touched). Returns how many
    /// rows were re-sealed.
    ///
    /// # Errors
    /// Store failures, or an envelope that does not open (nothing of that batch is written).
    pub async fn rewrap_contact_emails(&self, batch_size: usize) -> Result<u64, RepoError> {
        let primary = self.cipher.primary_key_id();
        let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db)?;
            let rows: Vec<(Uuid, Vec<u8>)> = match sqlx::query_as(
                "SELECT tenant_id, contact_email_sealed FROM tenants \
                 WHERE contact_email_key_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(&primary)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            {
                Ok(rows) => rows,
                Err(err) => return Err(abort(tx, db(err)).await),
            };
            if rows.is_empty() {
                tx.commit().await.map_err(db)?;
                return Ok(total);
            }
            for (id, envelope) in &rows {
                if let Err(err) = self.reseal(&mut tx, *id, envelope).await {
                    return Err(abort(tx, err).await);
                }
            }
            tx.commit().await.map_err(db)?;
            total += rows.len() as u64;
            tracing::info!(
                rewrapped = total,
                "re-sealed contact emails with the primary key"
            );
        }
    }

    /// Re-seals, in batches of `batch_size`, every sealed first-API-key secret not sealed
    /// with the primary key (read from the envelope), with `sealer`. Returns how many.
    ///
    /// # Errors
    /// Store failures, or an envelope that does not open (nothing of that batch is written).
    pub async fn rewrap_initial_keys(
        &self,
        sealer: &dyn SecretSealer,
        purpose: &'static str,
        batch_size: usize,
    ) -> Result<u64, RepoError> {
        let primary = self.cipher.primary_key_id();
        let limit = i64::try_from(batch_size.max(1)).unwrap_or(i64::MAX);
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db)?;
            // The envelope is version (1 byte), key id length (1 byte), key id, ...
            let rows: Vec<(Uuid, Vec<u8>)> = match sqlx::query_as(
                "SELECT tenant_id, secret_sealed FROM initial_api_keys \
                 WHERE secret_sealed IS NOT NULL AND convert_from(substring(secret_sealed \
                     FROM 3 FOR get_byte(secret_sealed, 1)), 'UTF8') <> $1 \
                 LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(&primary)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            {
                Ok(rows) => rows,
                Err(err) => return Err(abort(tx, db(err)).await),
            };
            if rows.is_empty() {
                tx.commit().await.map_err(db)?;
                return Ok(total);
            }
            for (id, envelope) in &rows {
                let resealed = TenantId::from_uuid(*id)
                    .map_err(|_| RepoError::Internal("stored tenant has an invalid id".into()))
                    .and_then(|tenant| {
                        let secret = sealer
                            .open_secret(tenant, purpose, envelope)
                            .map_err(|e| RepoError::Internal(format!("tenant {tenant}: {e}")))?;
                        Ok(sealer.seal_secret(tenant, purpose, &secret))
                    });
                let written = match resealed {
                    Ok(envelope_now) => sqlx::query(
                        "UPDATE initial_api_keys SET secret_sealed = $2 WHERE tenant_id = $1",
                    )
                    .bind(id)
                    .bind(envelope_now)
                    .execute(&mut *tx)
                    .await
                    .map(|_| ())
                    .map_err(db),
                    Err(err) => Err(err),
                };
                if let Err(err) = written {
                    return Err(abort(tx, err).await);
                }
            }
            tx.commit().await.map_err(db)?;
            total += rows.len() as u64;
        }
    }

    async fn reseal(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: Uuid,
        envelope: &[u8],
    ) -> Result<(), RepoError> {
        let tenant = TenantId::from_uuid(id)
            .map_err(|_| RepoError::Internal("stored tenant has an invalid id".into()))?;
        let email = self
            .cipher
            .open(tenant, envelope)
            .map_err(|e| RepoError::Internal(format!("tenant {tenant}: {e}")))?;
        let sealed = self.cipher.seal(tenant, &email);
        sqlx::query(
            "UPDATE tenants SET contact_email_sealed = $2, contact_email_key_id = $3 \
             WHERE tenant_id = $1",
        )
        .bind(id)
        .bind(sealed.envelope)
        .bind(sealed.key_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Forgets a few expired idempotency records: bounded work, in its own statement (row
    /// locks of a sweep inside a create transaction could deadlock two creates), skipping
    /// busy rows. A failure only delays the sweep.
    async fn sweep_idempotency(&self, now: DateTime<Utc>) {
        let swept = sqlx::query(
            "DELETE FROM idempotency_records WHERE request_id IN (SELECT request_id \
             FROM idempotency_records WHERE expires_at <= $1 LIMIT 100 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .execute(&self.pool)
        .await;
        if let Err(err) = swept {
            tracing::warn!(error = %err, "cannot sweep expired idempotency records");
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn cipher(&self) -> &dyn EmailCipher {
        &*self.cipher
    }

    /// The pool's connections now: (open, idle, maximum).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (
            self.pool.size(),
            idle,
            self.pool.options().get_max_connections(),
        )
    }

    /// Whether the database answers a trivial query now.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), RepoError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Rolls `tx` back now and returns `err`. A dropped transaction would only be rolled back
/// when its connection is next used, holding its locks until then.
pub(crate) async fn abort(tx: Transaction<'_, Postgres>, err: RepoError) -> RepoError {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!(error = %rollback, "rollback failed; the connection is discarded");
    }
    err
}

pub(crate) async fn append(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Event],
) -> Result<(), RepoError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO tenant_events (event_id, tenant_id, event_type, payload, occurred_at) ",
    );
    insert.push_values(events, |mut row, event| {
        row.push_bind(event.id.0)
            .push_bind(event.tenant_id.as_uuid())
            .push_bind(event.kind.type_name())
            .push_bind(sqlx::types::Json(&event.kind))
            .push_bind(event.occurred_at);
    });
    insert.build().execute(&mut **tx).await.map_err(db)?;
    Ok(())
}

/// Inserts `record` unless an unexpired one holds its request id; `false` if one does.
async fn claim_request_id(
    tx: &mut Transaction<'_, Postgres>,
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
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(claimed == 1)
}

/// The writes of [`PgStore::create`], inside `tx`.
async fn insert_tenant(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &Tenant,
    run: &ProvisioningRun,
    events: &[Event],
    idempotency: Option<&IdempotencyRecord>,
    cipher: &dyn EmailCipher,
) -> Result<(), RepoError> {
    // The request id first: a concurrent twin blocks here and is answered from it.
    if let Some(record) = idempotency
        && !claim_request_id(tx, record, tenant.created_at(), cipher).await?
    {
        return Err(RepoError::IdempotencyKeyTaken);
    }
    let row = TenantRow::seal(tenant, cipher);
    let insert = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (tenant_id, slug, created_at, {MUTABLE_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )))
    .bind(row.tenant_id)
    .bind(&row.slug)
    .bind(row.created_at);
    bind_mutable(insert, &row)
        .execute(&mut **tx)
        .await
        .map_err(|e| translate(e, Some(&row.slug)))?;
    insert_run(tx, run).await?;
    append(tx, events).await
}

/// The columns a tenant's changes write, in the order [`bind_mutable`] binds them.
const MUTABLE_COLUMNS: &str = "display_name, plan_id, status, status_reason, \
     status_before_delete, contact_email_sealed, contact_email_key_id, contact_email_index, \
     labels, config, updated_at, deleted_at, purge_at, version";

/// Binds the [`MUTABLE_COLUMNS`] of `row`, in order.
fn bind_mutable<'q>(
    query: Query<'q, Postgres, PgArguments>,
    row: &'q TenantRow,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(&row.display_name)
        .bind(&row.plan_id)
        .bind(&row.status)
        .bind(&row.status_reason)
        .bind(&row.status_before_delete)
        .bind(&row.contact_email_sealed)
        .bind(&row.contact_email_key_id)
        .bind(&row.contact_email_index)
        .bind(&row.labels)
        .bind(&row.config)
        .bind(row.updated_at)
        .bind(row.deleted_at)
        .bind(row.purge_at)
        .bind(row.version)
}

/// The writes of [`PgStore::update`], inside `tx`: the row only if it is still at
/// `expected_version`, then the events.
pub(crate) async fn update_tenant(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &Tenant,
    expected_version: u64,
    events: &[Event],
    cipher: &dyn EmailCipher,
) -> Result<(), RepoError> {
    let row = TenantRow::seal(tenant, cipher);
    let expected = i64::try_from(expected_version).map_err(|_| RepoError::VersionConflict)?;
    let update = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET ({MUTABLE_COLUMNS}) = \
         ($3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         WHERE tenant_id = $1 AND version = $2"
    )))
    .bind(row.tenant_id)
    .bind(expected);
    let updated = bind_mutable(update, &row)
        .execute(&mut **tx)
        .await
        .map_err(db)?
        .rows_affected();
    if updated == 0 {
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1")
            .bind(row.tenant_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
            .is_some();
        return Err(if exists {
            RepoError::VersionConflict
        } else {
            RepoError::NotFound
        });
    }
    append(tx, events).await
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = insert_tenant(
            &mut tx,
            tenant,
            run,
            events,
            idempotency.as_ref(),
            &*self.cipher,
        )
        .await;
        match inserted {
            Ok(()) => tx.commit().await.map_err(db),
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepoError> {
        let row: Option<TenantRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_TENANTS} WHERE tenant_id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| r.open(&*self.cipher)).transpose()
    }

    async fn update(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        events: &[Event],
    ) -> Result<(), RepoError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        match update_tenant(&mut tx, tenant, expected_version, events, &*self.cipher).await {
            Ok(()) => tx.commit().await.map_err(db),
            Err(err) => Err(abort(tx, err).await),
        }
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
                .push_bind(self.cipher.blind_index(email).to_vec());
        }
        sql.push(" ORDER BY tenant_id LIMIT ")
            .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows: Vec<TenantRow> = sql
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(|r| r.open(&*self.cipher)).collect()
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
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|(request_id, fingerprint, response, expires_at)| {
            Ok(IdempotencyRecord {
                request_id,
                fingerprint,
                response: response.0.open(&*self.cipher)?,
                expires_at,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl EventLog for PgStore {
    async fn list(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<Event>, RepoError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT event_id, tenant_id, payload, occurred_at FROM tenant_events WHERE true",
        );
        if let Some(tenant) = tenant {
            sql.push(" AND tenant_id = ").push_bind(tenant.as_uuid());
        }
        if let Some(after) = after {
            sql.push(" AND event_id > ").push_bind::<Uuid>(after.0);
        }
        sql.push(" ORDER BY event_id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<EventRow> = sql
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.into_iter().map(Event::try_from).collect()
    }
}
