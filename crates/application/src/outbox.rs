//! The event relay: publishes the outbox's events to the broker, each tenant's in order,
//! and marks them published only once the broker confirmed their delivery. Every replica
//! runs one; the outbox's claims keep them from publishing the same events at once.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    BatchOutcome, Clock, EventPublisher, FailedDelivery, Outbox, OutboxBacklog, OutboxBatch,
    PublishError,
};
use tenantd_domain::{RepoError, Subject};

/// How the relay's work shows in metrics.
pub trait RelayObserver: Send + Sync {
    /// `n` events were delivered and marked published.
    fn published(&self, n: u64);
    /// `n` events could not be delivered (they wait for the next attempt).
    fn failed(&self, n: u64);
    /// `n` events were given up on and moved to the dead letters.
    fn dead_lettered(&self, n: u64);
    /// The backlog as measured at `now`.
    fn backlog(&self, backlog: OutboxBacklog, now: DateTime<Utc>);
}

/// What one pass of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Events claimed (undecodable ones included).
    pub claimed: usize,
    /// Events delivered and marked published.
    pub published: usize,
    /// Events the broker did not take, or that wait behind one it did not take.
    pub held_back: usize,
    /// Events given up on (moved to the dead letters), among `held_back`.
    pub dead_lettered: usize,
    /// Tenants whose first undelivered event failed for the broker's reasons (not refused
    /// for itself): while there are any, the relay backs off.
    pub broker_failures: usize,
}

/// How the relay claims and when it gives up on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// Most events one pass claims.
    pub batch_size: usize,
    /// How long a claim lasts: at least as long as the publisher may take to confirm a
    /// batch.
    pub hold: std::time::Duration,
    /// Failed attempts after which an event that cannot be sent (or that does not
    /// decode) becomes a dead letter. Failures of the broker as a whole (down, timing out)
    /// never count: they hold the events, and the publisher's health says so.
    pub max_delivery_attempts: u32,
}

