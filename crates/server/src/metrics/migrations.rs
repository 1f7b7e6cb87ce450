//! Tenant schema metrics: `tenant_schema_rollout_tenants{state}` (the running or paused
//! rollout's tenants), `tenant_schema_migration_duration_seconds{result}` (each tenant's
//! migration), `tenant_schema_migrations_total{result}`, `tenant_schemas_behind` (schemas
//! below this replica's newest migration) and `tenant_schema_rollout_watches_open`.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tenantd_application::MigrationObserver;
use tenantd_domain::tenant_schema::{RolloutCounts, TenantRolloutState};

/// The outcomes of a tenant's migration.
const RESULTS: [&str; 4] = ["succeeded", "failed", "skipped", "lost"];

/// The tenant schema metrics, registered once per registry.
#[derive(Debug, Clone)]
pub struct MigrationMetrics {
    rollout_tenants: IntGaugeVec,
    duration: HistogramVec,
    migrations: IntCounterVec,
    behind: IntGauge,
    watches: IntGauge,
}

impl MigrationMetrics {
    /// Registers the metrics in `registry`, every label combination at zero.
    ///
    /// # Errors
    /// When a metric is invalid or already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let rollout_tenants = IntGaugeVec::new(
            Opts::new(
                "tenant_schema_rollout_tenants",
                "Tenants of the running or paused rollout, by state (all zero without one).",
            ),
            &["state"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tenant_schema_migration_duration_seconds",
                "Duration of one tenant's migration in a rollout, by result.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ]),
            &["result"],
        )?;
        let migrations = IntCounterVec::new(
            Opts::new(
                "tenant_schema_migrations_total",
                "Tenant migrations this replica ran in rollouts, by result (succeeded, failed, skipped, lost).",
            ),
            &["result"],
        )?;
        let behind = IntGauge::new(
            "tenant_schemas_behind",
            "Tenant schemas below this replica's newest migration, as of the last check.",
        )?;
        let watches = IntGauge::new(
            "tenant_schema_rollout_watches_open",
            "WatchRollout streams this replica is following.",
        )?;
        registry.register(Box::new(rollout_tenants.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(migrations.clone()))?;
        registry.register(Box::new(behind.clone()))?;
        registry.register(Box::new(watches.clone()))?;
        for state in TenantRolloutState::ALL {
            rollout_tenants.with_label_values(&[state.as_str()]);
        }
        for result in RESULTS {
            duration.with_label_values(&[result]);
            migrations.with_label_values(&[result]);
        }
        Ok(Self {
            rollout_tenants,
            duration,
            migrations,
            behind,
            watches,
        })
    }
}

impl MigrationObserver for MigrationMetrics {
    fn tenant_migrated(&self, result: &'static str, duration: Duration) {
        self.migrations.with_label_values(&[result]).inc();
        self.duration
            .with_label_values(&[result])
            .observe(duration.as_secs_f64());
    }

    fn rollout_tenants(&self, counts: Option<&RolloutCounts>) {
        let all = counts.map(RolloutCounts::all).unwrap_or_default();
        for state in TenantRolloutState::ALL {
            self.rollout_tenants
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(all.get(state)).unwrap_or(i64::MAX));
        }
    }

    fn tenants_behind(&self, behind: u64) {
        self.behind.set(i64::try_from(behind).unwrap_or(i64::MAX));
    }

    fn watch_opened(&self) {
        self.watches.inc();
    }

    fn watch_closed(&self) {
        self.watches.dec();
    }
}
