//! [`RolloutRepository`] on PostgreSQL. Every write locks the rollout's row first (`FOR
//! UPDATE`), so claims, outcomes and commands of one rollout apply one at a time and each
//! sees the counts the one before left; the rules they apply are the domain's
//! ([`Rollout::claimable_wave`], [`Rollout::after_finish`], [`Rollout::command`]). A
//! tenant's entry carries its worker's lease token: an outcome under a lease that was taken
//! over is refused.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use tenantd_domain::ports::{Lease, RolloutRepository, TenantFinish};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{
    Canary, ClaimedTenant, Requeue, Rollout, RolloutCommand, RolloutCounts, RolloutId, RolloutSpec,
    RolloutState, RolloutTenant, TenantOutcome, TenantRolloutState, Wave,
};
use tenantd_domain::{EventId, Reason, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::tables::events;
use super::tables::tenants::placement;
use super::tenant_schemas::version;

const ROLLOUT_COLUMNS: &str = "rollout_id, state, target_version, spec, reason, \
     accepted_failures, created_by, created_at, updated_at, finished_at, version, counts";

const TENANT_COLUMNS: &str = "rollout_id, tenant_id, wave, position, state, attempts, \
     from_version, to_version, error, started_at, finished_at";

/// The index that lets one rollout be active at a time.
const ONE_ACTIVE: &str = "tenant_schema_rollouts_one_active";

#[derive(sqlx::FromRow)]
struct RolloutRow {
    rollout_id: Uuid,
    state: String,
    target_version: i32,
    spec: Json<RolloutSpec>,
    reason: Option<Json<StepError>>,
    accepted_failures: i64,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    version: i64,
    counts: Vec<i64>,
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored rollout has an invalid {what}"))
}

/// The `counts` column's slot of `wave` and `state`.
fn slot(wave: Wave, state: TenantRolloutState) -> usize {
    let state = TenantRolloutState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default();
    usize::from(wave.index()) * TenantRolloutState::ALL.len() + state
}

/// Counts as the `counts` column keeps them.
fn stored(counts: &RolloutCounts) -> Vec<i64> {
    let mut slots = vec![0; Wave::ALL.len() * TenantRolloutState::ALL.len()];
    for wave in Wave::ALL {
        for state in TenantRolloutState::ALL {
            slots[slot(wave, state)] =
                i64::try_from(counts.wave(wave).get(state)).unwrap_or(i64::MAX);
        }
    }
    slots
}

/// Counts from the `counts` column.
fn counted(slots: &[i64]) -> Result<RolloutCounts, RepoError> {
    if slots.len() != Wave::ALL.len() * TenantRolloutState::ALL.len() {
        return Err(corrupt("counts"));
    }
    let mut counts = RolloutCounts::default();
    for wave in Wave::ALL {
        for state in TenantRolloutState::ALL {
            let n = u64::try_from(slots[slot(wave, state)]).map_err(|_| corrupt("counts"))?;
            counts.wave_mut(wave).add(state, n);
        }
    }
    Ok(counts)
}

impl RolloutRow {
    fn into_rollout(self) -> Result<Rollout, RepoError> {
        let counts = counted(&self.counts)?;
        let mut spec = self.spec.0;
        spec.target_version = u32::try_from(self.target_version).map_err(|_| corrupt("target"))?;
        Ok(Rollout {
            id: RolloutId(self.rollout_id),
            spec,
            state: RolloutState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            reason: self.reason.map(|r| r.0),
            counts,
            accepted_failures: u64::try_from(self.accepted_failures).unwrap_or(0),
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    rollout_id: Uuid,
    tenant_id: Uuid,
    wave: i16,
    position: i32,
    state: String,
    attempts: i32,
    from_version: Option<i32>,
    to_version: Option<i32>,
    error: Option<Json<StepError>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<TenantRow> for RolloutTenant {
    type Error = RepoError;

    fn try_from(row: TenantRow) -> Result<Self, RepoError> {
        let version = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        Ok(Self {
            rollout_id: RolloutId(row.rollout_id),
            tenant_id: TenantId::from_uuid(row.tenant_id).map_err(|_| corrupt("tenant id"))?,
            wave: u8::try_from(row.wave)
                .ok()
                .and_then(Wave::from_index)
                .ok_or_else(|| corrupt("wave"))?,
            position: u32::try_from(row.position).map_err(|_| corrupt("position"))?,
            state: TenantRolloutState::parse(&row.state).ok_or_else(|| corrupt("tenant state"))?,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            from_version: version(row.from_version),
            to_version: version(row.to_version),
            error: row.error.map(|e| e.0),
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

/// The rollout's tenants counted by wave and state, from the tenants themselves (after a
/// statement that moved many of them).
async fn counts(tx: &mut PgConnection, id: RolloutId) -> Result<RolloutCounts, RepoError> {
    let rows: Vec<(i16, String, i64)> = sqlx::query_as(
        "SELECT wave, state, count(*) FROM tenant_schema_rollout_tenants \
         WHERE rollout_id = $1 GROUP BY wave, state",
    )
    .bind(id.0)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let mut counts = RolloutCounts::default();
    for (wave, state, n) in rows {
        let wave = u8::try_from(wave)
            .ok()
            .and_then(Wave::from_index)
            .ok_or_else(|| corrupt("wave"))?;
        let state = TenantRolloutState::parse(&state).ok_or_else(|| corrupt("tenant state"))?;
        counts
            .wave_mut(wave)
            .add(state, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// The rollout, with its counts; locked until the transaction ends when `lock`.
async fn load(
    tx: &mut PgConnection,
    id: RolloutId,
    lock: bool,
) -> Result<Option<Rollout>, RepoError> {
    let row: Option<RolloutRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLLOUT_COLUMNS} FROM tenant_schema_rollouts WHERE rollout_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    )))
    .bind(id.0)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    row.map(RolloutRow::into_rollout).transpose()
}

/// Stores the rollout's state (its version bumped) and the event saying so.
async fn save_state(
    tx: &mut PgConnection,
    rollout: &mut Rollout,
    now: DateTime<Utc>,
    event: EventId,
) -> Result<(), RepoError> {
    rollout.version += 1;
    write_state(tx, rollout).await?;
    events::append(tx, &[rollout.state_event(event, now)]).await
}

/// Writes the rollout's state columns and counts as they are.
async fn write_state(tx: &mut PgConnection, rollout: &Rollout) -> Result<(), RepoError> {
    sqlx::query(
        "UPDATE tenant_schema_rollouts SET state = $2, reason = $3, accepted_failures = $4, \
             updated_at = $5, finished_at = $6, version = $7, counts = $8 WHERE rollout_id = $1",
    )
    .bind(rollout.id.0)
    .bind(rollout.state.as_str())
    .bind(rollout.reason.as_ref().map(Json))
    .bind(i64::try_from(rollout.accepted_failures).unwrap_or(i64::MAX))
    .bind(rollout.updated_at)
    .bind(rollout.finished_at)
    .bind(i64::try_from(rollout.version).unwrap_or(i64::MAX))
    .bind(stored(&rollout.counts))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Which entry a claim takes.
enum Pick {
    /// This tenant's (a lost worker's).
    Tenant(Uuid),
    /// The next pending one of this wave.
    Next(Wave),
}

/// An entry taken, with its tenant's placement.
#[derive(sqlx::FromRow)]
struct TakenRow {
    #[sqlx(flatten)]
    entry: TenantRow,
    tenant_database: Option<String>,
    dedicated_database: Option<String>,
    tenant_schema: Option<String>,
}

/// Marks the entry `pick` names RUNNING under `lease` and returns it with the tenant's
/// placement, in one statement; `None` when there is none.
async fn take(
    tx: &mut PgConnection,
    rollout: Rollout,
    pick: Pick,
    lease: Lease,
    now: DateTime<Utc>,
) -> Result<Option<ClaimedTenant>, RepoError> {
    let taken_from = match pick {
        Pick::Next(wave) => Some(wave),
        Pick::Tenant(_) => None,
    };
    let (which, tenant, wave) = match pick {
        Pick::Tenant(tenant) => ("$2", Some(tenant), 0),
        Pick::Next(wave) => (
            "(SELECT tenant_id FROM tenant_schema_rollout_tenants \
              WHERE rollout_id = $1 AND state = 'PENDING' AND wave = $7 \
              ORDER BY position LIMIT 1)",
            None,
            i16::from(wave.index()),
        ),
    };
    let columns = TENANT_COLUMNS
        .split(", ")
        .map(|c| format!("taken.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let row: Option<TakenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH taken AS ( \
             UPDATE tenant_schema_rollout_tenants SET state = 'RUNNING', attempts = attempts + 1, \
                 lease_token = $3, lease_owner = $4, lease_expires_at = $5, \
                 started_at = coalesce(started_at, $6) \
             WHERE rollout_id = $1 AND tenant_id = {which} RETURNING {TENANT_COLUMNS}) \
         SELECT {columns}, t.tenant_database, t.dedicated_database, t.tenant_schema \
         FROM taken LEFT JOIN tenants t ON t.tenant_id = taken.tenant_id"
    )))
    .bind(rollout.id.0)
    .bind(tenant)
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(lease.expires_at)
    .bind(now)
    .bind(wave)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(row) = row else { return Ok(None) };
    let mut rollout = rollout;
    // A pending tenant is running now; a lost worker's stays running.
    if let Some(wave) = taken_from {
        let counts = rollout.counts.wave_mut(wave);
        counts.pending = counts.pending.saturating_sub(1);
        counts.running += 1;
        write_state(tx, &rollout).await?;
    }
    Ok(Some(ClaimedTenant {
        rollout,
        tenant: RolloutTenant::try_from(row.entry)?,
        placement: placement(
            row.tenant_database,
            row.dedicated_database,
            row.tenant_schema,
        )?,
        lease,
    }))
}

#[async_trait]
impl RolloutRepository for PgStore {
    async fn start(&self, rollout: &Rollout, state_event: EventId) -> Result<Rollout, RepoError> {
        let mut rollout = rollout.clone();
        let target = version(rollout.spec.target_version)?;
        self.in_tx(async |tx| {
            let active: Option<(Uuid, String)> = sqlx::query_as(
                "SELECT rollout_id, state FROM tenant_schema_rollouts \
                 WHERE state IN ('RUNNING', 'PAUSED')",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some((id, state)) = active {
                return Err(in_progress(&id, &state));
            }
            let inserted = sqlx::query(
                "INSERT INTO tenant_schema_rollouts (rollout_id, state, target_version, spec, \
                     created_by, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
            )
            .bind(rollout.id.0)
            .bind(rollout.state.as_str())
            .bind(target)
            .bind(Json(&rollout.spec))
            .bind(&rollout.created_by)
            .bind(rollout.created_at)
            .bind(i64::try_from(rollout.version).unwrap_or(1))
            .execute(&mut *tx)
            .await;
            if let Err(sqlx::Error::Database(err)) = &inserted
                && err.constraint() == Some(ONE_ACTIVE)
            {
                return Err(RepoError::Precondition(
                    Reason::RolloutInProgress,
                    "another rollout started at the same moment".into(),
                ));
            }
            inserted.map_err(db)?;
            // The tenants behind the target, in creation order; the canary wave is chosen
            // among them.
            let (canary, ids, labels, first) = match &rollout.spec.canary {
                Canary::None => ("false", Vec::new(), None, 0),
                Canary::Tenants(ids) => (
                    "c.tenant_id = ANY($3)",
                    ids.iter().map(TenantId::as_uuid).collect(),
                    None,
                    0,
                ),
                Canary::Labels(labels) => ("c.labels @> $4", Vec::new(), Some(Json(labels)), 0),
                Canary::First(n) => ("c.n <= $5", Vec::new(), None, i64::from(*n)),
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO tenant_schema_rollout_tenants \
                     (rollout_id, tenant_id, wave, position, state, from_version) \
                 SELECT $1, tenant_id, wave, \
                     (row_number() OVER (PARTITION BY wave ORDER BY n)) - 1, 'PENDING', version \
                 FROM (SELECT c.tenant_id, c.n, c.version, \
                           CASE WHEN {canary} THEN 0 ELSE 1 END AS wave \
                       FROM (SELECT s.tenant_id, s.version, t.labels, \
                                 row_number() OVER (ORDER BY t.created_at, s.tenant_id) AS n \
                             FROM tenant_schemas s JOIN tenants t USING (tenant_id) \
                             WHERE s.version < $2 AND t.purged_at IS NULL) AS c) AS w"
            )))
            .bind(rollout.id.0)
            .bind(target)
            .bind(&ids)
            .bind(labels)
            .bind(first)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            rollout.counts = counts(tx, rollout.id).await?;
            // Nothing to do: it ends as it starts, and says so in its one event.
            rollout.settle(rollout.created_at);
            write_state(tx, &rollout).await?;
            events::append(tx, &[rollout.state_event(state_event, rollout.created_at)]).await?;
            Ok(rollout)
        })
        .await
    }

    async fn get(&self, id: RolloutId) -> Result<Option<Rollout>, RepoError> {
        self.in_tx(async |tx| load(tx, id, false).await).await
    }

    async fn active(&self) -> Result<Option<Rollout>, RepoError> {
        self.in_tx(async |tx| {
            let id: Option<Uuid> = sqlx::query_scalar(
                "SELECT rollout_id FROM tenant_schema_rollouts WHERE state IN ('RUNNING', 'PAUSED')",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            match id {
                Some(id) => load(tx, RolloutId(id), false).await,
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(
        &self,
        page_size: usize,
        after: Option<RolloutId>,
    ) -> Result<Vec<Rollout>, RepoError> {
        self.in_tx(async |tx| {
            let rows: Vec<RolloutRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ROLLOUT_COLUMNS} FROM tenant_schema_rollouts \
                 WHERE ($1::uuid IS NULL OR rollout_id < $1) ORDER BY rollout_id DESC LIMIT $2"
            )))
            .bind(after.map(|a| a.0))
            .bind(i64::try_from(page_size).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            rows.into_iter().map(RolloutRow::into_rollout).collect()
        })
        .await
    }

    async fn tenants(
        &self,
        id: RolloutId,
        state: Option<TenantRolloutState>,
        page_size: usize,
        after: Option<(Wave, u32)>,
    ) -> Result<Vec<RolloutTenant>, RepoError> {
        let (wave, position) = after.map_or((-1, -1), |(w, p)| {
            (i16::from(w.index()), i32::try_from(p).unwrap_or(i32::MAX))
        });
        let rows: Vec<TenantRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {TENANT_COLUMNS} FROM tenant_schema_rollout_tenants \
                     WHERE rollout_id = $1 AND ($2::text IS NULL OR state = $2) \
                       AND (wave, position) > ($3, $4) \
                     ORDER BY wave, position LIMIT $5"
                )))
                .bind(id.0)
                .bind(state.map(TenantRolloutState::as_str))
                .bind(wave)
                .bind(position)
                .bind(i64::try_from(page_size).unwrap_or(i64::MAX))
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        rows.into_iter().map(RolloutTenant::try_from).collect()
    }

    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedTenant>, RepoError> {
        let lease = Lease {
            token: Uuid::new_v4(),
            owner: owner.to_owned(),
            expires_at: now + lease_for,
        };
        self.in_tx(async |tx| {
            // A claim lost in a crash is harmless (the tenant stays PENDING, or its lease
            // lapses): it need not wait for the WAL to reach the disk, and the rollout's
            // row is unlocked sooner.
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            // A tenant whose worker was lost, in any rollout: its migration committed or
            // rolled back as a whole; the next attempt applies what is missing, if anything.
            let lost: Option<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT rollout_id, tenant_id FROM tenant_schema_rollout_tenants \
                 WHERE state = 'RUNNING' AND lease_expires_at <= $1 \
                 ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some((rollout, tenant)) = lost {
                let rollout = load(tx, RolloutId(rollout), true)
                    .await?
                    .ok_or_else(|| corrupt("tenant entry without its rollout"))?;
                return take(tx, rollout, Pick::Tenant(tenant), lease, now).await;
            }
            let running: Option<RolloutRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ROLLOUT_COLUMNS} FROM tenant_schema_rollouts \
                 WHERE state = 'RUNNING' FOR UPDATE"
            )))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let Some(rollout) = running.map(RolloutRow::into_rollout).transpose()? else {
                return Ok(None);
            };
            if rollout.counts.all().running >= u64::from(rollout.spec.max_parallel) {
                return Ok(None);
            }
            let Some(wave) = rollout.claimable_wave() else {
                return Ok(None);
            };
            take(tx, rollout, Pick::Next(wave), lease, now).await
        })
        .await
    }

    async fn renew(
        &self,
        rollout: RolloutId,
        tenant: TenantId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let renewed = self
            .on_conn(async |conn| {
                sqlx::query(
                    "UPDATE tenant_schema_rollout_tenants SET lease_expires_at = $4 \
                     WHERE rollout_id = $1 AND tenant_id = $2 AND state = 'RUNNING' AND lease_token = $3",
                )
                .bind(rollout.0)
                .bind(tenant.as_uuid())
                .bind(lease.token)
                .bind(until)
                .execute(conn)
                .await
            })
            .await
            .map_err(db)?
            .rows_affected();
        Ok(renewed == 1)
    }

    async fn finish(&self, finish: TenantFinish<'_>) -> Result<Rollout, RepoError> {
        self.in_tx(async |tx| {
            let mut rollout = load(tx, finish.rollout, true)
                .await?
                .ok_or(RepoError::NotFound)?;
            let (from, to, error) = match finish.outcome {
                TenantOutcome::Migrated { from, to } => {
                    (Some(version(*from)?), Some(version(*to)?), None)
                }
                TenantOutcome::Gone => (None, None, None),
                TenantOutcome::Failed(error) => (None, None, Some(Json(error))),
            };
            let state = finish.outcome.state();
            // The entry's outcome under the lease, and the schema's record with it: a
            // migrated schema's new version (an update only: a schema dropped since keeps
            // no record), a failure, or the record of a schema that is gone.
            let record = match finish.outcome {
                TenantOutcome::Migrated { .. } => {
                    "UPDATE tenant_schemas SET version = $6, last_error = NULL, \
                         migrated_at = CASE WHEN version = $6 THEN migrated_at ELSE $8 END \
                     WHERE tenant_id = $2 AND EXISTS (SELECT 1 FROM entry)"
                }
                TenantOutcome::Failed(_) => {
                    "UPDATE tenant_schemas SET last_error = $7 \
                     WHERE tenant_id = $2 AND EXISTS (SELECT 1 FROM entry)"
                }
                TenantOutcome::Gone => {
                    "DELETE FROM tenant_schemas WHERE tenant_id = $2 AND EXISTS (SELECT 1 FROM entry)"
                }
            };
            let wave: Option<i16> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "WITH entry AS ( \
                     UPDATE tenant_schema_rollout_tenants SET state = $4, \
                         from_version = coalesce(from_version, $5), \
                         to_version = $6, error = $7, finished_at = $8, lease_token = NULL, \
                         lease_owner = NULL, lease_expires_at = NULL \
                     WHERE rollout_id = $1 AND tenant_id = $2 AND state = 'RUNNING' \
                       AND lease_token = $3 RETURNING wave), \
                 record AS ({record} RETURNING 1) \
                 SELECT wave FROM entry"
            )))
            .bind(finish.rollout.0)
            .bind(finish.tenant.as_uuid())
            .bind(finish.lease.token)
            .bind(state.as_str())
            .bind(from)
            .bind(to)
            .bind(error)
            .bind(finish.now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let wave = wave
                .and_then(|w| u8::try_from(w).ok())
                .and_then(Wave::from_index)
                .ok_or(RepoError::LeaseLost)?;
            events::append(tx, finish.events).await?;
            let running = rollout.counts.wave_mut(wave);
            running.running = running.running.saturating_sub(1);
            running.add(state, 1);
            if rollout.after_finish(wave, state == TenantRolloutState::Failed, finish.now) {
                save_state(tx, &mut rollout, finish.now, finish.state_event).await?;
            } else {
                write_state(tx, &rollout).await?;
            }
            Ok(rollout)
        })
        .await
    }

    async fn command(
        &self,
        id: RolloutId,
        command: RolloutCommand,
        now: DateTime<Utc>,
        state_event: EventId,
    ) -> Result<Rollout, RepoError> {
        self.in_tx(async |tx| {
            let mut rollout = load(tx, id, true).await?.ok_or(RepoError::NotFound)?;
            let requeue = rollout.command(command, now)?;
            let statement = match requeue {
                Requeue::Nothing => None,
                Requeue::Transient => Some(
                    "UPDATE tenant_schema_rollout_tenants SET state = 'PENDING', finished_at = NULL \
                     WHERE rollout_id = $1 AND state = 'FAILED' \
                       AND NOT coalesce((error ->> 'permanent')::boolean, false)",
                ),
                Requeue::AllFailed => Some(
                    "UPDATE tenant_schema_rollout_tenants SET state = 'PENDING', finished_at = NULL \
                     WHERE rollout_id = $1 AND state = 'FAILED'",
                ),
                Requeue::CancelPending => Some(
                    "UPDATE tenant_schema_rollout_tenants SET state = 'CANCELLED', finished_at = $2 \
                     WHERE rollout_id = $1 AND state = 'PENDING'",
                ),
            };
            if let Some(statement) = statement {
                let query = sqlx::query(statement).bind(id.0);
                let query = if requeue == Requeue::CancelPending {
                    query.bind(now)
                } else {
                    query
                };
                query.execute(&mut *tx).await.map_err(db)?;
                rollout.counts = counts(tx, id).await?;
            }
            if matches!(command, RolloutCommand::Resume | RolloutCommand::RetryFailed) {
                rollout.accept_failures();
                rollout.settle(now);
            }
            save_state(tx, &mut rollout, now, state_event).await?;
            Ok(rollout)
        })
        .await
    }
}

fn in_progress(id: &Uuid, state: &str) -> RepoError {
    RepoError::Precondition(
        Reason::RolloutInProgress,
        format!(
            "rollout {id} is {state}: one rollout at a time (cancel it, or wait for it to end)"
        ),
    )
}
