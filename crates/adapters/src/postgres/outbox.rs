//! The outbox, relay side. A relay claims the oldest unpublished events with
//! `FOR UPDATE SKIP LOCKED` inside a transaction it keeps open while it publishes them,
//! then marks the delivered ones and commits. A relay (or replica) that dies mid-batch
//! rolls back: its events are claimed again (delivery is at least once).
//!
//! Order per tenant: an event is kept in a batch only if no earlier event of its tenant is
//! unpublished outside the batch (held by another relay, or not claimed because the batch
//! was full); once one of a tenant's events is dropped, its later ones are too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use tenantd_domain::ports::{Outbox, OutboxBacklog, OutboxBatch};
use tenantd_domain::{Event, EventId, RepoError};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::tables::events::{EVENT_COLUMNS, EventRow};

/// When an undecodable event was last reported (seconds since the epoch).
static LAST_ALERT: AtomicI64 = AtomicI64::new(0);

/// Whether a minute has passed since the last report of an undecodable event.
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
}

#[async_trait]
impl OutboxBatch for PgOutboxBatch {
    fn events(&self) -> &[Event] {
        &self.events
    }

    async fn finish(mut self: Box<Self>, published: &[EventId]) -> Result<(), RepoError> {
        if !published.is_empty() {
            let ids: Vec<Uuid> = published.iter().map(|id| id.0).collect();
            sqlx::query(
                "UPDATE tenant_events SET published_at = now() \
                 WHERE event_id = ANY($1) AND published_at IS NULL",
            )
            .bind(&ids)
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
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM tenant_events \
             WHERE published_at IS NULL ORDER BY event_id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Ok(Box::new(PgOutboxBatch {
                tx,
                events: Vec::new(),
            }));
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
        let tenants: Vec<Option<Uuid>> = rows.iter().map(|r| r.tenant_id).collect();
        let rollouts: Vec<Option<Uuid>> = rows.iter().map(|r| r.rollout_id).collect();
        // An event waits behind an earlier unpublished one of its subject (tenant or
        // rollout), each looked up on its own partial index.
        let behind: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT c.event_id FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) \
                 AS c(event_id, tenant_id, rollout_id) \
             WHERE EXISTS (SELECT 1 FROM tenant_events x \
                 WHERE x.tenant_id = c.tenant_id AND x.published_at IS NULL \
                   AND x.event_id < c.event_id AND NOT (x.event_id = ANY($1))) \
                OR EXISTS (SELECT 1 FROM tenant_events x \
                 WHERE x.rollout_id = c.rollout_id AND x.published_at IS NULL \
                   AND x.rollout_id IS NOT NULL \
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
        for row in rows {
            let subject = row.subject_id();
            if blocked.contains(&subject) || behind.contains(&row.event_id) {
                blocked.insert(subject);
                continue;
            }
            let event_id = row.event_id;
            match Event::try_from(row) {
                Ok(event) => events.push(event),
                Err(err) => {
                    // Left unpublished, and its tenant's later events wait behind it (the
                    // backlog and oldest-age gauges show it): an operator has to look at
                    // it. Every claim meets it again: said once a minute per process.
                    if alert_due() {
                        tracing::error!(%event_id, error = %err, "ALERT: an outbox event does not decode; its tenant's events are held back");
                    }
                    blocked.insert(subject);
                }
            }
        }
        Ok(Box::new(PgOutboxBatch { tx, events }))
    }

    async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
        let (events, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) = self
            .on_conn(async |conn| {
                sqlx::query_as(
                    "SELECT count(*), min(occurred_at) FROM tenant_events \
                     WHERE published_at IS NULL",
                )
                .fetch_one(conn)
                .await
            })
            .await
            .map_err(db)?;
        Ok(OutboxBacklog {
            events: u64::try_from(events).unwrap_or(0),
            oldest,
        })
    }
}
