//! The outbox, relay side. A relay claims the oldest unpublished events with
//! `FOR UPDATE SKIP LOCKED` inside a transaction it keeps open while it publishes them,
//! then marks the delivered ones and commits. A relay (or replica) that dies mid-batch
//! rolls back: its events are claimed again (delivery is at least once).
//!
//! Order per tenant: an event is kept in a batch only if no earlier event of its tenant is
//! unpublished outside the batch (held by another relay, or not claimed because the batch
//! was full); once one of a tenant's events is dropped, its later ones are too.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use tenantd_domain::ports::{Outbox, OutboxBacklog, OutboxBatch};
use tenantd_domain::{Event, EventId, RepoError};
use uuid::Uuid;

use super::PgStore;
use super::errors::db;
use super::rows::EventRow;

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
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT event_id, tenant_id, payload, occurred_at FROM tenant_events \
             WHERE published_at IS NULL ORDER BY event_id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
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
        let tenants: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
        let behind: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT c.event_id FROM unnest($1::uuid[], $2::uuid[]) AS c(event_id, tenant_id) \
             WHERE EXISTS (SELECT 1 FROM tenant_events x \
                 WHERE x.tenant_id = c.tenant_id AND x.published_at IS NULL \
                   AND x.event_id < c.event_id AND NOT (x.event_id = ANY($1)))",
        )
        .bind(&ids)
        .bind(&tenants)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect();
        let mut blocked: HashSet<Uuid> = HashSet::new();
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            if blocked.contains(&row.tenant_id) || behind.contains(&row.event_id) {
                blocked.insert(row.tenant_id);
                continue;
            }
            let (event_id, tenant_id) = (row.event_id, row.tenant_id);
            match Event::try_from(row) {
                Ok(event) => events.push(event),
                Err(err) => {
                    // Left unpublished, and its tenant's later events wait behind it: an
                    // operator has to look at it.
                    tracing::error!(%event_id, error = %err, "ALERT: an outbox event does not decode; its tenant's events are held back");
                    blocked.insert(tenant_id);
                }
            }
        }
        Ok(Box::new(PgOutboxBatch { tx, events }))
    }

    async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
        let (events, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
            "SELECT count(*), min(created_at) FROM tenant_events WHERE published_at IS NULL",
        )
        .fetch_one(self.pool())
        .await
        .map_err(db)?;
        Ok(OutboxBacklog {
            events: u64::try_from(events).unwrap_or(0),
            oldest,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::Utc;
    use tenantd_domain::{EventKind, TenantId};

    use super::*;
    use crate::postgres::testing::{ScratchSchema, test_key_ring};

    const HOLD: std::time::Duration = std::time::Duration::from_secs(30);

    async fn store() -> (PgStore, ScratchSchema) {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("migrated");
        (PgStore::new(pool, Arc::new(test_key_ring())), schema)
    }

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::now_v7()).unwrap()
    }

    async fn append(store: &PgStore, tenant: TenantId) -> EventId {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO tenant_events (event_id, tenant_id, event_type, payload, occurred_at) \
             VALUES ($1, $2, 'tenant.v1.TenantResumed', $3, now())",
        )
        .bind(id)
        .bind(tenant.as_uuid())
        .bind(serde_json::to_value(EventKind::TenantResumed).unwrap())
        .execute(store.pool())
        .await
        .unwrap();
        EventId(id)
    }

    fn ids(batch: &dyn OutboxBatch) -> Vec<EventId> {
        batch.events().iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn batches_skip_held_events_and_never_overtake_a_tenants_earlier_event() {
        let (store, _schema) = store().await;
        let (a, b) = (tenant(), tenant());
        let a1 = append(&store, a).await;
        let b1 = append(&store, b).await;
        let a2 = append(&store, a).await;
        let b2 = append(&store, b).await;
        let a3 = append(&store, a).await;
        let backlog = store.backlog().await.unwrap();
        assert_eq!(backlog.events, 5);
        assert!(backlog.oldest.is_some_and(|t| t <= Utc::now()));

        let first = store.claim(2, HOLD).await.unwrap();
        assert_eq!(ids(first.as_ref()), vec![a1, b1]);
        // The rest are free, but each waits behind its tenant's event held by `first`.
        let second = store.claim(10, HOLD).await.unwrap();
        assert!(
            ids(second.as_ref()).is_empty(),
            "{:?}",
            ids(second.as_ref())
        );
        // a1 delivered, b1 not: b1 goes back.
        first.finish(&[a1]).await.unwrap();
        drop(second);

        let third = store.claim(10, HOLD).await.unwrap();
        assert_eq!(ids(third.as_ref()), vec![b1, a2, b2, a3]);
        third.finish(&[b1, a2, b2, a3]).await.unwrap();
        assert_eq!(store.backlog().await.unwrap().events, 0);
        assert!(ids(store.claim(10, HOLD).await.unwrap().as_ref()).is_empty());
    }

    #[tokio::test]
    async fn a_dropped_batch_gives_its_events_back() {
        let (store, _schema) = store().await;
        let t = tenant();
        let e1 = append(&store, t).await;
        let e2 = append(&store, t).await;
        drop(store.claim(10, HOLD).await.unwrap());
        let again = store.claim(10, HOLD).await.unwrap();
        assert_eq!(ids(again.as_ref()), vec![e1, e2]);
        // Nothing delivered: nothing marked.
        again.finish(&[]).await.unwrap();
        assert_eq!(store.backlog().await.unwrap().events, 2);
    }

    #[tokio::test]
    async fn concurrent_relays_publish_every_event_once_and_each_tenant_in_order() {
        let (store, _schema) = store().await;
        let tenants: Vec<TenantId> = (0..20).map(|_| tenant()).collect();
        for round in 0..10 {
            for t in &tenants[..(10 + round)] {
                append(&store, *t).await;
            }
        }
        let total = store.backlog().await.unwrap().events;
        let log: Arc<Mutex<Vec<Event>>> = Arc::default();
        let relays = (0..4).map(|_| {
            let store = store.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    let batch = store.claim(25, HOLD).await.unwrap();
                    if batch.events().is_empty() {
                        idle += 1;
                        tokio::task::yield_now().await;
                    } else {
                        idle = 0;
                    }
                    // "Publishing" is appending to the log while the batch is held.
                    log.lock().unwrap().extend(batch.events().iter().cloned());
                    let all = ids(batch.as_ref());
                    batch.finish(&all).await.unwrap();
                }
            })
        });
        for relay in relays.collect::<Vec<_>>() {
            relay.await.unwrap();
        }
        assert_eq!(store.backlog().await.unwrap().events, 0);
        let log = log.lock().unwrap();
        assert_eq!(log.len() as u64, total, "every event exactly once");
        for t in &tenants {
            let order: Vec<EventId> = log
                .iter()
                .filter(|e| e.tenant_id == *t)
                .map(|e| e.id)
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "tenant {t}'s events were published in order");
        }
    }
}
