//! The outbox, relay side. A relay claims the oldest unpublished events with
//! `FOR UPDATE SKIP LOCKED` inside a transaction it keeps open while it publishes them,
//! then marks the delivered ones and commits. A relay (or replica) that dies mid-batch
//! rolls back: its events are claimed again (delivery is at least once).
//!
//! Order per tenant: an event is kept in a batch only if no earlier event of its tenant is
//! unpublished outside the batch (held by another relay, or not claimed because the batch
//! was full); once one of a tenant's events is dropped, its later ones are too.
//!
//! Dead letters (marked `dead_lettered_at`, listed in `outbox_dead_letters`) are
//! unpublished events the relay gave up on: they are never claimed and hold back no later
//! event, until an operator retries them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tenantd_domain::ports::{
    BatchOutcome, DeadLetter, DeadLetterSelection, Outbox, OutboxBacklog, OutboxBatch,
    UndecodableEvent,
};
use tenantd_domain::{Event, EventId, EventKind, RepoError, TenantId};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::tables::events::{EVENT_COLUMNS, EventRow};

/// How long a stored event of a known type that does not decode is held before it counts
/// against its attempts: during a rolling upgrade a newer replica, which may read it, has
/// that long to publish it (a newer version may add what this one cannot decode inside a
/// known type).
const UNDECODABLE_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The longest delivery error kept (a broker's message; longer ones are cut).
const MAX_ERROR_CHARS: i32 = 2000;

/// A claimed row: the event, its type as stored and its failed attempts so far.
#[derive(sqlx::FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    event: EventRow,
    event_type: String,
    delivery_attempts: i32,
    created_at: DateTime<Utc>,
}

/// A `outbox_dead_letters` row with its event's facts.
#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    event_id: Uuid,
    tenant_id: Option<Uuid>,
    rollout_id: Option<Uuid>,
    event_type: String,
    occurred_at: DateTime<Utc>,
    delivery_attempts: i32,
    last_delivery_error: String,
    dead_lettered_at: DateTime<Utc>,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(row: DeadLetterRow) -> Self {
        Self {
            event_id: EventId(row.event_id),
            tenant_id: row.tenant_id,
            rollout_id: row.rollout_id,
            event_type: row.event_type,
            occurred_at: row.occurred_at,
            delivery_attempts: u32::try_from(row.delivery_attempts).unwrap_or(0),
            last_error: row.last_delivery_error,
            dead_lettered_at: row.dead_lettered_at,
        }
    }
}

/// When an event this version cannot read was last reported (seconds since the epoch).
static LAST_ALERT: AtomicI64 = AtomicI64::new(0);

