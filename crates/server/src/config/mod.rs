//! Typed configuration, one module per area (server, limits, database, tenants, tenant
//! schemas, rollouts, provisioning, DNS, Redis, rate limits, audit, retention, exports,
//! Kafka). Each area is one struct deriving clap `Args`: its flags, their `TENANTD_*`
//! variables, their defaults (in one place: the `default_value`s there) and their help,
//! grouped under a heading in `tenantd --help`; and one `resolve` that checks what clap
//! cannot and builds the area's validated part of [`Config`].
//!
//! The layers — built-in defaults, then the TOML file, then the plain variables
//! (`DATABASE_URL`, `REDIS_URL`, `KAFKA_BROKERS`), then `TENANTD_*` variables, then flags —
//! are merged once, by one mechanism (`load.rs`): every layer below the command line
//! becomes the arguments' defaults, so file and environment values go through the same
//! parsers and checks as flags. A bad setting (from any layer), an unknown file key and an
//! unknown `TENANTD_*` variable each stop start-up with one line naming it. Values are
//! checked whether or not their feature is on (a bad Redis timeout is refused without a
//! Redis URL too).
//!
//! Adding a setting: a field in its area's struct (flag, variable, default, doc), its use
//! in that area's `resolve`, and a row in the README's configuration table (a test holds
//! the table to the real CLI).

mod audit;
mod cli;
mod database;
mod dns;
mod exports;
mod kafka;
mod limits;
mod load;
mod provisioning;
mod rate_limits;
mod redis;
mod retention;
mod rollouts;
mod server;
mod tenant_schemas;
mod tenants;
#[cfg(test)]
mod tests;

use crate::audit::ReadAudit;
use clap::Args;
use tenantd_application::{ProvisioningSettings, RateLimitSettings};

pub use audit::AuditArgs;
pub use cli::{CertsCommand, Cli, Command, IdentityArgs, KeysCommand, TenantMigrationsCommand};
pub use database::{DatabaseArgs, Store};
pub use dns::{DnsArgs, DnsConfig};
pub use exports::{ExportArgs, ExportsConfig};
pub use kafka::{DEFAULT_KAFKA_TOPIC, KafkaArgs, KafkaConfig};
pub use limits::{LimitArgs, LimitsConfig};
pub use load::{Environment, LoadError, parse};
pub use provisioning::ProvisioningArgs;
pub use rate_limits::RateLimitArgs;
pub use redis::{RedisArgs, RedisConfig};
pub use retention::{RetentionArgs, RetentionConfig};
pub use rollouts::{RolloutArgs, RolloutsConfig};
pub use server::{
    DEFAULT_DEV_CERTS_DIR, DEFAULT_TRUST_DOMAIN, LogFormat, ServerArgs, ServerConfig, TlsSource,
};
pub use tenant_schemas::{TenantSchemasArgs, TenantSchemasConfig};
pub use tenants::{MAX_RETENTION_DAYS, TenantsArgs, TenantsConfig};

/// Every setting of `tenantd serve` (and of the commands that open the same store), by
/// area.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// TOML configuration file: keys are the long flags with '_' for '-'; flags and
    /// variables win over it.
    #[arg(long, env = "TENANTD_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Listeners, TLS, identity, logging and shutdown.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Resource limits of the gRPC server.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The control-plane database and encryption at rest.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The tenant lifecycle and tenant schemas.
    #[command(flatten)]
    pub tenants: TenantsArgs,
    /// The tenant schemas: migrations, tenant databases and placement.
    #[command(flatten)]
    pub tenant_schemas: TenantSchemasArgs,
    /// Tenant schema rollouts.
    #[command(flatten)]
    pub rollouts: RolloutArgs,
    /// The provisioning engine.
    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
    /// Tenants' DNS records.
    #[command(flatten)]
    pub dns: DnsArgs,
    /// Redis: the cache and shared rate limits.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Rates of the roles without a plan.
    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
    /// Which calls are audited.
    #[command(flatten)]
    pub audit: AuditArgs,
    /// How long events and audit records are kept.
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Where exports are written and for how long.
    #[command(flatten)]
    pub exports: ExportArgs,
    /// Kafka: the event relay.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// The validated configuration of `tenantd serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners, TLS, identity, logging and shutdown.
    pub server: ServerConfig,
    /// Resource limits of the gRPC server.
    pub limits: LimitsConfig,
    /// Where tenants are stored.
    pub store: Store,
    /// The tenant lifecycle and tenant schemas.
    pub tenants: TenantsConfig,
    /// The tenant schemas' migrations, databases and placement.
    pub tenant_schemas: TenantSchemasConfig,
    /// Tenant schema rollouts.
    pub rollouts: RolloutsConfig,
    /// The provisioning engine's tunables.
    pub provisioning: ProvisioningSettings,
    /// Tenants' DNS records.
    pub dns: DnsConfig,
    /// Redis, when configured: the cache and shared rate limits.
    pub redis: Option<RedisConfig>,
    /// Rates of admins and services.
    pub rate_limits: RateLimitSettings,
    /// Which reads are audited (mutations and denied calls always are).
    pub audit_reads: ReadAudit,
    /// How long events and audit records are kept.
    pub retention: RetentionConfig,
    /// Exports.
    pub exports: ExportsConfig,
    /// Kafka, when configured: the event relay.
    pub kafka: Option<KafkaConfig>,
}

impl Config {
    /// Validates `settings` area by area.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn resolve(settings: Settings) -> Result<Self, ConfigError> {
        let store = settings.database.resolve()?;
        let tenant_schemas = settings.tenant_schemas.resolve()?;
        if store == Store::Memory && !tenant_schemas.databases.is_empty() {
            return Err(ConfigError::new(
                "tenant-database",
                "needs the PostgreSQL store (--database-url): the in-memory store has no databases",
            ));
        }
        let rollouts = settings.rollouts.resolve(tenant_schemas.limits)?;
        Ok(Self {
            server: settings.server.resolve()?,
            limits: settings.limits.resolve()?,
            store,
            tenants: settings.tenants.resolve()?,
            tenant_schemas,
            rollouts,
            provisioning: settings.provisioning.resolve()?,
            dns: settings.dns.resolve()?,
            redis: settings.redis.resolve()?,
            rate_limits: settings.rate_limits.resolve(),
            audit_reads: settings.audit.resolve()?,
            retention: settings.retention.resolve()?,
            exports: settings.exports.resolve()?,
            kafka: settings.kafka.resolve()?,
        })
    }

    /// The configuration `argv` gives in `env` (with a file if one is named): the serve
    /// settings of whichever command `argv` runs.
    ///
    /// # Errors
    /// [`LoadError`]: a command-line error, or a [`ConfigError`].
    pub fn load<I, T>(argv: I, env: &Environment) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = parse(argv, env)?;
        let settings = cli
            .settings()
            .ok_or_else(|| ConfigError::new("command", "this command takes no settings"))?;
        Ok(Self::resolve(settings.clone())?)
    }
}

/// A configuration problem, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    /// The flag (without dashes), variable or file key.
    pub setting: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    /// A problem of `setting`.
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// A secret string (a database URL may carry a password): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `None` for an empty secret: an empty setting means "not set".
    fn non_empty(secret: Option<Secret>) -> Option<Secret> {
        secret.filter(|s| !s.0.is_empty())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A positive number of milliseconds as a duration.
fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}
