//! Retention metrics: `retention_deleted_rows_total{table}` and
//! `retention_oldest_row_age_seconds{table}` (`table` is `tenant_events` or
//! `audit_records`).

use chrono::{DateTime, Utc};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use tenantd_application::RetentionObserver;
use tenantd_domain::ports::RetainedTable;

/// What retention deleted, and how old each table's oldest row is.
#[derive(Debug, Clone)]
pub struct RetentionMetrics {
    deleted: IntCounterVec,
    oldest_age: GaugeVec,
}

impl RetentionMetrics {
    /// Registers the metrics in `registry`, every table at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let deleted = IntCounterVec::new(
            Opts::new(
                "retention_deleted_rows_total",
                "Rows this replica deleted past their retention, by table.",
            ),
            &["table"],
        )?;
        let oldest_age = GaugeVec::new(
            Opts::new(
                "retention_oldest_row_age_seconds",
                "Age of the oldest row of the table (0 when empty), as last measured.",
            ),
            &["table"],
        )?;
        for table in RetainedTable::ALL {
            deleted.with_label_values(&[table.as_str()]);
            oldest_age.with_label_values(&[table.as_str()]);
        }
        registry.register(Box::new(deleted.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        Ok(Self {
            deleted,
            oldest_age,
        })
    }
}

impl RetentionObserver for RetentionMetrics {
    fn deleted(&self, table: RetainedTable, n: u64) {
        self.deleted.with_label_values(&[table.as_str()]).inc_by(n);
    }

    fn oldest(&self, table: RetainedTable, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let age = oldest.map_or(0.0, |oldest| (now - oldest).as_seconds_f64().max(0.0));
        self.oldest_age
            .with_label_values(&[table.as_str()])
            .set(age);
    }
}
