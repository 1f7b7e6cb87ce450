//! The event publisher on Kafka (rdkafka, librdkafka bundled): one message per event on
//! the events topic, key = tenant id (one tenant's events share a partition, so they stay
//! in order), value = the protobuf `tenant.v1.TenantEvent`, CloudEvents binary-mode
//! headers. The producer is idempotent with `acks=all`, and a delivery is reported only
//! once the broker confirmed it or `message.timeout.ms` passed.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tenantd_domain::ports::{EventPublisher, PublishError};
use tenantd_domain::{Event, Subject};

/// How often failed deliveries make the publisher check that its topic still exists.
const TOPIC_RECHECK: Duration = Duration::from_secs(5);

/// The CloudEvents `content-type` of the payload.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// Turns an event into the message value (the server's protobuf encoding).
pub type EventEncoder = Arc<dyn Fn(&Event) -> Vec<u8> + Send + Sync>;

/// Where and how events are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
    /// How long a message may wait for its delivery before it counts as failed.
    pub message_timeout: Duration,
    /// Largest message the producer sends (`message.max.bytes`).
    pub max_message_bytes: u32,
    /// Partitions of the topic when it is created here.
    pub partitions: i32,
    /// Replication factor of the topic when it is created here.
    pub replication_factor: i32,
    /// The CloudEvents `ce_source` of every event.
    pub source: String,
    /// The client id brokers see.
    pub client_id: String,
}

/// Publishes events to Kafka.
pub struct KafkaPublisher {
    settings: KafkaSettings,
    encode: EventEncoder,
    /// The producer and its generation; replaced after a failed delivery (see
    /// [`KafkaPublisher::replace`]).
    producer: RwLock<(u64, FutureProducer)>,
    /// When the topic was last made sure of after failed deliveries.
    topic_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Creates the topic (kept: dropping an admin client joins its thread).
    admin: AdminClient<DefaultClientContext>,
    /// Since when, and why, no event of a publishing round was delivered (`None` while
    /// the last round delivered one, or there was none).
    failing: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topic", &self.settings.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher with its producer (connecting happens in the background).
    ///
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(settings: KafkaSettings, encode: EventEncoder) -> Result<Self, KafkaError> {
        let producer = producer(&settings)?;
        let admin = base_config(&settings).create()?;
        Ok(Self {
            admin,
            settings,
            encode,
            producer: RwLock::new((0, producer)),
            topic_checked: std::sync::Mutex::new(None),
            failing: std::sync::Mutex::new(None),
        })
    }

