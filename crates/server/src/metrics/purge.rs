//! Purge metrics: `purges_started_total{by,forced}` (`by` is `operator` or `retention`),
//! `purge_step_attempts_total{step,result}`, `purge_step_duration_seconds{step}`,
//! `purges_finished_total` and `purges_in_flight` (all replicas, as last counted).

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tenantd_application::PurgeObserver;
use tenantd_domain::purge::PurgeStepKind;

/// What the purge engine and sweeper did.
#[derive(Debug, Clone)]
pub struct PurgeMetrics {
    started: IntCounterVec,
    attempts: IntCounterVec,
    duration: HistogramVec,
    finished: IntCounter,
    in_flight: IntGauge,
}

impl PurgeMetrics {
    /// Registers the metrics in `registry`, every label value at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let started = IntCounterVec::new(
            Opts::new(
                "purges_started_total",
                "Purges this replica started, by who asked (operator, retention) and whether forced.",
            ),
            &["by", "forced"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "purge_step_attempts_total",
                "Purge step attempts this replica ended, by step and result (succeeded, failed, timeout, lost).",
            ),
            &["step", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "purge_step_duration_seconds",
                "How long purge step attempts took, by step.",
            ),
            &["step"],
        )?;
        let finished = IntCounter::new(
            "purges_finished_total",
            "Purges this replica finished (tenants turned into tombstones).",
        )?;
        let in_flight = IntGauge::new(
            "purges_in_flight",
            "Purges not finished, all replicas together, as last counted by the sweeper.",
        )?;
        for (by, forced) in [
            ("operator", "true"),
            ("operator", "false"),
            ("retention", "false"),
        ] {
            started.with_label_values(&[by, forced]);
        }
        for step in PurgeStepKind::ORDER {
            duration.with_label_values(&[step.as_str()]);
            for result in ["succeeded", "failed"] {
                attempts.with_label_values(&[step.as_str(), result]);
            }
        }
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(finished.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            started,
            attempts,
            duration,
            finished,
            in_flight,
        })
    }
}

impl PurgeObserver for PurgeMetrics {
    fn purge_started(&self, by_sweeper: bool, forced: bool) {
        let by = if by_sweeper { "retention" } else { "operator" };
        let forced = if forced { "true" } else { "false" };
        self.started.with_label_values(&[by, forced]).inc();
    }

    fn step_attempt(&self, step: &'static str, result: &'static str, duration: Duration) {
        self.attempts.with_label_values(&[step, result]).inc();
        self.duration
            .with_label_values(&[step])
            .observe(duration.as_secs_f64());
    }

    fn purge_finished(&self) {
        self.finished.inc();
    }

    fn purges_in_flight(&self, running: u64) {
        self.in_flight
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }
}
