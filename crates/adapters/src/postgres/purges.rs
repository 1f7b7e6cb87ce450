//! [`PurgeRepository`] on PostgreSQL: the `tenant_purges` table (steps as a JSON array)
//! and the queue workers claim purges from, with `FOR UPDATE SKIP LOCKED` and a fencing
//! lease token like provisioning runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tenantd_domain::ports::{ClaimedPurge, Lease, PurgeRepository, PurgeWrite};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::purge::{Purge, PurgeStep, PurgeStepKind, PurgeStepState};
use tenantd_domain::{Event, RepoError, Tenant, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::leases::Queue;

/// The purge queue.
const QUEUE: Queue = Queue {
    table: "tenant_purges",
    key: "tenant_id",
};
use super::tables::{events, tenants};

const COLUMNS: &str = "tenant_id, forced, requested_by, steps, created_at, finished_at, version";

/// One step as the `steps` array keeps it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StepJson {
    kind: String,
    state: String,
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<DateTime<Utc>>,
}

/// One `tenant_purges` row.
#[derive(sqlx::FromRow)]
struct PurgeRow {
    tenant_id: Uuid,
    forced: bool,
    requested_by: String,
    steps: Json<Vec<StepJson>>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    version: i64,
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored purge has a malformed {what}"))
}

fn version(v: u64) -> Result<i64, RepoError> {
    i64::try_from(v).map_err(|_| RepoError::VersionConflict)
}

fn steps_json(purge: &Purge) -> Json<Vec<StepJson>> {
    Json(
        purge
            .steps
            .iter()
            .map(|s| StepJson {
                kind: s.kind.as_str().to_owned(),
                state: s.state.as_str().to_owned(),
                attempts: s.attempts,
                last_error: s.last_error.clone(),
                started_at: s.started_at,
                finished_at: s.finished_at,
                next_attempt_at: s.next_attempt_at,
            })
            .collect(),
    )
}