    /// Creates the topic unless it exists.
    ///
    /// # Errors
    /// When the brokers cannot be reached or refuse to create it.
    pub async fn ensure_topic(&self) -> Result<(), String> {
        let topic = NewTopic::new(
            &self.settings.topic,
            self.settings.partitions,
            TopicReplication::Fixed(self.settings.replication_factor),
        );
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(5)))
            .operation_timeout(Some(Duration::from_secs(5)));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| format!("cannot create topic {}: {e}", self.settings.topic))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("cannot create topic {name}: {code}")),
            }
        }
        Ok(())
    }

    /// Whether events get delivered: a broker answers with the topic's metadata within
    /// `timeout`, and the last publishing round delivered an event (a broker that answers
    /// metadata but takes no event is not serving).
    ///
    /// # Errors
    /// Why not.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        if let Some((since, why)) = self
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Err(format!(
                "no event delivered for {:.1?}: {why}",
                since.elapsed()
            ));
        }
        let (_, producer) = self.current();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| format!("no broker answers: {e}"))?;
            match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                Some(t) => Err(format!("topic {topic} is not usable: {:?}", t.error())),
                None => Err(format!("topic {topic} does not exist")),
            }
        })
        .await
        .map_err(|e| format!("metadata task: {e}"))?
    }

    fn current(&self) -> (u64, FutureProducer) {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer of `generation` after a failed delivery; the relay publishes
    /// the undelivered events again through the new one.
    ///
    /// An idempotent producer whose request timed out must have its epoch bumped by the
    /// broker before it may send again (KIP-360), which not every Kafka-protocol broker
    /// supports (with tansu 0.6 the old producer stays wedged after an outage). A new
    /// producer gets a new producer id and fresh sequence numbers from any broker; which
    /// events were delivered is the relay's bookkeeping, so nothing is lost.
    fn replace(&self, generation: u64, used: FutureProducer) {
        if let Some((code, reason)) = used.client().fatal_error() {
            tracing::warn!(?code, reason = %reason, "kafka producer hit a fatal error");
        }
        let fresh = match producer(&self.settings) {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::error!(error = %err, "cannot start a new kafka producer");
                return;
            }
        };
        let old = {
            let mut current = self
                .producer
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if current.0 != generation {
                return;
            }
            std::mem::replace(&mut *current, (generation + 1, fresh))
        };
        // Dropping a producer purges it and joins its threads: not on the runtime.
        tokio::task::spawn_blocking(move || drop((old, used)));
    }

    /// After failed deliveries, makes sure the topic still exists (a broker restarted
    /// without its data has lost it), at most every [`TOPIC_RECHECK`].
    async fn recheck_topic(&self) {
        {
            let mut checked = self
                .topic_checked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if checked.is_some_and(|at| at.elapsed() < TOPIC_RECHECK) {
                return;
            }
            *checked = Some(std::time::Instant::now());
        }
        if let Err(err) = self.ensure_topic().await {
            tracing::debug!(error = %err, "cannot make sure the events topic exists");
        }
    }

    /// Notes whether a round of `outcomes` delivered anything, for [`Self::check`]. A round
    /// in which no sent message failed for the brokers' reasons (`brokers_failed`: only
    /// refusals of messages for themselves, and what waited behind them) says nothing about
    /// the brokers.
    fn record(&self, outcomes: &[Result<(), PublishError>], brokers_failed: bool) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if outcomes.iter().any(Result::is_ok) {
            *failing = None;
        } else if let (None, true, Some(Err(first))) = (
            failing.as_ref(),
            brokers_failed,
            outcomes
                .iter()
                .find(|o| o.as_ref().is_err_and(|e| !e.permanent)),
        ) {
            *failing = Some((std::time::Instant::now(), first.message.clone()));
        }
    }

    /// Sends one event and waits for its delivery report.
    async fn send(&self, producer: &FutureProducer, event: &Event) -> Result<(), PublishError> {
        let payload = (self.encode)(event);
        let key = event.subject.id().to_string();
        let record = FutureRecord::to(&self.settings.topic)
            .key(&key)
            .payload(&payload)
            .headers(self.headers(event))
            .timestamp(event.occurred_at.timestamp_millis());
        match producer.send_result(record) {
            // What the brokers answer is about the produce request, which may carry other
            // tenants' messages of the partition too: never held against this event.
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _))) => Err(PublishError::transient(err.to_string())),
                Err(_) => Err(PublishError::transient("the producer went away")),
            },
            Err((err, _)) => Err(refused_before_sending(&err)),
        }
    }

    /// The CloudEvents binary-mode headers of `event`.
    fn headers(&self, event: &Event) -> OwnedHeaders {
        let id = event.id.0.to_string();
        let subject = event.subject.id().to_string();
        let time = event
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        [
            ("ce_specversion", "1.0"),
            ("ce_id", id.as_str()),
            ("ce_source", self.settings.source.as_str()),
            ("ce_type", event.kind.type_name()),
            ("ce_time", time.as_str()),
            ("ce_subject", subject.as_str()),
            ("content-type", CONTENT_TYPE),
        ]
        .into_iter()
        .fold(
            OwnedHeaders::new_with_capacity(7),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    async fn publish(&self, events: &[Event]) -> Vec<Result<(), PublishError>> {
        let (generation, producer) = self.current();
        // Tenants in parallel, each tenant's events one after the other: an event is sent
        // only once the previous one of its tenant is confirmed, so no later event can
        // reach the topic before an earlier one that failed (librdkafka's gapless
        // guarantee does not cover message timeouts). After a failure the tenant's
        // remaining events are not sent.
        let mut by_subject: HashMap<Subject, Vec<usize>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            by_subject.entry(event.subject).or_default().push(i);
        }
        let sends = by_subject.values().map(|indices| {
            let producer = &producer;
            async move {
                let mut outcomes = Vec::with_capacity(indices.len());
                for &i in indices {
                    let sent = outcomes
                        .iter()
                        .all(|(_, o, _): &(usize, Result<(), PublishError>, bool)| o.is_ok());
                    let outcome = if sent {
                        self.send(producer, &events[i]).await
                    } else {
                        Err(PublishError::transient(
                            "an earlier event of the tenant was not delivered",
                        ))
                    };
                    outcomes.push((i, outcome, sent));
                }
                outcomes
            }
        });
        let mut outcomes: Vec<Result<(), PublishError>> = (0..events.len())
            .map(|_| Err(PublishError::transient("not sent")))
            .collect();
        // Whether a message that was sent failed for the brokers' reasons (not a refusal of
        // it for itself, nor one left unsent behind such a refusal).
        let mut brokers_failed = false;
        for (i, outcome, sent) in futures::future::join_all(sends).await.into_iter().flatten() {
            brokers_failed |= sent && outcome.as_ref().is_err_and(|e| !e.permanent);
            outcomes[i] = outcome;
        }
        self.record(&outcomes, brokers_failed);
        // A message refused for itself (too large, say) leaves the producer sound.
        if brokers_failed {
            self.replace(generation, producer);
            // Bounded: the relay is backing off anyway, and shutdown must not wait on it.
            let _checked = tokio::time::timeout(Duration::from_secs(2), self.recheck_topic()).await;
        }
        outcomes
    }

    async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let (_, producer) = self.current();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| PublishError::transient(format!("flush task: {e}")))?
            .map_err(|e| PublishError::transient(e.to_string()))
    }
}

/// Codes with which librdkafka refuses a message before sending it, for what the message
/// itself is (larger than `message.max.bytes`): sending it again cannot succeed.
const REFUSED_FOR_ITSELF: [RDKafkaErrorCode; 2] = [
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
];

/// A message librdkafka did not take as a [`PublishError`], permanent when it was refused
/// for itself (a full queue, say, is not).
fn refused_before_sending(err: &KafkaError) -> PublishError {
    let permanent = err
        .rdkafka_error_code()
        .is_some_and(|code| REFUSED_FOR_ITSELF.contains(&code));
    PublishError {
        message: err.to_string(),
        permanent,
    }
}

fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", &settings.client_id)
        // Fail fast on a dead connection; librdkafka reconnects with backoff by itself.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    let timeout = settings.message_timeout.as_millis().max(1).to_string();
    base_config(settings)
        .set("enable.idempotence", "true")
        // A failed batch fails the producer (it is replaced) rather than leave a gap that
        // later messages of the partition could pass (timeouts are not covered: `publish`
        // sends a tenant's next event only after the previous one is confirmed).
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("message.timeout.ms", &timeout)
        .set("message.max.bytes", settings.max_message_bytes.to_string())
        .set("linger.ms", "2")
        .create()
}

#[cfg(test)]
mod tests;
