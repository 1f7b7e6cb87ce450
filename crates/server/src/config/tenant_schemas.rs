//! Tenant schema settings: the application's migrations, the tenant databases tenant
//! schemas live on, and where each plan's tenants are placed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Args};
use tenantd_adapters::tenant_migrations;
use tenantd_domain::PlanId;
use tenantd_domain::tenant_schema::{
    DEFAULT_TENANT_DATABASE, MigrationLimits, MigrationSet, PlacementRule,
};

use super::{ConfigError, Secret};

/// The tenant schemas: migrations, tenant databases and placement.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tenant schemas")]
pub struct TenantSchemasArgs {
    /// Directory of the tenant schema's migrations, `NNNN_name.sql` (versions from 0001
    /// without a gap, each applied with `search_path` set to the tenant's schema); unset =
    /// the built-in example set.
    #[arg(long, env = "TENANTD_TENANT_MIGRATIONS_DIR")]
    pub tenant_migrations_dir: Option<PathBuf>,
    /// A tenant database, `NAME=URL` (repeatable; in a variable, separated by spaces);
    /// `default` is the control plane's own database unless given here.
    #[arg(long, env = "TENANTD_TENANT_DATABASES", action = ArgAction::Append, hide_env_values = true)]
    pub tenant_database: Vec<Secret>,
    /// Where tenants of plans without a --plan-placement go: `NAME` (a schema in that
    /// tenant database), `dedicated` or `dedicated:NAME` (a database of their own on that
    /// tenant database's server).
    #[arg(long, env = "TENANTD_TENANT_PLACEMENT", default_value = "default")]
    pub tenant_placement: String,
    /// Where one plan's tenants go, `PLAN=PLACEMENT` (as --tenant-placement; repeatable; in
    /// a variable, separated by spaces).
    #[arg(long, env = "TENANTD_PLAN_PLACEMENTS", action = ArgAction::Append)]
    pub plan_placement: Vec<String>,
    /// Most pooled connections to each tenant database (other than `default`, which uses
    /// the control plane's pool).
    #[arg(
        long,
        env = "TENANTD_TENANT_DATABASE_MAX_CONNECTIONS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub tenant_database_max_connections: u32,
    /// Longest wait for a lock while migrating a tenant schema, in milliseconds (0: no
    /// limit); a rollout may set its own.
    #[arg(
        long,
        env = "TENANTD_TENANT_MIGRATION_LOCK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub tenant_migration_lock_timeout_ms: u64,
    /// Longest statement while migrating a tenant schema, in milliseconds (0: no limit); a
    /// rollout may set its own.
    #[arg(
        long,
        env = "TENANTD_TENANT_MIGRATION_STATEMENT_TIMEOUT_MS",
        default_value_t = 600_000
    )]
    pub tenant_migration_statement_timeout_ms: u64,
}

/// The validated tenant schema settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSchemasConfig {
    /// Where the migrations were read from (`None`: built in).
    pub migrations_dir: Option<PathBuf>,
    /// The migrations.
    pub migrations: Arc<MigrationSet>,
    /// Tenant databases by name, beyond (or replacing) `default`.
    pub databases: BTreeMap<String, Secret>,
    /// How tenants of plans without a rule of their own are placed.
    pub default_placement: PlacementRule,
    /// Rules by plan.
    pub plan_placements: BTreeMap<PlanId, PlacementRule>,
    /// Pool size of each named tenant database.
    pub database_max_connections: u32,
    /// Limits of a tenant's migration when provisioning, and a rollout's defaults.
    pub limits: MigrationLimits,
}

impl TenantSchemasConfig {
    /// Whether the built-in example set is in use (its schemas hold sealed user emails).
    pub fn built_in(&self) -> bool {
        self.migrations_dir.is_none()
    }

    /// Every tenant database a placement may name.
    pub fn database_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(DEFAULT_TENANT_DATABASE).chain(self.databases.keys().map(String::as_str))
    }
}