/// Publishes the outbox.
#[derive(Clone)]
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn RelayObserver>,
    settings: RelaySettings,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay over `outbox` publishing to `publisher`.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RelayObserver>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            outbox,
            publisher,
            clock,
            observer,
            settings: RelaySettings {
                batch_size: settings.batch_size.max(1),
                max_delivery_attempts: settings.max_delivery_attempts.max(1),
                ..settings
            },
        }
    }

    /// Most events one pass claims.
    pub fn batch_size(&self) -> usize {
        self.settings.batch_size
    }

    /// Claims a batch, publishes it and records what became of it. Of each tenant, only
    /// the events before its first undelivered one count as published; later ones are sent
    /// again with it (consumers de-duplicate on the event id), so no tenant's events are
    /// ever published out of order. A tenant's first undelivered event that could not be
    /// sent as it is (or that does not decode) has one more failed attempt, and
    /// becomes a dead letter at the limit (an ALERT in the log): its tenant's later events
    /// go on without it.
    ///
    /// # Errors
    /// When the outbox cannot be read or marked (the events are published again later).
    pub async fn relay_once(&self) -> Result<Relayed, RepoError> {
        let batch = self
            .outbox
            .claim(self.settings.batch_size, self.settings.hold)
            .await?;
        let claimed = batch.events().len() + batch.undecodable().len();
        if claimed == 0 {
            batch.finish(&BatchOutcome::default()).await?;
            return Ok(Relayed::default());
        }
        let outcomes = if batch.events().is_empty() {
            Vec::new()
        } else {
            self.publisher.publish(batch.events()).await
        };
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        if let Some(Err(first)) = outcomes.iter().find(|o| o.is_err()) {
            tracing::debug!(failed, error = %first, "events not delivered; they wait in the outbox");
        }
        let undecodable = batch.undecodable().len();
        let (outcome, broker_failures) = self.outcome(batch.as_ref(), &outcomes);
        for dead in &outcome.dead_lettered {
            tracing::error!(
                event_id = %dead.event_id.0,
                attempts = self.settings.max_delivery_attempts,
                error = %dead.error,
                "ALERT: an outbox event cannot be delivered and became a dead letter; its tenant's later events go on without it (ListDeadLetters, RetryDeadLetters)"
            );
        }
        batch.finish(&outcome).await?;
        let relayed = Relayed {
            claimed,
            published: outcome.published.len(),
            held_back: claimed - outcome.published.len(),
            dead_lettered: outcome.dead_lettered.len(),
            broker_failures,
        };
        self.observer.published(relayed.published as u64);
        self.observer.failed((failed + undecodable) as u64);
        self.observer.dead_lettered(relayed.dead_lettered as u64);
        Ok(relayed)
    }

    /// What became of `batch` given the publisher's `outcomes` (one per event; a missing
    /// one is a failure), and how many tenants' first failure was the broker's.
    fn outcome(
        &self,
        batch: &dyn OutboxBatch,
        outcomes: &[Result<(), PublishError>],
    ) -> (BatchOutcome, usize) {
        let mut outcome = BatchOutcome::default();
        let mut count = |event_id, error: String| {
            let failure = FailedDelivery { event_id, error };
            if batch.attempts(event_id).saturating_add(1) >= self.settings.max_delivery_attempts {
                outcome.dead_lettered.push(failure);
            } else {
                outcome.failed.push(failure);
            }
        };
        let mut blocked: HashSet<Subject> = HashSet::new();
        let mut published = Vec::with_capacity(outcomes.len());
        let mut broker_failures = 0;
        for (i, event) in batch.events().iter().enumerate() {
            if blocked.contains(&event.subject) {
                continue;
            }
            match outcomes.get(i) {
                Some(Ok(())) => published.push(event.id),
                // The tenant's first failure is the event that was attempted; only a
                // refusal of the event itself counts against it.
                Some(Err(err)) => {
                    blocked.insert(event.subject);
                    if err.permanent {
                        count(event.id, err.message.clone());
                    } else {
                        broker_failures += 1;
                    }
                }
                None => {
                    blocked.insert(event.subject);
                    broker_failures += 1;
                }
            }
        }
        for undecodable in batch.undecodable() {
            count(undecodable.event_id, undecodable.error.clone());
        }
        outcome.published = published;
        (outcome, broker_failures)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tenantd_domain::ports::{
        DeadLetter, DeadLetterSelection, MockClock, MockEventPublisher, OutboxBatch,
        UndecodableEvent,
    };
    use tenantd_domain::{Event, EventId, EventKind, TenantId};
    use uuid::Uuid;

    use super::*;

    const MAX_ATTEMPTS: u32 = 3;

    /// An outbox holding a fixed batch (with failed attempts so far) and recording what
    /// became of it.
    #[derive(Default)]
    struct FakeOutbox {
        events: Vec<Event>,
        undecodable: Vec<UndecodableEvent>,
        attempts: HashMap<EventId, u32>,
        finished: Arc<Mutex<Vec<BatchOutcome>>>,
    }

    struct FakeBatch {
        events: Vec<Event>,
        undecodable: Vec<UndecodableEvent>,
        attempts: HashMap<EventId, u32>,
        finished: Arc<Mutex<Vec<BatchOutcome>>>,
    }

    #[async_trait]
    impl OutboxBatch for FakeBatch {
        fn events(&self) -> &[Event] {
            &self.events
        }
        fn undecodable(&self) -> &[UndecodableEvent] {
            &self.undecodable
        }
        fn attempts(&self, event: EventId) -> u32 {
            self.attempts.get(&event).copied().unwrap_or(0)
        }
        async fn finish(self: Box<Self>, outcome: &BatchOutcome) -> Result<(), RepoError> {
            self.finished.lock().unwrap().push(outcome.clone());
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
                undecodable: self.undecodable.clone(),
                attempts: self.attempts.clone(),
                finished: self.finished.clone(),
            }))
        }
        async fn backlog(&self) -> Result<OutboxBacklog, RepoError> {
            Ok(OutboxBacklog {
                events: self.events.len() as u64,
                oldest: self.events.first().map(|e| e.occurred_at),
                dead_letters: 0,
            })
        }
        async fn dead_letters(
            &self,
            _tenant: Option<TenantId>,
            _after: Option<EventId>,
            _limit: usize,
        ) -> Result<Vec<DeadLetter>, RepoError> {
            Ok(Vec::new())
        }
        async fn retry_dead_letters(
            &self,
            _selection: &DeadLetterSelection,
        ) -> Result<Vec<EventId>, RepoError> {
            Ok(Vec::new())
        }
    }

    /// Published, failed, dead-lettered and the last backlog, as observed.
    #[derive(Default)]
    struct Counts(Mutex<(u64, u64, u64, Option<OutboxBacklog>)>);

    impl RelayObserver for Counts {
        fn published(&self, n: u64) {
            self.0.lock().unwrap().0 += n;
        }
        fn failed(&self, n: u64) {
            self.0.lock().unwrap().1 += n;
        }
        fn dead_lettered(&self, n: u64) {
            self.0.lock().unwrap().2 += n;
        }
        fn backlog(&self, backlog: OutboxBacklog, _now: DateTime<Utc>) {
            self.0.lock().unwrap().3 = Some(backlog);
        }
    }

    impl Counts {
        fn totals(&self) -> (u64, u64, u64) {
            let counts = self.0.lock().unwrap();
            (counts.0, counts.1, counts.2)
        }
    }

    fn event(tenant: TenantId) -> Event {
        Event {
            id: EventId(Uuid::now_v7()),
            subject: tenant.into(),
            occurred_at: Utc::now(),
            kind: EventKind::TenantResumed,
        }
    }

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::now_v7()).unwrap()
    }

    fn relay(
        outbox: FakeOutbox,
        publisher: MockEventPublisher,
    ) -> (OutboxRelay, Arc<Mutex<Vec<BatchOutcome>>>, Arc<Counts>) {
        let finished = outbox.finished.clone();
        let counts = Arc::new(Counts::default());
        let mut clock = MockClock::new();
        clock.expect_now().returning(Utc::now);
        let relay = OutboxRelay::new(
            Arc::new(outbox),
            Arc::new(publisher),
            Arc::new(clock),
            counts.clone(),
            RelaySettings {
                batch_size: 100,
                hold: std::time::Duration::from_secs(30),
                max_delivery_attempts: MAX_ATTEMPTS,
            },
        );
        (relay, finished, counts)
    }

    fn outbox(events: Vec<Event>) -> FakeOutbox {
        FakeOutbox {
            events,
            ..FakeOutbox::default()
        }
    }

    fn failure(event_id: EventId, error: &str) -> FailedDelivery {
        FailedDelivery {
            event_id,
            error: error.into(),
        }
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
                Err(PublishError::transient("timed out")),
                Ok(()),
                Ok(()),
            ]
        });
        let (relay, finished, counts) = relay(outbox(events), publisher);
        let relayed = relay.relay_once().await.unwrap();
        assert_eq!(
            relayed,
            Relayed {
                claimed: 5,
                published: 3,
                held_back: 2,
                dead_lettered: 0,
                broker_failures: 1,
            }
        );
        assert_eq!(
            *finished.lock().unwrap(),
            vec![BatchOutcome::published(&[ids[0], ids[1], ids[3]])],
            "a broker's failure counts no attempt against the event"
        );
        assert_eq!(counts.totals(), (3, 1, 0));
    }

    #[tokio::test]
    async fn an_event_refused_for_itself_counts_an_attempt_and_is_dead_lettered_at_the_limit() {
        let (a, b) = (tenant(), tenant());
        let events = vec![event(a), event(b), event(a), event(b)];
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let refused = |events: &[Event]| {
            let mut outcomes = vec![Ok(()); events.len()];
            outcomes[0] = Err(PublishError::permanent("Message size too large"));
            outcomes[2] = Err(PublishError::transient("not sent"));
            outcomes
        };
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().returning(refused);
        let (first, finished, _) = relay(outbox(events.clone()), publisher);
        first.relay_once().await.unwrap();
        assert_eq!(
            *finished.lock().unwrap(),
            vec![BatchOutcome {
                published: vec![ids[1], ids[3]],
                failed: vec![failure(ids[0], "Message size too large")],
                dead_lettered: Vec::new(),
            }]
        );

        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().returning(refused);
        let (last, finished, counts) = relay(
            FakeOutbox {
                attempts: HashMap::from([(ids[0], MAX_ATTEMPTS - 1)]),
                ..outbox(events)
            },
            publisher,
        );
        let relayed = last.relay_once().await.unwrap();
        assert_eq!(
            (
                relayed.dead_lettered,
                relayed.held_back,
                relayed.broker_failures
            ),
            (1, 2, 0),
            "a refusal is no failure of the broker"
        );
        assert_eq!(
            *finished.lock().unwrap(),
            vec![BatchOutcome {
                published: vec![ids[1], ids[3]],
                failed: Vec::new(),
                dead_lettered: vec![failure(ids[0], "Message size too large")],
            }],
            "the tenant's later event waits for the next claim"
        );
        assert_eq!(counts.totals(), (2, 2, 1));
    }

    #[tokio::test]
    async fn a_broker_failure_never_makes_a_dead_letter_however_often_it_failed() {
        let t = tenant();
        let events = vec![event(t)];
        let id = events[0].id;
        let mut publisher = MockEventPublisher::new();
        publisher
            .expect_publish()
            .returning(|_| vec![Err(PublishError::transient("Message timed out"))]);
        let (relay, finished, counts) = relay(
            FakeOutbox {
                attempts: HashMap::from([(id, MAX_ATTEMPTS + 5)]),
                ..outbox(events)
            },
            publisher,
        );
        let relayed = relay.relay_once().await.unwrap();
        assert_eq!((relayed.dead_lettered, relayed.broker_failures), (0, 1));
        assert_eq!(*finished.lock().unwrap(), vec![BatchOutcome::default()]);
        assert_eq!(counts.totals(), (0, 1, 0));
    }

    #[tokio::test]
    async fn an_undecodable_event_counts_attempts_without_publishing_and_is_dead_lettered() {
        let undecodable = |attempts| {
            let id = EventId(Uuid::now_v7());
            FakeOutbox {
                undecodable: vec![UndecodableEvent {
                    event_id: id,
                    error: "payload does not decode".into(),
                }],
                attempts: HashMap::from([(id, attempts)]),
                ..FakeOutbox::default()
            }
        };
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().never();
        let (first, finished, counts) = relay(undecodable(0), publisher);
        let relayed = first.relay_once().await.unwrap();
        assert_eq!((relayed.claimed, relayed.held_back), (1, 1));
        assert_eq!(finished.lock().unwrap()[0].failed.len(), 1);
        assert_eq!(counts.totals(), (0, 1, 0));

        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().never();
        let (last, finished, counts) = relay(undecodable(MAX_ATTEMPTS - 1), publisher);
        assert_eq!(last.relay_once().await.unwrap().dead_lettered, 1);
        let outcome = finished.lock().unwrap()[0].clone();
        assert_eq!(
            (
                outcome.failed.len(),
                outcome.dead_lettered[0].error.as_str()
            ),
            (0, "payload does not decode")
        );
        assert_eq!(counts.totals(), (0, 1, 1));
    }

    #[tokio::test]
    async fn an_empty_outbox_publishes_nothing_and_the_backlog_is_reported() {
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().never();
        let (relay, finished, counts) = relay(outbox(Vec::new()), publisher);
        assert_eq!(relay.relay_once().await.unwrap(), Relayed::default());
        assert_eq!(*finished.lock().unwrap(), vec![BatchOutcome::default()]);
        assert_eq!(relay.measure().await.unwrap().events, 0);
        assert_eq!(counts.0.lock().unwrap().3.map(|b| b.events), Some(0));
    }

    #[tokio::test]
    async fn missing_outcomes_count_as_failures() {
        let t = tenant();
        let events = vec![event(t), event(t)];
        let first = events[0].id;
        let mut publisher = MockEventPublisher::new();
        publisher.expect_publish().returning(|_| vec![Ok(())]);
        let (relay, finished, _) = relay(outbox(events), publisher);
        assert_eq!(relay.relay_once().await.unwrap().published, 1);
        assert_eq!(
            *finished.lock().unwrap(),
            vec![BatchOutcome::published(&[first])]
        );
    }
}
