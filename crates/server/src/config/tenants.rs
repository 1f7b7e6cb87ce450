//! Tenant settings: how long a deleted tenant stays restorable, and how tenant schemas are
//! named.

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
}

/// The validated tenant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    /// How long a soft-deleted tenant stays restorable.
    pub deletion_retention: chrono::Duration,
    /// Tenant schemas are `<prefix><tenant id>`.
    pub schema_prefix: String,
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
        })
    }
}