/// Whether `name` can name a tenant database: a short lowercase identifier.
fn is_database_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The rule `text` spells: `NAME`, `dedicated` or `dedicated:NAME`.
fn placement_rule(text: &str) -> Option<PlacementRule> {
    let rule = match text.split_once(':') {
        Some(("dedicated", name)) => PlacementRule::Dedicated(name.to_owned()),
        Some(_) => return None,
        None if text == "dedicated" => PlacementRule::Dedicated(DEFAULT_TENANT_DATABASE.to_owned()),
        None => PlacementRule::Shared(text.to_owned()),
    };
    is_database_name(rule.tenant_database()).then_some(rule)
}

const RULE_SYNTAX: &str =
    "is NAME, dedicated or dedicated:NAME (NAME: a-z, 0-9, '_' and '-', starting with a letter)";

impl TenantSchemasArgs {
    pub(super) fn resolve(self) -> Result<TenantSchemasConfig, ConfigError> {
        let migrations = match &self.tenant_migrations_dir {
            None => tenant_migrations::built_in(),
            Some(dir) => tenant_migrations::read_dir(dir).map_err(|err| {
                ConfigError::new("tenant-migrations-dir", format!("{}: {err}", dir.display()))
            })?,
        };
        let mut databases = BTreeMap::new();
        for entry in self.tenant_database {
            let Some((name, url)) = entry.expose().split_once('=') else {
                return Err(ConfigError::new(
                    "tenant-database",
                    "is NAME=URL (a postgres:// URL)",
                ));
            };
            if !is_database_name(name) {
                return Err(ConfigError::new(
                    "tenant-database",
                    format!("{name:?}: a name is a-z, 0-9, '_' and '-', starting with a letter"),
                ));
            }
            if !["postgres://", "postgresql://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(ConfigError::new(
                    "tenant-database",
                    format!("{name}: must be a postgres:// or postgresql:// URL"),
                ));
            }
            if databases
                .insert(name.to_owned(), Secret::new(url))
                .is_some()
            {
                return Err(ConfigError::new(
                    "tenant-database",
                    format!("{name} is given twice"),
                ));
            }
        }
        let known = |rule: &PlacementRule| {
            let name = rule.tenant_database();
            name == DEFAULT_TENANT_DATABASE || databases.contains_key(name)
        };
        let default_placement = placement_rule(&self.tenant_placement)
            .ok_or_else(|| ConfigError::new("tenant-placement", RULE_SYNTAX))?;
        if !known(&default_placement) {
            return Err(ConfigError::new(
                "tenant-placement",
                format!(
                    "names the tenant database {:?}, which no --tenant-database defines",
                    default_placement.tenant_database()
                ),
            ));
        }
        let mut plan_placements = BTreeMap::new();
        for entry in &self.plan_placement {
            let (plan, rule) = entry
                .split_once('=')
                .ok_or_else(|| ConfigError::new("plan-placement", "is PLAN=PLACEMENT"))?;
            let rule = placement_rule(rule).ok_or_else(|| {
                ConfigError::new("plan-placement", format!("{plan}: {RULE_SYNTAX}"))
            })?;
            if !known(&rule) {
                return Err(ConfigError::new(
                    "plan-placement",
                    format!(
                        "{plan}: names the tenant database {:?}, which no --tenant-database defines",
                        rule.tenant_database()
                    ),
                ));
            }
            if plan_placements
                .insert(PlanId::new(plan.to_owned()), rule)
                .is_some()
            {
                return Err(ConfigError::new(
                    "plan-placement",
                    format!("{plan} is given twice"),
                ));
            }
        }
        Ok(TenantSchemasConfig {
            migrations_dir: self.tenant_migrations_dir,
            migrations: Arc::new(migrations),
            databases,
            default_placement,
            plan_placements,
            database_max_connections: self.tenant_database_max_connections,
            limits: MigrationLimits {
                lock_timeout_ms: self.tenant_migration_lock_timeout_ms,
                statement_timeout_ms: self.tenant_migration_statement_timeout_ms,
            },
        })
    }
}