/// Whether a minute has passed since the last report of an event this version cannot read.
fn alert_due() -> bool {
    let now = chrono::Utc::now().timestamp();
    let last = LAST_ALERT.load(Ordering::Relaxed);
    now - last >= 60
        && LAST_ALERT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// A claimed batch: the events and the transaction holding their row locks.
struct PgOutboxBatch {
    tx: Transaction<'static, Postgres>,
    events: Vec<Event>,
    undecodable: Vec<UndecodableEvent>,
    attempts: HashMap<EventId, u32>,
}

#[async_trait]
impl OutboxBatch for PgOutboxBatch {
    fn events(&self) -> &[Event] {
        &self.events
    }

    fn undecodable(&self) -> &[UndecodableEvent] {
        &self.undecodable
    }

    fn attempts(&self, event: EventId) -> u32 {
        self.attempts.get(&event).copied().unwrap_or(0)
    }

    async fn finish(mut self: Box<Self>, outcome: &BatchOutcome) -> Result<(), RepoError> {
        if !outcome.published.is_empty() {
            let ids: Vec<Uuid> = outcome.published.iter().map(|id| id.0).collect();
            sqlx::query(
                "UPDATE tenant_events SET published_at = now() \
                 WHERE event_id = ANY($1) AND published_at IS NULL",
            )
            .bind(&ids)
            .execute(&mut *self.tx)
            .await
            .map_err(db)?;
        }
        let failures: Vec<_> = outcome
            .failed
            .iter()
            .map(|f| (f, false))
            .chain(outcome.dead_lettered.iter().map(|f| (f, true)))
            .collect();
        if !failures.is_empty() {
            let ids: Vec<Uuid> = failures.iter().map(|(f, _)| f.event_id.0).collect();
            let errors: Vec<&str> = failures.iter().map(|(f, _)| f.error.as_str()).collect();
            let dead: Vec<bool> = failures.iter().map(|(_, dead)| *dead).collect();
            // One statement: every failure counts an attempt; the dead ones move.
            sqlx::query(
                "WITH f AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[]) \
                     AS f(event_id, error, dead)), \
                 bumped AS (UPDATE tenant_events e \
                     SET delivery_attempts = e.delivery_attempts + 1, \
                         last_delivery_error = left(f.error, $4), \
                         dead_lettered_at = CASE WHEN f.dead THEN now() \
                             ELSE e.dead_lettered_at END \
                     FROM f WHERE e.event_id = f.event_id AND e.published_at IS NULL \
                     RETURNING e.event_id, e.tenant_id, e.rollout_id, e.delivery_attempts, \
                         e.last_delivery_error, f.dead) \
                 INSERT INTO outbox_dead_letters \
                     (event_id, tenant_id, rollout_id, delivery_attempts, last_delivery_error) \
                 SELECT event_id, tenant_id, rollout_id, delivery_attempts, last_delivery_error \
                 FROM bumped WHERE dead ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&errors)
            .bind(&dead)
            .bind(MAX_ERROR_CHARS)
            .execute(&mut *self.tx)
            .await
            .map_err(db)?;
        }
        self.tx.commit().await.map_err(db)
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(
        &self,
        limit: usize,
        hold: std::time::Duration,
    ) -> Result<Box<dyn OutboxBatch>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        // The transaction idles while the batch is published: the pool's idle limit (a
        // safety net against leaked transactions) must not cut it short, but a relay that
        // hangs must not hold the events for ever either.
        let hold_ms = hold.as_millis().clamp(1000, 3_600_000);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL idle_in_transaction_session_timeout = {hold_ms}"
        )))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        // The dead-letter mark is on the row: a claim that meets a row another relay
        // dead-lettered after this statement's snapshot re-checks it on the locked row.
        let rows: Vec<ClaimedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS}, event_type, delivery_attempts, created_at \
             FROM tenant_events \
             WHERE published_at IS NULL AND dead_lettered_at IS NULL \
             ORDER BY event_id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Ok(Box::new(PgOutboxBatch {
                tx,
                events: Vec::new(),
                undecodable: Vec::new(),
                attempts: HashMap::new(),
            }));
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.event.event_id).collect();
        let tenants: Vec<Option<Uuid>> = rows.iter().map(|r| r.event.tenant_id).collect();
        let rollouts: Vec<Option<Uuid>> = rows.iter().map(|r| r.event.rollout_id).collect();
        // An event waits behind an earlier unpublished one of its subject (tenant or
        // rollout) that is not a dead letter, each looked up on its own partial index.
        let behind: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT c.event_id FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) \
                 AS c(event_id, tenant_id, rollout_id) \
             WHERE EXISTS (SELECT 1 FROM tenant_events x \
                 WHERE x.tenant_id = c.tenant_id AND x.published_at IS NULL \
                   AND x.dead_lettered_at IS NULL \
                   AND x.event_id < c.event_id AND NOT (x.event_id = ANY($1))) \
                OR EXISTS (SELECT 1 FROM tenant_events x \
                 WHERE x.rollout_id = c.rollout_id AND x.published_at IS NULL \
                   AND x.rollout_id IS NOT NULL AND x.dead_lettered_at IS NULL \
                   AND x.event_id < c.event_id AND NOT (x.event_id = ANY($1)))",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&rollouts)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
        let mut blocked: HashSet<Option<Uuid>> = HashSet::new();
        let mut events = Vec::with_capacity(rows.len());
        let mut undecodable = Vec::new();
        let mut attempts = HashMap::new();
        let held_since = Utc::now() - UNDECODABLE_GRACE;
        for ClaimedRow {
            event: row,
            event_type,
            delivery_attempts,
            created_at,
        } in rows
        {
            let subject = row.subject_id();
            if blocked.contains(&subject) || behind.contains(&row.event_id) {
                blocked.insert(subject);
                continue;
            }
            let event_id = EventId(row.event_id);
            // Its tenant's later events wait behind it either way.
            blocked.insert(subject);
            match Event::try_from(row) {
                Ok(event) => {
                    events.push(event);
                    blocked.remove(&subject);
                }
                Err(err) if EventKind::is_known_type(&event_type) && created_at < held_since => {
                    undecodable.push(UndecodableEvent {
                        event_id,
                        error: err.to_string(),
                    });
                }
                Err(_) => {
                    // Another (newer) version's event, or one that no replica has read for
                    // less than the grace: a replica of that version publishes it. Held;
                    // said once a minute per process.
                    if alert_due() {
                        tracing::error!(event_id = %event_id.0, %event_type, "ALERT: an outbox event this version cannot read; its tenant's events are held back until a replica that can publishes them");
                    }
                    continue;
                }
            }
            attempts.insert(event_id, u32::try_from(delivery_attempts).unwrap_or(0));
        }
        Ok(Box::new(PgOutboxBatch {
            tx,
            events,
            undecodable,
            attempts,
        }))
    }

    async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
        let (events, oldest, dead_letters): (i64, Option<DateTime<Utc>>, i64) = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE dead_lettered_at IS NULL), \
                         min(occurred_at) FILTER (WHERE dead_lettered_at IS NULL), \
                         count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) \
                     FROM tenant_events WHERE published_at IS NULL",
                )
                .fetch_one(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(OutboxBacklog {
            events: u64::try_from(events).unwrap_or(0),
            oldest,
            dead_letters: u64::try_from(dead_letters).unwrap_or(0),
        })
    }

    async fn dead_letters(
        &self,
        tenant: Option<TenantId>,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, RepoError> {
        let tenant = tenant.map(|t| t.as_uuid());
        let after = after.map(|id| id.0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<DeadLetterRow> = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT d.event_id, e.tenant_id, e.rollout_id, e.event_type, e.occurred_at, \
                         d.delivery_attempts, d.last_delivery_error, d.dead_lettered_at \
                     FROM outbox_dead_letters d JOIN tenant_events e USING (event_id) \
                     WHERE ($1::uuid IS NULL OR d.tenant_id = $1) \
                       AND ($2::uuid IS NULL OR d.event_id > $2) \
                     ORDER BY d.event_id LIMIT $3",
                )
                .bind(tenant)
                .bind(after)
                .bind(limit)
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(DeadLetter::from).collect())
    }

    async fn retry_dead_letters(
        &self,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<EventId>, RepoError> {
        let (ids, tenant): (Option<Vec<Uuid>>, Option<Uuid>) = match selection {
            DeadLetterSelection::Events(ids) => (Some(ids.iter().map(|id| id.0).collect()), None),
            DeadLetterSelection::Tenant(tenant) => (None, Some(tenant.as_uuid())),
        };
        // Back in the outbox with a clean count (the last error is kept on the event).
        let mut retried: Vec<Uuid> = self
            .on_conn(async |conn| {
                sqlx::query_scalar(
                    "WITH gone AS (DELETE FROM outbox_dead_letters \
                         WHERE event_id = ANY($1) OR tenant_id = $2 RETURNING event_id) \
                     UPDATE tenant_events e SET delivery_attempts = 0, dead_lettered_at = NULL \
                     FROM gone WHERE e.event_id = gone.event_id RETURNING e.event_id",
                )
                .bind(&ids)
                .bind(tenant)
                .fetch_all(conn)
                .await
            })
            .await
            .map_err(db)?;
        retried.sort_unstable();
        Ok(retried.into_iter().map(EventId).collect())
    }
}
