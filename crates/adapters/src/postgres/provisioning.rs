//! [`ProvisioningRepository`] on PostgreSQL: runs and the queue workers claim them from.
//! Claims use `FOR UPDATE SKIP LOCKED` so concurrent workers never pick the same run; the
//! lease token fences every later write, so a worker whose lease expired and was taken over
//! cannot write any more.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tenantd_domain::ports::{ClaimedRun, Lease, ProvisioningRepository, RunWrite};
use tenantd_domain::provisioning::{ProvisioningRun, RunId, StepKind};
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::leases::Queue;

/// The run queue.
const QUEUE: Queue = Queue {
    table: "provisioning_runs",
    key: "run_id",
};
use super::tables::runs::{
    RUN_COLUMNS, RunRow, compensation, corrupt, count, load_steps, version, write_steps,
};
use super::tables::{events, tenants};

/// The writes of [`PgStore::save`], inside its transaction.
async fn save_run(
    tx: &mut PgConnection,
    write: RunWrite<'_>,
    store: &PgStore,
) -> Result<(), RepoError> {
    let run = write.run;
    let summary = run.summary();
    let updated = sqlx::query(
        "UPDATE provisioning_runs SET state = $3, finished_at = $4, deadline = $5, \
             error_reason = $6, error_message = $7, pending_compensation = $8, \
             compensation_attempts = $9, compensation_retry_at = $10, due_at = $11, \
             version = $12, current_step = $14, completed_steps = $15, total_steps = $16, \
             failed_step = $17, lease_expires_at = COALESCE($18, lease_expires_at) \
         WHERE run_id = $1 AND version = $2 \
           AND ($13::uuid IS NULL OR lease_token = $13)",
    )
    .bind(run.id.0)
    .bind(version(write.expected_version)?)
    .bind(run.state.as_str())
    .bind(run.finished_at)
    .bind(run.deadline)
    .bind(run.error.as_ref().map(|e| e.reason.clone()))
    .bind(run.error.as_ref().map(|e| e.message.clone()))
    .bind(compensation(run))
    .bind(i32::try_from(run.compensation_attempts).unwrap_or(i32::MAX))
    .bind(run.compensation_retry_at)
    .bind(run.due_at())
    .bind(version(run.version)?)
    .bind(write.lease.map(|l| l.token))
    .bind(summary.current_step.map(StepKind::as_str))
    .bind(count(summary.completed_steps))
    .bind(count(summary.total_steps))
    .bind(run.failed_step.map(StepKind::as_str))
    .bind(write.lease.and(write.renew_until))
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    if updated == 0 {
        let stored: Option<(i64, Option<Uuid>)> =
            sqlx::query_as("SELECT version, lease_token FROM provisioning_runs WHERE run_id = $1")
                .bind(run.id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        return Err(match (stored, write.lease) {
            (None, _) => RepoError::NotFound,
            (Some((_, token)), Some(lease)) if token != Some(lease.token) => RepoError::LeaseLost,
            _ => RepoError::VersionConflict,
        });
    }
    write_steps(tx, run, false).await?;
    if let Some((tenant, expected)) = write.tenant {
        tenants::update(tx, tenant, expected, store.cipher()).await?;
    }
    events::append(tx, write.events).await
}

#[async_trait]
impl ProvisioningRepository for PgStore {
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError> {
        // Run and steps from one snapshot: never a run of one version with steps of another.
        self.in_tx(async |tx| {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM provisioning_runs WHERE tenant_id = $1 \
                 ORDER BY run_id DESC LIMIT 1"
            )))
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let Some(row) = row else { return Ok(None) };
            let steps = load_steps(&mut *tx, row.run_id).await?;
            row.into_run(steps).map(Some)
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError> {
        let lease = Queue::lease(owner, now, lease_for);
        let sql = QUEUE.claim_sql(RUN_COLUMNS);
        let claimed = self
            .in_tx(async |tx| {
                let row: Option<RunRow> =
                    Queue::bind_claim(sqlx::query_as(sqlx::AssertSqlSafe(sql)), now, &lease)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                let Some(row) = row else { return Ok(None) };
                let steps = load_steps(&mut *tx, row.run_id).await?;
                Ok(Some((row, steps)))
            })
            .await?;
        let Some((row, steps)) = claimed else {
            return Ok(None);
        };
        Ok(Some(ClaimedRun {
            run: row.into_run(steps)?,
            lease,
        }))
    }

    async fn renew(
        &self,
        run: RunId,
        at_version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let at_version = version(at_version)?;
        self.on_conn(async |conn| QUEUE.renew(conn, run.0, at_version, lease, until).await)
            .await
            .map_err(db)
    }

    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError> {
        self.on_conn(async |conn| QUEUE.release(conn, run.0, lease).await)
            .await
            .map_err(db)
    }

    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError> {
        self.in_tx(async |tx| save_run(tx, write, self).await).await
    }

    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError> {
        let rows: Vec<(Uuid,)> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT tenant_id FROM provisioning_runs \
                     WHERE state = 'RUNNING' AND deadline < $1 ORDER BY deadline LIMIT $2",
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

    async fn running(&self) -> Result<u64, RepoError> {
        let (count,): (i64,) = self
            .on_conn(async |conn| {
                sqlx::query_as("SELECT count(*) FROM provisioning_runs WHERE state = 'RUNNING'")
                    .fetch_one(conn)
                    .await
            })
            .await
            .map_err(db)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
