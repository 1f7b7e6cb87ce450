//! Provisioning metrics: `provisioning_runs_total{result}`,
//! `provisioning_step_duration_seconds{step}`, `provisioning_step_attempts_total{step,result}`,
//! `provisioning_runs_in_flight` and `provisioning_watches_open`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tenantd_application::ProvisioningObserver;
use tenantd_domain::provisioning::{RunState, StepKind};

/// The provisioning metrics, registered once per registry.
#[derive(Debug, Clone)]
pub struct ProvisioningMetrics {
    runs: IntCounterVec,
    step_duration: HistogramVec,
    step_attempts: IntCounterVec,
    in_flight: IntGauge,
    watches: IntGauge,
}

impl ProvisioningMetrics {
    /// Registers the metrics in `registry`, every label combination at zero so dashboards
    /// and alerts see the series before the first run.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let runs = IntCounterVec::new(
            Opts::new(
                "provisioning_runs_total",
                "Provisioning runs that ended, by result.",
            ),
            &["result"],
        )?;
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                "provisioning_step_duration_seconds",
                "Duration of provisioning step attempts, by step.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["step"],
        )?;
        let step_attempts = IntCounterVec::new(
            Opts::new(
                "provisioning_step_attempts_total",
                "Provisioning step attempts, by step and result (succeeded, failed, timeout, lost).",
            ),
            &["step", "result"],
        )?;
        let in_flight = IntGauge::new(
            "provisioning_runs_in_flight",
            "Provisioning runs still running (all replicas), as of the last sweep.",
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(step_duration.clone()))?;
        registry.register(Box::new(step_attempts.clone()))?;
        let watches = IntGauge::new(
            "provisioning_watches_open",
            "WatchProvisioning streams this replica is following.",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(watches.clone()))?;
        for result in ["succeeded", "failed", "cancelled"] {
            runs.with_label_values(&[result]);
        }
        for step in StepKind::ORDER {
            step_duration.with_label_values(&[step.as_str()]);
            for result in ["succeeded", "failed", "timeout", "lost"] {
                step_attempts.with_label_values(&[step.as_str(), result]);
            }
        }
        Ok(Self {
            runs,
            step_duration,
            step_attempts,
            in_flight,
            watches,
        })
    }
}

impl ProvisioningObserver for ProvisioningMetrics {
    fn step_attempt(&self, step: &'static str, result: &'static str, duration: Duration) {
        self.step_attempts.with_label_values(&[step, result]).inc();
        if result != "lost" {
            self.step_duration
                .with_label_values(&[step])
                .observe(duration.as_secs_f64());
        }
    }

    fn run_finished(&self, state: RunState) {
        let result = match state {
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Running => return,
        };
        self.runs.with_label_values(&[result]).inc();
    }

    fn runs_in_flight(&self, running: u64) {
        self.in_flight
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    fn watch_opened(&self) {
        self.watches.inc();
    }

    fn watch_closed(&self) {
        self.watches.dec();
    }
}
