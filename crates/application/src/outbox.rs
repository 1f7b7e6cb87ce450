//! The event relay: publishes the outbox's events to the broker, each tenant's in order,
//! and marks them published only once the broker confirmed their delivery. Every replica
//! runs one; the outbox's claims keep them from publishing the same events at once.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{Clock, EventPublisher, Outbox, OutboxBacklog};
use tenantd_domain::{Event, EventId, RepoError, Subject};

/// How the relay's work shows in metrics.
pub trait RelayObserver: Send + Sync {
    /// `n` events were delivered and marked published.
    fn published(&self, n: u64);
    /// `n` events could not be delivered (they wait for the next attempt).
    fn failed(&self, n: u64);
    /// The backlog as measured at `now`.
    fn backlog(&self, backlog: OutboxBacklog, now: DateTime<Utc>);
}

/// What one pass of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Events claimed.
    pub claimed: usize,
    /// Events delivered and marked published.
    pub published: usize,
    /// Events the broker did not take, or that wait behind one it did not take.
    pub held_back: usize,
}

/// Publishes the outbox.
#[derive(Clone)]
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn RelayObserver>,
    batch_size: usize,
    hold: std::time::Duration,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay claiming at most `batch_size` events at a time, each batch for `hold` (at
    /// least as long as the publisher may take to confirm a batch).
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RelayObserver>,
        batch_size: usize,
        hold: std::time::Duration,
    ) -> Self {
        Self {
            outbox,
            publisher,
            clock,
            observer,
            batch_size: batch_size.max(1),
            hold,
        }
    }

    /// Most events one pass claims.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Claims a batch, publishes it and marks what was delivered. Of each tenant, only the
    /// events before its first undelivered one count as published; later ones are sent
    /// again with it (consumers de-duplicate on the event id), so no tenant's events are
    /// ever published out of order.
    ///
    /// # Errors
    /// When the outbox cannot be read or marked (the events are published again later).
    pub async fn relay_once(&self) -> Result<Relayed, RepoError> {
        let batch = self.outbox.claim(self.batch_size, self.hold).await?;
        let claimed = batch.events().len();
        if claimed == 0 {
            batch.finish(&[]).await?;
            return Ok(Relayed::default());
        }
        let outcomes = self.publisher.publish(batch.events()).await;
        let published = delivered_in_order(batch.events(), &outcomes);
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        if let Some(Err(first)) = outcomes.iter().find(|o| o.is_err()) {
            tracing::debug!(failed, error = %first, "events not delivered; they wait in the outbox");
        }
        batch.finish(&published).await?;
        let relayed = Relayed {
            claimed,
            published: published.len(),
            held_back: claimed - published.len(),
        };
        self.observer.published(relayed.published as u64);
        self.observer.failed(failed as u64);
        Ok(relayed)
    }

    /// Measures the backlog and reports it to the observer.
    ///
    /// # Errors
    /// When the outbox cannot be read.
    pub async fn measure(&self) -> Result<OutboxBacklog, RepoError> {
        let backlog = self.outbox.backlog().await?;
        self.observer.backlog(backlog, self.clock.now());
        Ok(backlog)
    }

    /// Waits at most `timeout` for deliveries still in flight (at shutdown).
    ///
    /// # Errors
    /// When something was still undelivered at the timeout.
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<(), String> {
        self.publisher
            .flush(timeout)
            .await
            .map_err(|err| err.to_string())
    }
}