impl PurgeRow {
    fn into_purge(self) -> Result<Purge, RepoError> {
        let mut steps = self
            .steps
            .0
            .into_iter()
            .map(|s| {
                Ok(PurgeStep {
                    kind: PurgeStepKind::parse(&s.kind).ok_or_else(|| corrupt("step kind"))?,
                    state: PurgeStepState::parse(&s.state).ok_or_else(|| corrupt("step state"))?,
                    attempts: s.attempts,
                    last_error: s.last_error,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    next_attempt_at: s.next_attempt_at,
                })
            })
            .collect::<Result<Vec<PurgeStep>, RepoError>>()?;
        if !steps.iter().any(|s| s.kind == PurgeStepKind::DataKey) {
            // Stored before tenants had data keys: the step goes in its place, to run
            // (done, if the purge had already finished: there was no key then).
            let finished = self.finished_at.is_some();
            let at = steps
                .iter()
                .position(|s| s.kind == PurgeStepKind::Tombstone)
                .unwrap_or(steps.len());
            steps.insert(
                at,
                PurgeStep {
                    kind: PurgeStepKind::DataKey,
                    state: if finished {
                        PurgeStepState::Succeeded
                    } else {
                        PurgeStepState::Pending
                    },
                    attempts: 0,
                    last_error: None,
                    started_at: None,
                    finished_at: self.finished_at,
                    next_attempt_at: None,
                },
            );
        }
        if steps.iter().map(|s| s.kind).ne(PurgeStepKind::ORDER) {
            return Err(corrupt("step list"));
        }
        Ok(Purge {
            tenant_id: TenantId::from_uuid(self.tenant_id).map_err(|_| corrupt("tenant id"))?,
            forced: self.forced,
            requested_by: self.requested_by,
            steps,
            created_at: self.created_at,
            finished_at: self.finished_at,
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
    }
}

/// The writes of [`PgStore::save`] for a purge, inside its transaction.
async fn save_purge(
    tx: &mut PgConnection,
    write: PurgeWrite<'_>,
    store: &PgStore,
) -> Result<(), RepoError> {
    let purge = write.purge;
    let updated = sqlx::query(
        "UPDATE tenant_purges SET steps = $3, finished_at = $4, due_at = $5, version = $6, \
             lease_expires_at = $8 \
         WHERE tenant_id = $1 AND version = $2 AND lease_token = $7",
    )
    .bind(purge.tenant_id.as_uuid())
    .bind(version(write.expected_version)?)
    .bind(steps_json(purge))
    .bind(purge.finished_at)
    .bind(purge.due_at())
    .bind(version(purge.version)?)
    .bind(write.lease.token)
    .bind(write.renew_until)
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    if updated == 0 {
        let stored: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT lease_token FROM tenant_purges WHERE tenant_id = $1")
                .bind(purge.tenant_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        return Err(match stored {
            None => RepoError::NotFound,
            Some((token,)) if token != Some(write.lease.token) => RepoError::LeaseLost,
            Some(_) => RepoError::VersionConflict,
        });
    }
    if let Some((tenant, expected)) = write.tenant {
        if tenant.id() != purge.tenant_id {
            return Err(RepoError::VersionConflict);
        }
        tenants::update(tx, tenant, expected, store.cipher()).await?;
    }
    events::append(tx, write.events).await
}

#[async_trait]
impl PurgeRepository for PgStore {
    async fn start(
        &self,
        tenant: &Tenant,
        expected_version: u64,
        purge: &Purge,
        events: &[Event],
    ) -> Result<(), RepoError> {
        self.in_tx(async |tx| {
            tenants::update(tx, tenant, expected_version, self.cipher()).await?;
            let inserted = sqlx::query(
                "INSERT INTO tenant_purges (tenant_id, forced, requested_by, steps, created_at, \
                     finished_at, due_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(purge.tenant_id.as_uuid())
            .bind(purge.forced)
            .bind(&purge.requested_by)
            .bind(steps_json(purge))
            .bind(purge.created_at)
            .bind(purge.finished_at)
            .bind(purge.due_at())
            .bind(version(purge.version)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
                return Err(RepoError::VersionConflict);
            }
            events::append(tx, events).await
        })
        .await
    }

    async fn get(&self, tenant: TenantId) -> Result<Option<Purge>, RepoError> {
        let row: Option<PurgeRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tenant_purges WHERE tenant_id = $1"
                )))
                .bind(tenant.as_uuid())
                .fetch_optional(conn)
                .await
            })
            .await
            .map_err(db)?;
        row.map(PurgeRow::into_purge).transpose()
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedPurge>, RepoError> {
        let lease = Queue::lease(owner, now, lease_for);
        let sql = QUEUE.claim_sql(COLUMNS);
        let row: Option<PurgeRow> = self
            .on_conn(async |conn| {
                Queue::bind_claim(sqlx::query_as(sqlx::AssertSqlSafe(sql)), now, &lease)
                    .fetch_optional(conn)
                    .await
            })
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedPurge {
            purge: row.into_purge()?,
            lease,
        }))
    }

    async fn renew(
        &self,
        tenant: TenantId,
        at_version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let at_version = version(at_version)?;
        self.on_conn(async |conn| {
            QUEUE
                .renew(conn, tenant.as_uuid(), at_version, lease, until)
                .await
        })
        .await
        .map_err(db)
    }

    async fn release(&self, tenant: TenantId, lease: &Lease) -> Result<(), RepoError> {
        self.on_conn(async |conn| QUEUE.release(conn, tenant.as_uuid(), lease).await)
            .await
            .map_err(db)
    }

    async fn save(&self, write: PurgeWrite<'_>) -> Result<(), RepoError> {
        self.in_tx(async |tx| save_purge(tx, write, self).await)
            .await
    }

    async fn purgeable(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TenantId>, RepoError> {
        let rows: Vec<(Uuid,)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT tenant_id FROM tenants \
                     WHERE status = 'DELETED' AND purge_at <= $1 AND legal_hold_reason IS NULL \
                     ORDER BY purge_at LIMIT $2",
                )
                .bind(now)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        rows.into_iter()
            .map(|(id,)| TenantId::from_uuid(id).map_err(|_| corrupt("tenant id")))
            .collect()
    }

    async fn forget_requests(&self, tenant: TenantId) -> Result<u64, RepoError> {
        let deleted = self
            .on_conn(async |conn| {
                sqlx::query("DELETE FROM idempotency_records WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .execute(conn)
                    .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        Ok(deleted)
    }

    async fn release_slugs(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let released = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenants SET slug_released_at = now() \
                     WHERE purged_at < $1 AND slug_released_at IS NULL",
                )
                .bind(before)
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        Ok(released)
    }

    async fn running(&self) -> Result<u64, RepoError> {
        let (count,): (i64,) = self
            .on_conn(async |conn| {
                sqlx::query_as("SELECT count(*) FROM tenant_purges WHERE finished_at IS NULL")
                    .fetch_one(conn)
                    .await
            })
            .await
            .map_err(db)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
