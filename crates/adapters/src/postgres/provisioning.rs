//! Provisioning runs in PostgreSQL, and the queue workers claim them from: a run row (with
//! its lease) and one row per step. Claims use `FOR UPDATE SKIP LOCKED` so concurrent
//! workers never pick the same run; the lease token fences every later write, so a worker
//! whose lease expired and was taken over cannot write any more.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tenantd_domain::ports::{ClaimedRun, Lease, ProvisioningRepository, RunWrite};
use tenantd_domain::provisioning::{
    ProvisioningRun, RunId, RunState, Step, StepError, StepKind, StepState,
};
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use super::errors::db;
use super::tenants::{PgStore, abort, append, update_tenant};

const RUN_COLUMNS: &str = "run_id, tenant_id, state, created_at, finished_at, deadline, \
     error_reason, error_message, pending_compensation, compensation_attempts, \
     compensation_retry_at, version, failed_step";

#[derive(sqlx::FromRow)]
struct RunRow {
    run_id: Uuid,
    tenant_id: Uuid,
    state: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    deadline: DateTime<Utc>,
    error_reason: Option<String>,
    error_message: Option<String>,
    pending_compensation: Vec<String>,
    compensation_attempts: i32,
    compensation_retry_at: Option<DateTime<Utc>>,
    version: i64,
    failed_step: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StepRow {
    kind: String,
    state: String,
    attempts: i32,
    error_reason: Option<String>,
    error_message: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored provisioning run has a malformed {what}"))
}

fn error(reason: Option<String>, message: Option<String>) -> Option<StepError> {
    reason.map(|reason| StepError::new(&reason, message.unwrap_or_default()))
}

fn kind(text: &str) -> Result<StepKind, RepoError> {
    StepKind::parse(text).ok_or_else(|| corrupt("step kind"))
}

impl RunRow {
    fn into_run(self, steps: Vec<StepRow>) -> Result<ProvisioningRun, RepoError> {
        let steps = steps
            .into_iter()
            .map(|s| {
                Ok(Step {
                    kind: kind(&s.kind)?,
                    state: StepState::parse(&s.state).ok_or_else(|| corrupt("step state"))?,
                    attempts: u32::try_from(s.attempts).map_err(|_| corrupt("attempt count"))?,
                    last_error: error(s.error_reason, s.error_message),
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    next_attempt_at: s.next_attempt_at,
                })
            })
            .collect::<Result<Vec<_>, RepoError>>()?;
        if steps.iter().map(|s| s.kind).ne(StepKind::ORDER) {
            return Err(corrupt("step list"));
        }
        Ok(ProvisioningRun {
            id: RunId(self.run_id),
            tenant_id: TenantId::from_uuid(self.tenant_id).map_err(|_| corrupt("tenant id"))?,
            state: RunState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            steps,
            created_at: self.created_at,
            finished_at: self.finished_at,
            deadline: self.deadline,
            error: error(self.error_reason, self.error_message),
            failed_step: self.failed_step.as_deref().map(kind).transpose()?,
            pending_compensation: self
                .pending_compensation
                .iter()
                .map(|k| kind(k))
                .collect::<Result<_, _>>()?,
            compensation_attempts: u32::try_from(self.compensation_attempts)
                .map_err(|_| corrupt("compensation attempt count"))?,
            compensation_retry_at: self.compensation_retry_at,
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
    }
}

async fn load_steps<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    run: Uuid,
) -> Result<Vec<StepRow>, RepoError> {
    sqlx::query_as(
        "SELECT kind, state, attempts, error_reason, error_message, started_at, finished_at, \
         next_attempt_at FROM provisioning_steps WHERE run_id = $1 ORDER BY position",
    )
    .bind(run)
    .fetch_all(executor)
    .await
    .map_err(db)
}

fn version(v: u64) -> Result<i64, RepoError> {
    i64::try_from(v).map_err(|_| RepoError::VersionConflict)
}

/// Inserts a new run and its steps, inside `tx` (the tenant's create transaction).
pub(crate) async fn insert_run(
    tx: &mut Transaction<'_, Postgres>,
    run: &ProvisioningRun,
) -> Result<(), RepoError> {
    let summary = run.summary();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO provisioning_runs ({RUN_COLUMNS}, due_at, current_step, completed_steps, \
             total_steps) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )))
    .bind(run.id.0)
    .bind(run.tenant_id.as_uuid())
    .bind(run.state.as_str())
    .bind(run.created_at)
    .bind(run.finished_at)
    .bind(run.deadline)
    .bind(run.error.as_ref().map(|e| e.reason.clone()))
    .bind(run.error.as_ref().map(|e| e.message.clone()))
    .bind(compensation(run))
    .bind(i32::try_from(run.compensation_attempts).unwrap_or(i32::MAX))
    .bind(run.compensation_retry_at)
    .bind(version(run.version)?)
    .bind(run.failed_step.map(StepKind::as_str))
    .bind(run.due_at())
    .bind(summary.current_step.map(StepKind::as_str))
    .bind(count(summary.completed_steps))
    .bind(count(summary.total_steps))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    write_steps(tx, run, true).await
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn compensation(run: &ProvisioningRun) -> Vec<String> {
    run.pending_compensation
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

/// Inserts (`insert`) or overwrites the run's step rows, in one statement.
async fn write_steps(
    tx: &mut Transaction<'_, Postgres>,
    run: &ProvisioningRun,
    insert: bool,
) -> Result<(), RepoError> {
    let steps = &run.steps;
    let positions: Vec<i16> = (0..).take(steps.len()).collect();
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    let states: Vec<&str> = steps.iter().map(|s| s.state.as_str()).collect();
    let attempts: Vec<i32> = steps
        .iter()
        .map(|s| i32::try_from(s.attempts).unwrap_or(i32::MAX))
        .collect();
    let reasons: Vec<Option<&str>> = steps
        .iter()
        .map(|s| s.last_error.as_ref().map(|e| e.reason.as_str()))
        .collect();
    let messages: Vec<Option<&str>> = steps
        .iter()
        .map(|s| s.last_error.as_ref().map(|e| e.message.as_str()))
        .collect();
    let started: Vec<Option<DateTime<Utc>>> = steps.iter().map(|s| s.started_at).collect();
    let finished: Vec<Option<DateTime<Utc>>> = steps.iter().map(|s| s.finished_at).collect();
    let next: Vec<Option<DateTime<Utc>>> = steps.iter().map(|s| s.next_attempt_at).collect();
    let sql = if insert {
        "INSERT INTO provisioning_steps (run_id, position, kind, state, attempts, error_reason, \
             error_message, started_at, finished_at, next_attempt_at) \
         SELECT $1, * FROM UNNEST($2::smallint[], $3::text[], $4::text[], $5::int[], \
             $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])"
    } else {
        "UPDATE provisioning_steps AS s SET state = u.state, attempts = u.attempts, \
             error_reason = u.error_reason, error_message = u.error_message, \
             started_at = u.started_at, finished_at = u.finished_at, \
             next_attempt_at = u.next_attempt_at \
         FROM UNNEST($2::smallint[], $3::text[], $4::text[], $5::int[], $6::text[], \
             $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) \
             AS u(position, kind, state, attempts, error_reason, error_message, started_at, \
                  finished_at, next_attempt_at) \
         WHERE s.run_id = $1 AND s.position = u.position"
    };
    sqlx::query(sql)
        .bind(run.id.0)
        .bind(positions)
        .bind(kinds)
        .bind(states)
        .bind(attempts)
        .bind(reasons)
        .bind(messages)
        .bind(started)
        .bind(finished)
        .bind(next)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// The writes of [`PgStore::save`], inside `tx`.
async fn save_run(
    tx: &mut Transaction<'_, Postgres>,
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
             failed_step = $17 \
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
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    if updated == 0 {
        let stored: Option<(i64, Option<Uuid>)> =
            sqlx::query_as("SELECT version, lease_token FROM provisioning_runs WHERE run_id = $1")
                .bind(run.id.0)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db)?;
        return Err(match (stored, write.lease) {
            (None, _) => RepoError::NotFound,
            (Some((_, token)), Some(lease)) if token != Some(lease.token) => RepoError::LeaseLost,
            _ => RepoError::VersionConflict,
        });
    }
    write_steps(tx, run, false).await?;
    match write.tenant {
        Some((tenant, expected)) => {
            update_tenant(tx, tenant, expected, write.events, store.cipher()).await
        }
        None => append(tx, write.events).await,
    }
}

#[async_trait]
impl ProvisioningRepository for PgStore {
    async fn latest(&self, tenant: TenantId) -> Result<Option<ProvisioningRun>, RepoError> {
        // Run and steps from one snapshot: never a run of one version with steps of another.
        let mut tx = self.pool().begin().await.map_err(db)?;
        let read = async {
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
        }
        .await;
        match read {
            Ok(run) => {
                tx.commit().await.map_err(db)?;
                Ok(run)
            }
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedRun>, RepoError> {
        let lease = Lease {
            token: Uuid::new_v4(),
            owner: owner.to_owned(),
            expires_at: now + lease_for,
        };
        let mut tx = self.pool().begin().await.map_err(db)?;
        let claimed: Result<Option<RunRow>, RepoError> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE provisioning_runs SET lease_owner = $2, lease_token = $3, \
                     lease_expires_at = $4 \
                 WHERE run_id = (SELECT run_id FROM provisioning_runs \
                     WHERE due_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at <= $1) \
                     ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING {RUN_COLUMNS}"
            )))
            .bind(now)
            .bind(&lease.owner)
            .bind(lease.token)
            .bind(lease.expires_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db);
        let row = match claimed {
            Ok(Some(row)) => row,
            Ok(None) => {
                tx.commit().await.map_err(db)?;
                return Ok(None);
            }
            Err(err) => return Err(abort(tx, err).await),
        };
        let steps = match load_steps(&mut *tx, row.run_id).await {
            Ok(steps) => steps,
            Err(err) => return Err(abort(tx, err).await),
        };
        tx.commit().await.map_err(db)?;
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
        let renewed = sqlx::query(
            "UPDATE provisioning_runs SET lease_expires_at = $3 \
             WHERE run_id = $1 AND lease_token = $2 AND version = $4",
        )
        .bind(run.0)
        .bind(lease.token)
        .bind(until)
        .bind(version(at_version)?)
        .execute(self.pool())
        .await
        .map_err(db)?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn release(&self, run: RunId, lease: &Lease) -> Result<(), RepoError> {
        sqlx::query(
            "UPDATE provisioning_runs SET lease_owner = NULL, lease_token = NULL, \
                 lease_expires_at = NULL \
             WHERE run_id = $1 AND lease_token = $2",
        )
        .bind(run.0)
        .bind(lease.token)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn save(&self, write: RunWrite<'_>) -> Result<(), RepoError> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        match save_run(&mut tx, write, self).await {
            Ok(()) => tx.commit().await.map_err(db),
            Err(err) => Err(abort(tx, err).await),
        }
    }

    async fn overdue(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TenantId>, RepoError> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT tenant_id FROM provisioning_runs WHERE state = 'RUNNING' AND deadline < $1 \
             ORDER BY deadline LIMIT $2",
        )
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(id,)| TenantId::from_uuid(id).map_err(|_| corrupt("tenant id")))
            .collect()
    }

    async fn running(&self) -> Result<u64, RepoError> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM provisioning_runs WHERE state = 'RUNNING'")
                .fetch_one(self.pool())
                .await
                .map_err(db)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