/// The events that count as published: of each subject, those before its first failure
/// (a missing outcome is a failure).
fn delivered_in_order(
    events: &[Event],
    outcomes: &[Result<(), tenantd_domain::ports::PublishError>],
) -> Vec<EventId> {
    let mut blocked: HashSet<Subject> = HashSet::new();
    let mut published = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if blocked.contains(&event.subject) {
            continue;
        }
        if matches!(outcomes.get(i), Some(Ok(()))) {
            published.push(event.id);
        } else {
            blocked.insert(event.subject);
        }
    }
    published
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tenantd_domain::EventKind;
    use tenantd_domain::ports::{MockClock, MockEventPublisher, OutboxBatch, PublishError};
    use uuid::Uuid;

    use super::*;

    /// An outbox holding a fixed batch and recording what was marked.
    struct FakeOutbox {
        events: Vec<Event>,
        marked: Arc<Mutex<Vec<EventId>>>,
    }

    struct FakeBatch {
        events: Vec<Event>,
        marked: Arc<Mutex<Vec<EventId>>>,
    }

    #[async_trait]
    impl OutboxBatch for FakeBatch {
        fn events(&self) -> &[Event] {
            &self.events
        }
        async fn finish(self: Box<Self>, published: &[EventId]) -> Result<(), RepoError> {
            self.marked.lock().unwrap().extend_from_slice(published);
            Ok(())
        }
    }

    #[async_trait]
    impl Outbox for FakeOutbox {
        async fn claim(
            &self,
            limit: usize,
            _hold: std::time::Duration,
        ) -> Result<Box<dyn OutboxBatch>, RepoError> {
            Ok(Box::new(FakeBatch {
                events: self.events.iter().take(limit).cloned().collect(),
                marked: self.marked.clone(),
            }))
        }
        async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
            Ok(OutboxBacklog {
                events: self.events.len() as u64,
                oldest: self.events.first().map(|e| e.occurred_at),
            })
        }
    }

    #[derive(Default)]
    struct Counts(Mutex<(u64, u64, Option<OutboxBacklog>)>);

    impl RelayObserver for Counts {
        fn published(&self, n: u64) {
            self.0.lock().unwrap().0 += n;
        }
        fn failed(&self, n: u64) {
            self.0.lock().unwrap().1 += n;
        }
        fn backlog(&self, backlog: OutboxBacklog, _now: DateTime<Utc>) {
            self.0.lock().unwrap().2 = Some(backlog);
        }
    }

    fn event(tenant: tenantd_domain::TenantId) -> Event {
        Event {
            id: EventId(Uuid::now_v7()),
            subject: tenant.into(),
            occurred_at: Utc::now(),
            kind: EventKind::TenantResumed,
        }
    }

    fn tenant() -> tenantd_domain::TenantId {
        tenantd_domain::TenantId::from_uuid(Uuid::now_v7()).unwrap()
    }

    fn relay(
        events: Vec<Event>,
        publisher: MockEventPublisher,
    ) -> (OutboxRelay, Arc<Mutex<Vec<EventId>>>, Arc<Counts>) {
        let marked = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Counts::default());
        let mut clock = MockClock::new();
        clock.expect_now().returning(Utc::now);
        let relay = OutboxRelay::new(
            Arc::new(FakeOutbox {
                events,
                marked: marked.clone(),
            }),
            Arc::new(publisher),
            Arc::new(clock),
            counts.clone(),
            100,
            std::time::Duration::from_secs(30),
        );
        (relay, marked, counts)
    }

    #[tokio::test]
    async fn only_what_was_delivered_before_a_tenants_first_failure_is_marked() {
        let (a, b) = (tenant(), tenant());
        let events = vec![event(a), event(b), event(a), event(b), event(a)];
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let mut publisher = MockEventPublisher::new();
        // a: ok, FAIL, ok (delivered, but after a failure: held back); b: ok, ok.
        publisher.expect_publish().times(1).returning(|events| {
            assert_eq!(events.len(), 5);
            vec![
                Ok(()),
                Ok(()),
                Err(PublishError("timed out".into())),
                Ok(()),
                Ok(()),
            ]
        });
        let (relay, marked, counts) = relay(events, publisher);
        let relayed = relay.relay_once().await.unwrap();
        assert_eq!(
            relayed,
            Relayed {
                claimed: 5,
                published: 3,
                held_back: 2
            }
        );
        assert_eq!(*marked.lock().unwrap(), vec![ids[0], ids[1], ids[3]]);
        let counts = counts.0.lock().unwrap();
        assert_eq!((counts.0, counts.1), (3, 1));
    }

    #[tokio::test]
    async fn an_empty_outbox_publishes_nothing_and_the_backlog_is_reported() {
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().never();
        let (relay, marked, counts) = relay(Vec::new(), publisher);
        assert_eq!(relay.relay_once().await.unwrap(), Relayed::default());
        assert!(marked.lock().unwrap().is_empty());
        assert_eq!(relay.measure().await.unwrap().events, 0);
        assert_eq!(counts.0.lock().unwrap().2.map(|b| b.events), Some(0));
    }

    #[tokio::test]
    async fn missing_outcomes_count_as_failures() {
        let t = tenant();
        let events = vec![event(t), event(t)];
        let first = events[0].id;
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().returning(|_| vec![Ok(())]);
        let (relay, marked, _) = relay(events, publisher);
        assert_eq!(relay.relay_once().await.unwrap().published, 1);
        assert_eq!(*marked.lock().unwrap(), vec![first]);
    }
}
