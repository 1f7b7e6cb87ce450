//! Settings of the optional integrations: Redis (cache and shared rate limits), the rate
//! limits of roles without a plan, and Kafka (the event relay).

use std::time::Duration;

use tenantd_application::RateLimitSettings;

use super::{ConfigError, FileConfig, Secret, ServeArgs, bad, positive_ms};

/// Default events topic.
pub const DEFAULT_KAFKA_TOPIC: &str = "tenant.events.v1";

/// Redis settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Connection URL (may carry a password).
    pub url: Secret,
    /// Longest wait for one call.
    pub timeout: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Lifetime of a cache entry.
    pub cache_ttl: Duration,
}

/// Kafka and event relay settings.
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
    /// The relay's idle poll interval.
    pub poll_interval: Duration,
    /// Most events per batch.
    pub batch_size: usize,
}

/// A flag (or `TENANTD_` variable), else the plain variable, else the file; empty = unset.
fn secret_setting(
    flag: Option<&Secret>,
    plain: Option<String>,
    file: Option<&Secret>,
) -> Option<String> {
    flag.map(|v| v.expose().to_owned())
        .or(plain)
        .or_else(|| file.map(|v| v.expose().to_owned()))
        .filter(|v| !v.is_empty())
}

pub(super) fn redis(
    args: &ServeArgs,
    file: &FileConfig,
    plain_url: Option<String>,
) -> Result<Option<RedisConfig>, ConfigError> {
    let Some(url) = secret_setting(args.redis_url.as_ref(), plain_url, file.redis_url.as_ref())
    else {
        return Ok(None);
    };
    if !url.starts_with("redis://") {
        return Err(bad("redis-url", "must be a redis:// URL"));
    }
    let timeout = positive_ms(
        "redis-timeout-ms",
        args.redis_timeout_ms.or(file.redis_timeout_ms),
        250,
    )?;
    if timeout > Duration::from_secs(5) {
        // Every call waits at most this long on every request: it must stay far below
        // the RPC deadline.
        return Err(bad("redis-timeout-ms", "must be at most 5000"));
    }
    let key_prefix = args
        .redis_key_prefix
        .clone()
        .or_else(|| file.redis_key_prefix.clone())
        .unwrap_or_else(|| "tenantd:".to_owned());
    if key_prefix.len() > 64
        || key_prefix.contains(['{', '}'])
        || key_prefix.contains(char::is_whitespace)
    {
        return Err(bad(
            "redis-key-prefix",
            "must be at most 64 characters, without braces or spaces",
        ));
    }
    let ttl_seconds = args
        .cache_ttl_seconds
        .or(file.cache_ttl_seconds)
        .unwrap_or(30);
    if !(1..=86_400).contains(&ttl_seconds) {
        return Err(bad("cache-ttl-seconds", "must be between 1 and 86400"));
    }
    Ok(Some(RedisConfig {
        url: Secret::new(url),
        timeout,
        key_prefix,
        cache_ttl: Duration::from_secs(ttl_seconds),
    }))
}

pub(super) fn rate_limits(args: &ServeArgs, file: &FileConfig) -> RateLimitSettings {
    let defaults = RateLimitSettings::default();
    RateLimitSettings {
        admin_per_second: args
            .rate_limit_admin_rps
            .or(file.rate_limit_admin_rps)
            .unwrap_or(defaults.admin_per_second),
        service_per_second: args
            .rate_limit_service_rps
            .or(file.rate_limit_service_rps)
            .unwrap_or(defaults.service_per_second),
    }
}

