//! Rollout settings: this replica's workers, leases, and the defaults of a StartRollout.

use clap::Args;
use tenantd_application::RolloutSettings;
use tenantd_domain::tenant_schema::{ErrorBudget, MigrationLimits};

use super::{ConfigError, millis};

/// Tenant schema rollouts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rollouts")]
pub struct RolloutArgs {
    /// Most tenants this replica migrates at once, whatever a rollout allows.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_WORKERS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub rollout_workers: u16,
    /// How long a worker's claim on a tenant lasts without renewal, in milliseconds
    /// (renewed every third of it); a tenant of a replica that died is taken over after it.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_LEASE_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1000..)
    )]
    pub rollout_lease_ms: u64,
    /// How often idle rollout workers (and watches) look again, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_POLL_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub rollout_poll_interval_ms: u64,
    /// A rollout's default for tenants migrated at once over every replica.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_MAX_PARALLEL",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub rollout_max_parallel: u32,
    /// A rollout's default for tenants migrated at once by one replica.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_MAX_PARALLEL_PER_REPLICA",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub rollout_max_parallel_per_replica: u32,
    /// A rollout's default error budget: failures tolerated before it pauses (the larger
    /// of this and the ratio's share).
    #[arg(long, env = "TENANTD_ROLLOUT_ERROR_BUDGET_COUNT", default_value_t = 0)]
    pub rollout_error_budget_count: u32,
    /// A rollout's default error budget as a share of its tenants, 0 to 1.
    #[arg(
        long,
        env = "TENANTD_ROLLOUT_ERROR_BUDGET_RATIO",
        default_value_t = 0.0
    )]
    pub rollout_error_budget_ratio: f64,
    /// Start a rollout with these defaults when this replica's migrations are newer than
    /// some tenant schemas (off: a newer set only logs how many are behind).
    #[arg(
        long,
        env = "TENANTD_TENANT_MIGRATIONS_AUTO_ROLLOUT",
        default_value_t = false
    )]
    pub tenant_migrations_auto_rollout: bool,
}

/// The validated rollout settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutsConfig {
    /// The engine's and the defaults' settings (the limits come from the tenant schema
    /// settings).
    pub settings: RolloutSettings,
    /// Start a rollout on start-up when schemas are behind.
    pub auto_rollout: bool,
}

impl RolloutArgs {
    pub(super) fn resolve(self, limits: MigrationLimits) -> Result<RolloutsConfig, ConfigError> {
        if !(0.0..=1.0).contains(&self.rollout_error_budget_ratio) {
            return Err(ConfigError::new(
                "rollout-error-budget-ratio",
                "is a share of the tenants, from 0 to 1",
            ));
        }
        Ok(RolloutsConfig {
            settings: RolloutSettings {
                workers: usize::from(self.rollout_workers),
                lease: millis(self.rollout_lease_ms),
                poll_interval: millis(self.rollout_poll_interval_ms),
                default_max_parallel: self.rollout_max_parallel,
                default_max_parallel_per_replica: self
                    .rollout_max_parallel_per_replica
                    .min(self.rollout_max_parallel),
                default_error_budget: ErrorBudget {
                    count: self.rollout_error_budget_count,
                    ratio: self.rollout_error_budget_ratio,
                },
                default_limits: limits,
            },
            auto_rollout: self.tenant_migrations_auto_rollout,
        })
    }
}
