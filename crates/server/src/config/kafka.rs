//! Kafka settings: the brokers, the events topic and the outbox relay.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, Secret, millis};

/// Default events topic.
pub const DEFAULT_KAFKA_TOPIC: &str = "tenant.events.v1";

/// Kafka: the event relay.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka (the event relay)")]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, host:port[,host:port] (also KAFKA_BROKERS): events are
    /// relayed from the outbox to Kafka; unset = they stay in the outbox (still listable).
    #[arg(long, env = "TENANTD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<Secret>,
    /// The events topic, created at start-up if missing.
    #[arg(long, env = "TENANTD_KAFKA_TOPIC", default_value = DEFAULT_KAFKA_TOPIC)]
    pub kafka_topic: String,
    /// Partitions of the events topic when tenantd creates it.
    #[arg(
        long,
        env = "TENANTD_KAFKA_TOPIC_PARTITIONS",
        default_value_t = 6,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub kafka_topic_partitions: i32,
    /// Replication factor of the events topic when tenantd creates it; -1 = the brokers'
    /// default.
    #[arg(
        long,
        env = "TENANTD_KAFKA_TOPIC_REPLICATION_FACTOR",
        default_value_t = -1,
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(i32).range(-1..=32)
    )]
    pub kafka_topic_replication_factor: i32,
    /// How long a message may wait for the brokers to confirm it, in milliseconds (at most
    /// 300000), before the relay retries it.
    #[arg(
        long,
        env = "TENANTD_KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=300_000)
    )]
    pub kafka_message_timeout_ms: u64,
    /// Largest event message the producer sends, in bytes (librdkafka's
    /// `message.max.bytes`; keep it at or below the brokers' `message.max.bytes`). A larger
    /// event cannot be sent: after --outbox-max-delivery-attempts it becomes a dead
    /// letter.
    #[arg(
        long,
        env = "TENANTD_KAFKA_MAX_MESSAGE_BYTES",
        default_value_t = 1_000_000,
        value_parser = clap::value_parser!(u32).range(1_000..=1_000_000_000)
    )]
    pub kafka_max_message_bytes: u32,
    /// How often the relay looks for unpublished events when idle, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_OUTBOX_POLL_INTERVAL_MS",
        default_value_t = 200,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub outbox_poll_interval_ms: u64,
    /// Most events the relay publishes in one batch.
    #[arg(
        long,
        env = "TENANTD_OUTBOX_BATCH_SIZE",
        default_value_t = 500,
        value_parser = clap::value_parser!(u16).range(1..=10_000)
    )]
    pub outbox_batch_size: u16,
    /// Failed attempts after which an event that cannot be sent (larger than
    /// --kafka-max-message-bytes) or that does not decode becomes a dead letter
    /// (EventService ListDeadLetters / RetryDeadLetters) and stops holding back its
    /// tenant's later events. What the brokers answer never counts.
    #[arg(
        long,
        env = "TENANTD_OUTBOX_MAX_DELIVERY_ATTEMPTS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub outbox_max_delivery_attempts: u32,
}

/// The validated Kafka and relay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
    /// Partitions when the topic is created here.
    pub partitions: i32,
    /// Replication factor when the topic is created here (-1: the brokers' default).
    pub replication_factor: i32,
    /// How long one delivery may take.
    pub message_timeout: Duration,
    /// Largest message the producer sends.
    pub max_message_bytes: u32,
    /// The relay's idle poll interval.
    pub poll_interval: Duration,
    /// Most events per batch.
    pub batch_size: usize,
    /// Failed attempts after which an event that cannot be sent becomes a dead letter.
    pub max_delivery_attempts: u32,
}

impl KafkaArgs {
    pub(super) fn resolve(self) -> Result<Option<KafkaConfig>, ConfigError> {
        let Some(brokers) = Secret::non_empty(self.kafka_brokers) else {
            return Ok(None);
        };
        let broker_ok = |b: &str| {
            b.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        };
        if !brokers.expose().split(',').map(str::trim).all(broker_ok) {
            return Err(ConfigError::new(
                "kafka-brokers",
                "must be host:port[,host:port...] (e.g. 127.0.0.1:9092)",
            ));
        }
        let topic = &self.kafka_topic;
        let topic_ok = (1..=249).contains(&topic.len())
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !topic_ok {
            return Err(ConfigError::new(
                "kafka-topic",
                "must be 1-249 characters of letters, digits, '.', '_' and '-'",
            ));
        }
        if self.kafka_topic_replication_factor == 0 {
            return Err(ConfigError::new(
                "kafka-topic-replication-factor",
                "must be -1 (the brokers' default) or between 1 and 32",
            ));
        }
        Ok(Some(KafkaConfig {
            brokers: brokers
                .expose()
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
            topic: self.kafka_topic,
            partitions: self.kafka_topic_partitions,
            replication_factor: self.kafka_topic_replication_factor,
            message_timeout: millis(self.kafka_message_timeout_ms),
            max_message_bytes: self.kafka_max_message_bytes,
            poll_interval: millis(self.outbox_poll_interval_ms),
            batch_size: usize::from(self.outbox_batch_size),
            max_delivery_attempts: self.outbox_max_delivery_attempts,
        }))
    }
}
