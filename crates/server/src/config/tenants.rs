//! Tenant settings: how long a deleted tenant stays restorable, how it is purged then,
//! and how tenant schemas are named.

use clap::Args;

use super::ConfigError;

/// Longest soft-deletion retention: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// The tenant lifecycle and tenant schemas.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tenants")]
pub struct TenantsArgs {
    /// Days a soft-deleted tenant stays restorable.
    #[arg(
        long,
        env = "TENANTD_DELETION_RETENTION_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RETENTION_DAYS))
    )]
    pub deletion_retention_days: u32,
    /// Prefix of tenant schema names, `<prefix><tenant id>`.
    #[arg(long, env = "TENANTD_TENANT_SCHEMA_PREFIX", default_value = "t_")]
    pub tenant_schema_prefix: String,
    /// Days a purged tenant's tombstone keeps its slug from new tenants; 0 frees it at the
    /// next sweep.
    #[arg(
        long,
        env = "TENANTD_PURGED_SLUG_REUSE_DAYS",
        default_value_t = 90,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETENTION_DAYS))
    )]
    pub purged_slug_reuse_days: u32,
    /// How often each replica looks for deleted tenants whose retention ran out (and
    /// tombstones whose slug to free), in milliseconds.
    #[arg(
        long,
        env = "TENANTD_PURGE_INTERVAL_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub purge_interval_ms: u64,
    /// Purge workers per replica (each drives one purge at a time).
    #[arg(
        long,
        env = "TENANTD_PURGE_WORKERS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub purge_workers: u32,
}

/// The validated tenant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    /// How long a soft-deleted tenant stays restorable.
    pub deletion_retention: chrono::Duration,
    /// Tenant schemas are `<prefix><tenant id>`.
    pub schema_prefix: String,
    /// How long a tombstone keeps its slug.
    pub slug_reuse: chrono::Duration,
    /// How often the purge sweeper runs.
    pub purge_interval: std::time::Duration,
    /// Purge workers per replica.
    pub purge_workers: usize,
}

impl TenantsArgs {
    pub(super) fn resolve(self) -> Result<TenantsConfig, ConfigError> {
        if !tenantd_adapters::postgres::is_valid_schema_prefix(&self.tenant_schema_prefix) {
            return Err(ConfigError::new(
                "tenant-schema-prefix",
                tenantd_adapters::postgres::BadSchemaPrefix.to_string(),
            ));
        }
        Ok(TenantsConfig {
            deletion_retention: chrono::Duration::days(i64::from(self.deletion_retention_days)),
            schema_prefix: self.tenant_schema_prefix,
            slug_reuse: chrono::Duration::days(i64::from(self.purged_slug_reuse_days)),
            purge_interval: super::millis(self.purge_interval_ms),
            purge_workers: usize::try_from(self.purge_workers)
                .map_err(|_| ConfigError::new("purge-workers", "does not fit this machine"))?,
        })
    }
}
