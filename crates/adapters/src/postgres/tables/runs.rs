//! The `provisioning_runs` and `provisioning_steps` tables: a run row (with its lease and
//! the summary tenants are read with) and one row per step.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tenantd_domain::provisioning::{
    ProvisioningRun, RunId, RunState, Step, StepError, StepKind, StepState,
};
use tenantd_domain::{RepoError, TenantId};
use uuid::Uuid;

use crate::postgres::errors::db;

pub(crate) const RUN_COLUMNS: &str = "run_id, tenant_id, state, created_at, finished_at, deadline, \
     error_reason, error_message, pending_compensation, compensation_attempts, \
     compensation_retry_at, version, failed_step";

/// One `provisioning_runs` row.
#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) run_id: Uuid,
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

/// One `provisioning_steps` row.
#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    kind: String,
    state: String,
    attempts: i32,
    error_reason: Option<String>,
    error_message: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
}

pub(crate) fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored provisioning run has a malformed {what}"))
}

fn error(reason: Option<String>, message: Option<String>) -> Option<StepError> {
    reason.map(|reason| StepError::new(&reason, message.unwrap_or_default()))
}

fn kind(text: &str) -> Result<StepKind, RepoError> {
    StepKind::parse(text).ok_or_else(|| corrupt("step kind"))
}

impl RunRow {
    /// The run of this row and its step rows.
    pub(crate) fn into_run(self, steps: Vec<StepRow>) -> Result<ProvisioningRun, RepoError> {
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

/// The step rows of `run`, in order.
pub(crate) async fn load_steps<'e>(
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

/// A version as stored.
pub(crate) fn version(v: u64) -> Result<i64, RepoError> {
    i64::try_from(v).map_err(|_| RepoError::VersionConflict)
}

/// Pushes `INSERT INTO provisioning_runs (...) SELECT <run's values>` (the caller appends
/// `FROM ...`, whose rows each insert the run).
pub(crate) fn push_insert(
    sql: &mut QueryBuilder<Postgres>,
    run: &ProvisioningRun,
) -> Result<(), RepoError> {
    let summary = run.summary();
    sql.push(format!(
        "INSERT INTO provisioning_runs ({RUN_COLUMNS}, due_at, current_step, completed_steps, \
             total_steps) SELECT "
    ));
    let mut values = sql.separated(", ");
    values
        .push_bind(run.id.0)
        .push_bind(run.tenant_id.as_uuid())
        .push_bind(run.state.as_str())
        .push_bind(run.created_at)
        .push_bind(run.finished_at)
        .push_bind(run.deadline)
        .push_bind(run.error.as_ref().map(|e| e.reason.as_str()))
        .push_bind(run.error.as_ref().map(|e| e.message.as_str()))
        .push_bind(compensation(run))
        .push_bind(i32::try_from(run.compensation_attempts).unwrap_or(i32::MAX))
        .push_bind(run.compensation_retry_at)
        .push_bind(version(run.version)?)
        .push_bind(run.failed_step.map(StepKind::as_str))
        .push_bind(run.due_at())
        .push_bind(summary.current_step.map(StepKind::as_str))
        .push_bind(count(summary.completed_steps))
        .push_bind(count(summary.total_steps));
    Ok(())
}

/// Pushes the `INSERT` of `run`'s steps for the run ids in `runs.run_id` (a CTE's name).
pub(crate) fn push_insert_steps(
    sql: &mut QueryBuilder<Postgres>,
    run: &ProvisioningRun,
    runs: &str,
) {
    let steps = StepColumns::of(run);
    sql.push(format!(
        "INSERT INTO provisioning_steps (run_id, position, kind, state, attempts, error_reason, \
             error_message, started_at, finished_at, next_attempt_at) \
         SELECT {runs}.run_id, u.* FROM {runs}, UNNEST("
    ));
    let mut arrays = sql.separated(", ");
    arrays
        .push_bind(steps.positions)
        .push_unseparated("::smallint[]")
        .push_bind(steps.kinds)
        .push_unseparated("::text[]")
        .push_bind(steps.states)
        .push_unseparated("::text[]")
        .push_bind(steps.attempts)
        .push_unseparated("::int[]")
        .push_bind(steps.reasons)
        .push_unseparated("::text[]")
        .push_bind(steps.messages)
        .push_unseparated("::text[]")
        .push_bind(steps.started)
        .push_unseparated("::timestamptz[]")
        .push_bind(steps.finished)
        .push_unseparated("::timestamptz[]")
        .push_bind(steps.next)
        .push_unseparated("::timestamptz[]");
    sql.push(") AS u");
}

/// A run's steps as the column arrays `UNNEST` reads, in step order.
struct StepColumns<'r> {
    positions: Vec<i16>,
    kinds: Vec<&'r str>,
    states: Vec<&'r str>,
    attempts: Vec<i32>,
    reasons: Vec<Option<&'r str>>,
    messages: Vec<Option<&'r str>>,
    started: Vec<Option<DateTime<Utc>>>,
    finished: Vec<Option<DateTime<Utc>>>,
    next: Vec<Option<DateTime<Utc>>>,
}

impl<'r> StepColumns<'r> {
    fn of(run: &'r ProvisioningRun) -> Self {
        let steps = &run.steps;
        Self {
            positions: (0..).take(steps.len()).collect(),
            kinds: steps.iter().map(|s| s.kind.as_str()).collect(),
            states: steps.iter().map(|s| s.state.as_str()).collect(),
            attempts: steps
                .iter()
                .map(|s| i32::try_from(s.attempts).unwrap_or(i32::MAX))
                .collect(),
            reasons: steps
                .iter()
                .map(|s| s.last_error.as_ref().map(|e| e.reason.as_str()))
                .collect(),
            messages: steps
                .iter()
                .map(|s| s.last_error.as_ref().map(|e| e.message.as_str()))
                .collect(),
            started: steps.iter().map(|s| s.started_at).collect(),
            finished: steps.iter().map(|s| s.finished_at).collect(),
            next: steps.iter().map(|s| s.next_attempt_at).collect(),
        }
    }
}

/// A step count as stored.
pub(crate) fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The steps waiting for compensation, as stored.
pub(crate) fn compensation(run: &ProvisioningRun) -> Vec<String> {
    run.pending_compensation
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect()
}

/// Inserts (`insert`) or overwrites the run's step rows, in one statement.
pub(crate) async fn write_steps(
    tx: &mut PgConnection,
    run: &ProvisioningRun,
    insert: bool,
) -> Result<(), RepoError> {
    let steps = StepColumns::of(run);
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
        .bind(steps.positions)
        .bind(steps.kinds)
        .bind(steps.states)
        .bind(steps.attempts)
        .bind(steps.reasons)
        .bind(steps.messages)
        .bind(steps.started)
        .bind(steps.finished)
        .bind(steps.next)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}
