//! Provisioning settings: workers, leases, attempts and backoff, deadlines.

use std::time::Duration;

use clap::Args;
use tenantd_application::ProvisioningSettings;
use tenantd_domain::provisioning::RetryPolicy;

use super::{ConfigError, millis};

/// The provisioning engine.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Provisioning")]
pub struct ProvisioningArgs {
    /// Provisioning workers in this replica.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_WORKERS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub provisioning_workers: u16,
    /// How long a worker's claim on a run lasts without renewal, in milliseconds (renewed
    /// every third of it); a run of a replica that died is resumed by another after this.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_LEASE_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1000..)
    )]
    pub provisioning_lease_ms: u64,
    /// How often idle workers (and watches, for other replicas' changes) look again, in
    /// milliseconds.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_POLL_INTERVAL_MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub provisioning_poll_interval_ms: u64,
    /// Longest attempt of one provisioning step or undo, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_STEP_TIMEOUT_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub provisioning_step_timeout_ms: u64,
    /// Attempts of a failing step before the run fails.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_MAX_ATTEMPTS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub provisioning_max_attempts: u32,
    /// Delay before a step's second attempt, doubled each time (with full jitter), in
    /// milliseconds.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_BACKOFF_BASE_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub provisioning_backoff_base_ms: u64,
    /// Longest delay between attempts, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_BACKOFF_MAX_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub provisioning_backoff_max_ms: u64,
    /// Seconds a provisioning run may take before the sweeper cancels it (at most a week).
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_RUN_TIMEOUT_SECONDS",
        default_value_t = 1800,
        value_parser = clap::value_parser!(u64).range(1..=604_800)
    )]
    pub provisioning_run_timeout_seconds: u64,
    /// How often the sweeper looks for overdue runs, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_PROVISIONING_SWEEP_INTERVAL_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub provisioning_sweep_interval_ms: u64,
}

impl ProvisioningArgs {
    pub(super) fn resolve(self) -> Result<ProvisioningSettings, ConfigError> {
        if self.provisioning_backoff_max_ms < self.provisioning_backoff_base_ms {
            return Err(ConfigError::new(
                "provisioning-backoff-max-ms",
                "must be at least provisioning-backoff-base-ms",
            ));
        }
        let chrono_ms =
            |ms: u64| chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
        Ok(ProvisioningSettings {
            workers: usize::from(self.provisioning_workers),
            lease: millis(self.provisioning_lease_ms),
            poll_interval: millis(self.provisioning_poll_interval_ms),
            step_timeout: millis(self.provisioning_step_timeout_ms),
            retry: RetryPolicy {
                base: chrono_ms(self.provisioning_backoff_base_ms),
                max_delay: chrono_ms(self.provisioning_backoff_max_ms),
                max_attempts: self.provisioning_max_attempts,
            },
            run_timeout: Duration::from_secs(self.provisioning_run_timeout_seconds),
            sweep_interval: millis(self.provisioning_sweep_interval_ms),
        })
    }
}