pub(super) fn kafka(
    args: &ServeArgs,
    file: &FileConfig,
    plain_brokers: Option<String>,
) -> Result<Option<KafkaConfig>, ConfigError> {
    let Some(brokers) = secret_setting(
        args.kafka_brokers.as_ref(),
        plain_brokers,
        file.kafka_brokers.as_ref(),
    ) else {
        return Ok(None);
    };
    let broker_ok = |b: &str| {
        b.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    };
    if !brokers.split(',').map(str::trim).all(broker_ok) {
        return Err(bad(
            "kafka-brokers",
            "must be host:port[,host:port...] (e.g. 127.0.0.1:9092)",
        ));
    }
    let topic = args
        .kafka_topic
        .clone()
        .or_else(|| file.kafka_topic.clone())
        .unwrap_or_else(|| DEFAULT_KAFKA_TOPIC.to_owned());
    if !(1..=249).contains(&topic.len())
        || topic == "."
        || topic == ".."
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(bad(
            "kafka-topic",
            "must be 1-249 characters of letters, digits, '.', '_' and '-'",
        ));
    }
    let partitions = args
        .kafka_topic_partitions
        .or(file.kafka_topic_partitions)
        .unwrap_or(6);
    if !(1..=10_000).contains(&partitions) {
        return Err(bad("kafka-topic-partitions", "must be between 1 and 10000"));
    }
    let replication_factor = args
        .kafka_topic_replication_factor
        .or(file.kafka_topic_replication_factor)
        .unwrap_or(-1);
    if replication_factor != -1 && !(1..=32).contains(&replication_factor) {
        return Err(bad(
            "kafka-topic-replication-factor",
            "must be -1 (the brokers' default) or between 1 and 32",
        ));
    }
    let message_timeout = positive_ms(
        "kafka-message-timeout-ms",
        args.kafka_message_timeout_ms
            .or(file.kafka_message_timeout_ms),
        10_000,
    )?;
    if message_timeout > Duration::from_mins(5) {
        return Err(bad("kafka-message-timeout-ms", "must be at most 300000"));
    }
    let batch_size = args
        .outbox_batch_size
        .or(file.outbox_batch_size)
        .unwrap_or(500);
    if !(1..=10_000).contains(&batch_size) {
        return Err(bad("outbox-batch-size", "must be between 1 and 10000"));
    }
    Ok(Some(KafkaConfig {
        brokers: brokers
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        topic,
        partitions,
        replication_factor,
        message_timeout,
        poll_interval: positive_ms(
            "outbox-poll-interval-ms",
            args.outbox_poll_interval_ms
                .or(file.outbox_poll_interval_ms),
            200,
        )?,
        batch_size,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::parse;
    use super::*;

    const DB: [&str; 6] = [
        "--database-url",
        "postgres://db/x",
        "--encryption-keys",
        "k1:AAAA",
        "--blind-index-key",
        "BBBB",
    ];

    #[test]
    fn without_urls_there_is_no_redis_and_no_kafka() {
        let config = Config::load_with(ServeArgs::default(), &|_| None).unwrap();
        assert_eq!(config.redis, None);
        assert_eq!(config.kafka, None);
        assert_eq!(config.rate_limits, RateLimitSettings::default());
    }

    #[test]
    fn plain_variables_configure_redis_and_kafka_with_defaults() {
        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis://:s3cret@cache:6379/2".to_owned()),
            "KAFKA_BROKERS" => Some("k1:9092, k2:9092".to_owned()),
            _ => None,
        };
        let config = Config::load_with(parse(&DB), &env).unwrap();
        let redis = config.redis.clone().unwrap();
        assert_eq!(redis.url.expose(), "redis://:s3cret@cache:6379/2");
        assert_eq!(redis.timeout, Duration::from_millis(250));
        assert_eq!(redis.cache_ttl, Duration::from_secs(30));
        assert_eq!(redis.key_prefix, "tenantd:");
        assert!(!format!("{config:?}").contains("s3cret"));
        let kafka = config.kafka.unwrap();
        assert_eq!(kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(kafka.topic, "tenant.events.v1");
        assert_eq!((kafka.partitions, kafka.replication_factor), (6, -1));
        assert_eq!(kafka.batch_size, 500);
    }

    #[test]
    fn bad_integration_settings_are_named() {
        let named = |flags: &[&str]| {
            let mut all = DB.to_vec();
            all.extend_from_slice(flags);
            Config::load_with(parse(&all), &|_| None)
                .unwrap_err()
                .setting
        };
        assert_eq!(named(&["--redis-url", "http://cache"]), "redis-url");
        assert_eq!(
            named(&["--redis-url", "redis://c", "--redis-timeout-ms", "60000"]),
            "redis-timeout-ms"
        );
        assert_eq!(named(&["--kafka-brokers", "nohost"]), "kafka-brokers");
        assert_eq!(
            named(&["--kafka-brokers", "k:9092", "--kafka-topic", "a b"]),
            "kafka-topic"
        );
        assert_eq!(
            named(&[
                "--kafka-brokers",
                "k:9092",
                "--kafka-topic-replication-factor",
                "0"
            ]),
            "kafka-topic-replication-factor"
        );
    }
}
