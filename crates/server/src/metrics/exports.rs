//! Export metrics: `export_attempts_total{result}`, `export_attempt_duration_seconds`,
//! `export_bytes_written_total` and `exports_expired_total`.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use tenantd_application::exports::ExportObserver;

/// What the export engine and sweeper did.
#[derive(Debug, Clone)]
pub struct ExportMetrics {
    attempts: IntCounterVec,
    duration: Histogram,
    bytes: IntCounter,
    expired: IntCounter,
}

impl ExportMetrics {
    /// Registers the metrics in `registry`, every label value at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "export_attempts_total",
                "Export attempts this replica ended, by result (succeeded, failed, timeout, lost).",
            ),
            &["result"],
        )?;
        let duration = Histogram::with_opts(HistogramOpts::new(
            "export_attempt_duration_seconds",
            "How long export attempts took.",
        ))?;
        let bytes = IntCounter::new(
            "export_bytes_written_total",
            "Bytes of export archives this replica wrote.",
        )?;
        let expired = IntCounter::new(
            "exports_expired_total",
            "Exports (and their archives) this replica deleted past their retention.",
        )?;
        for result in ["succeeded", "failed", "timeout", "lost"] {
            attempts.with_label_values(&[result]);
        }
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(expired.clone()))?;
        Ok(Self {
            attempts,
            duration,
            bytes,
            expired,
        })
    }
}

impl ExportObserver for ExportMetrics {
    fn attempt(&self, result: &'static str, duration: Duration) {
        self.attempts.with_label_values(&[result]).inc();
        self.duration.observe(duration.as_secs_f64());
    }

    fn written(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
    }

    fn expired(&self, n: u64) {
        self.expired.inc_by(n);
    }
}
