//! Cache, event relay and rate-limit metrics: `cache_hits_total{cache}`,
//! `cache_misses_total{cache}`, `cache_errors_total{cache}`, `cache_bypassed_total{cache}`;
//! `outbox_backlog_events`, `outbox_oldest_unpublished_age_seconds`,
//! `outbox_events_published_total`, `outbox_publish_errors_total`,
//! `outbox_events_dead_lettered_total`, `outbox_dead_letters`;
//! `rate_limited_requests_total{role}`.

use chrono::{DateTime, Utc};
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tenantd_adapters::redis::CacheObserver;
use tenantd_application::RelayObserver;
use tenantd_domain::ports::OutboxBacklog;

/// The caches' counters.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    errors: IntCounterVec,
    bypassed: IntCounterVec,
    local_hits: IntCounterVec,
}

impl CacheMetrics {
    /// Registers the counters in `registry`, both caches at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let counter = IntCounterVec::new(Opts::new(name, help), &["cache"])?;
            for cache in ["tenant", "api_key"] {
                counter.with_label_values(&[cache]);
            }
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(Self {
            hits: counter("cache_hits_total", "Reads answered from the Redis cache.")?,
            misses: counter(
                "cache_misses_total",
                "Reads the Redis cache had no entry for (answered from the database).",
            )?,
            errors: counter(
                "cache_errors_total",
                "Redis cache calls that failed or timed out.",
            )?,
            bypassed: counter(
                "cache_bypassed_total",
                "Reads that skipped Redis after recent failures (answered from the database).",
            )?,
            local_hits: counter(
                "cache_local_hits_total",
                "Reads answered by the in-process cache tier (no Redis call).",
            )?,
        })
    }
}

impl CacheObserver for CacheMetrics {
    fn hit(&self, cache: &'static str) {
        self.hits.with_label_values(&[cache]).inc();
    }
    fn miss(&self, cache: &'static str) {
        self.misses.with_label_values(&[cache]).inc();
    }
    fn error(&self, cache: &'static str) {
        self.errors.with_label_values(&[cache]).inc();
    }
    fn bypass(&self, cache: &'static str) {
        self.bypassed.with_label_values(&[cache]).inc();
    }
    fn local_hit(&self, cache: &'static str) {
        self.local_hits.with_label_values(&[cache]).inc();
    }
}

/// The event relay's metrics.
#[derive(Debug, Clone)]
pub struct RelayMetrics {
    backlog: IntGauge,
    oldest_age: Gauge,
    published: IntCounter,
    errors: IntCounter,
    dead_lettered: IntCounter,
    dead_letters: IntGauge,
}

impl RelayMetrics {
    /// Registers the metrics in `registry`.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let backlog = IntGauge::new(
            "outbox_backlog_events",
            "Events written but not yet published to Kafka (all replicas), as last measured.",
        )?;
        let oldest_age = Gauge::new(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished event (0 when none), as last measured.",
        )?;
        let published = IntCounter::new(
            "outbox_events_published_total",
            "Events this replica published to Kafka (delivery confirmed).",
        )?;
        let errors = IntCounter::new(
            "outbox_publish_errors_total",
            "Events this replica failed to deliver to Kafka (they are retried).",
        )?;
        let dead_lettered = IntCounter::new(
            "outbox_events_dead_lettered_total",
            "Events this replica gave up on after --outbox-max-delivery-attempts refusals (moved to the dead letters).",
        )?;
        let dead_letters = IntGauge::new(
            "outbox_dead_letters",
            "Dead letters waiting for an operator (all replicas), as last measured.",
        )?;
        for metric in [&backlog, &dead_letters] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(oldest_age.clone()))?;
        for metric in [&published, &errors, &dead_lettered] {
            registry.register(Box::new(metric.clone()))?;
        }
        Ok(Self {
            backlog,
            oldest_age,
            published,
            errors,
            dead_lettered,
            dead_letters,
        })
    }
}

impl RelayObserver for RelayMetrics {
    fn published(&self, n: u64) {
        self.published.inc_by(n);
    }
    fn failed(&self, n: u64) {
        self.errors.inc_by(n);
    }
    fn dead_lettered(&self, n: u64) {
        self.dead_lettered.inc_by(n);
    }
    fn backlog(&self, backlog: OutboxBacklog, now: DateTime<Utc>) {
        self.backlog
            .set(i64::try_from(backlog.events).unwrap_or(i64::MAX));
        self.dead_letters
            .set(i64::try_from(backlog.dead_letters).unwrap_or(i64::MAX));
        let age = backlog
            .oldest
            .map_or(0.0, |oldest| (now - oldest).as_seconds_f64().max(0.0));
        self.oldest_age.set(age);
    }
}

/// Requests refused by the rate limiter.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    limited: IntCounterVec,
}

impl RateLimitMetrics {
    /// Registers the counter in `registry`, every role at zero.
    ///
    /// # Errors
    /// When the metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let limited = IntCounterVec::new(
            Opts::new(
                "rate_limited_requests_total",
                "Requests refused with RESOURCE_EXHAUSTED by the per-principal rate limit.",
            ),
            &["role"],
        )?;
        for role in ["admin", "service", "tenant"] {
            limited.with_label_values(&[role]);
        }
        registry.register(Box::new(limited.clone()))?;
        Ok(Self { limited })
    }

    /// One request of a `role` principal was refused.
    pub fn limited(&self, role: &'static str) {
        self.limited.with_label_values(&[role]).inc();
    }
}
