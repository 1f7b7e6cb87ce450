//! Typed configuration: built-in defaults, then an optional TOML file, then `TENANTD_*`
//! environment variables and command-line flags (flags win over the environment, both win
//! over the file). Everything is validated before anything starts; a bad setting stops
//! start-up with one line naming it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use tenantd_application::{ProvisioningSettings, RateLimitSettings};
use tenantd_domain::provisioning::RetryPolicy;

mod integrations;

pub use integrations::{KafkaConfig, RedisConfig};
use integrations::{kafka, rate_limits, redis};

/// Default gRPC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default directory of the embedded mode's development certificates.
pub const DEFAULT_DEV_CERTS_DIR: &str = ".tenantd/dev-certs";
/// Longest soft-deletion retention: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "tenantd.local";

/// tenantd: a gRPC control plane for multi-tenant SaaS.
#[derive(Debug, Parser)]
#[command(
    name = "tenantd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit (start-up also applies them).
    Migrate(ServeArgs),
    /// Manage the contact-email encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `tenantd certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a development CA, a server certificate (localhost, 127.0.0.1) and an admin
    /// client certificate, unless they already exist.
    Generate {
        /// Where to write them.
        #[arg(long, env = "TENANTD_DEV_CERTS_DIR", default_value = DEFAULT_DEV_CERTS_DIR)]
        dev_certs_dir: PathBuf,
        /// SPIFFE trust domain of the admin certificate.
        #[arg(long, env = "TENANTD_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate signed by the development CA, for a tenant, a service or
    /// an admin, as `<name>.pem` and `<name>.key` in the development certificate directory.
    Issue {
        /// Where the development CA is (and the new files go).
        #[arg(long, env = "TENANTD_DEV_CERTS_DIR", default_value = DEFAULT_DEV_CERTS_DIR)]
        dev_certs_dir: PathBuf,
        /// SPIFFE trust domain of the identity.
        #[arg(long, env = "TENANTD_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// The identity.
        #[command(flatten)]
        identity: IdentityArgs,
    },
}

/// `tenantd keys ...`.
#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
pub enum KeysCommand {
    /// Print a new random encryption key entry (id:base64) and blind-index key.
    Generate {
        /// Id of the new key.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Re-seal every contact email still on an older key with the first key of
    /// --encryption-keys, in batches, while the service runs.
    Rewrap {
        /// Settings (database and keys) as for `serve`.
        #[command(flatten)]
        serve: ServeArgs,
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
}

/// Exactly one identity for `certs issue`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct IdentityArgs {
    /// A tenant's id (UUIDv7): the certificate acts as that tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A service name (e.g. billing): the certificate acts as that service.
    #[arg(long)]
    pub service: Option<String>,
    /// An operator.
    #[arg(long)]
    pub admin: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags and environment variables of `tenantd serve`. Unset ones fall back to the file,
/// then to defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as the long flags, with '_' for '-').
    #[arg(long, env = "TENANTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "TENANTD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:9464].
    #[arg(long, env = "TENANTD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Server certificate chain (PEM). With --tls-key and --tls-client-ca; without all
    /// three, development certificates are generated and used.
    #[arg(long, env = "TENANTD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "TENANTD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to.
    #[arg(long, env = "TENANTD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory of the generated development certificates [default: .tenantd/dev-certs].
    #[arg(long, env = "TENANTD_DEV_CERTS_DIR")]
    pub dev_certs_dir: Option<PathBuf>,
    /// SPIFFE trust domain of client identities [default: tenantd.local].
    #[arg(long, env = "TENANTD_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Days a soft-deleted tenant stays restorable [default: 30].
    #[arg(long, env = "TENANTD_DELETION_RETENTION_DAYS")]
    pub deletion_retention_days: Option<u32>,
    /// Seconds to drain in-flight calls on shutdown [default: 10].
    #[arg(long, env = "TENANTD_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "TENANTD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter in tracing's env-filter syntax [default: info].
    #[arg(long, env = "TENANTD_LOG")]
    pub log: Option<String>,
    /// PostgreSQL URL (also read from DATABASE_URL); unset = in-memory store.
    #[arg(long, env = "TENANTD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Most pooled database connections [default: 10].
    #[arg(long, env = "TENANTD_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Longest wait for a pooled connection, in milliseconds; a call that waits longer
    /// fails with UNAVAILABLE [default: 3000].
    #[arg(long, env = "TENANTD_DATABASE_ACQUIRE_TIMEOUT_MS")]
    pub database_acquire_timeout_ms: Option<u64>,
    /// Server-side limit of one SQL statement, in milliseconds [default: 5000].
    #[arg(long, env = "TENANTD_DATABASE_STATEMENT_TIMEOUT_MS")]
    pub database_statement_timeout_ms: Option<u64>,
    /// How often dependencies are probed for the health service, in milliseconds
    /// [default: 2000].
    #[arg(long, env = "TENANTD_HEALTH_PROBE_INTERVAL_MS")]
    pub health_probe_interval_ms: Option<u64>,
    /// Contact-email encryption keys, `id:base64(32 bytes)` separated by commas; the first
    /// encrypts, all decrypt. Required with a database (`tenantd keys generate` makes one).
    #[arg(long, env = "TENANTD_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<Secret>,
    /// Key of the contact-email blind index (base64, at least 32 bytes). Required with a
    /// database; never change it without re-indexing.
    #[arg(long, env = "TENANTD_BLIND_INDEX_KEY", hide_env_values = true)]
    pub blind_index_key: Option<Secret>,
    /// Provisioning workers in this replica [default: 4].
    #[arg(long, env = "TENANTD_PROVISIONING_WORKERS")]
    pub provisioning_workers: Option<usize>,
    /// How long a worker's claim on a run lasts without renewal, in milliseconds; a run of
    /// a replica that died is resumed by another after this [default: 30000].
    #[arg(long, env = "TENANTD_PROVISIONING_LEASE_MS")]
    pub provisioning_lease_ms: Option<u64>,
    /// How often idle workers look for due runs, in milliseconds [default: 500].
    #[arg(long, env = "TENANTD_PROVISIONING_POLL_INTERVAL_MS")]
    pub provisioning_poll_interval_ms: Option<u64>,
    /// Longest attempt of one provisioning step, in milliseconds [default: 60000].
    #[arg(long, env = "TENANTD_PROVISIONING_STEP_TIMEOUT_MS")]
    pub provisioning_step_timeout_ms: Option<u64>,
    /// Attempts of a failing step before the run fails [default: 5].
    #[arg(long, env = "TENANTD_PROVISIONING_MAX_ATTEMPTS")]
    pub provisioning_max_attempts: Option<u32>,
    /// Delay before a step's second attempt, doubled each time (with full jitter), in
    /// milliseconds [default: 1000].
    #[arg(long, env = "TENANTD_PROVISIONING_BACKOFF_BASE_MS")]
    pub provisioning_backoff_base_ms: Option<u64>,
    /// Longest delay between attempts, in milliseconds [default: 60000].
    #[arg(long, env = "TENANTD_PROVISIONING_BACKOFF_MAX_MS")]
    pub provisioning_backoff_max_ms: Option<u64>,
    /// Seconds a provisioning run may take before the sweeper cancels it [default: 1800].
    #[arg(long, env = "TENANTD_PROVISIONING_RUN_TIMEOUT_SECONDS")]
    pub provisioning_run_timeout_seconds: Option<u64>,
    /// How often the sweeper looks for overdue runs, in milliseconds [default: 10000].
    #[arg(long, env = "TENANTD_PROVISIONING_SWEEP_INTERVAL_MS")]
    pub provisioning_sweep_interval_ms: Option<u64>,
    /// Domain under which tenants get DNS names, `<slug>.<domain>` [default: tenants.tenantd.local].
    #[arg(long, env = "TENANTD_DNS_BASE_DOMAIN")]
    pub dns_base_domain: Option<String>,
    /// Address the tenants' A (or AAAA) records point at [default: 127.0.0.1].
    #[arg(long, env = "TENANTD_DNS_INGRESS_ADDRESS")]
    pub dns_ingress_address: Option<IpAddr>,
    /// Prefix of tenant schema names, `<prefix><tenant id>` [default: t_].
    #[arg(long, env = "TENANTD_TENANT_SCHEMA_PREFIX")]
    pub tenant_schema_prefix: Option<String>,
    /// Redis URL (also REDIS_URL), redis://[:password@]host:port[/db]: caches tenants and
    /// API keys and shares rate limits across replicas; unset = no cache, per-process limits.
    #[arg(long, env = "TENANTD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// Longest wait for one Redis call, in milliseconds; slower calls fall back to the
    /// database or the in-process limiter [default: 250].
    #[arg(long, env = "TENANTD_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Prefix of every Redis key [default: tenantd:].
    #[arg(long, env = "TENANTD_REDIS_KEY_PREFIX")]
    pub redis_key_prefix: Option<String>,
    /// Seconds a cached tenant or API key lives (writes invalidate at once) [default: 30].
    #[arg(long, env = "TENANTD_CACHE_TTL_SECONDS")]
    pub cache_ttl_seconds: Option<u64>,
    /// Requests per second of each admin identity; 0 = no limit [default: 1000].
    #[arg(long, env = "TENANTD_RATE_LIMIT_ADMIN_RPS")]
    pub rate_limit_admin_rps: Option<u32>,
    /// Requests per second of each service identity; 0 = no limit [default: 5000].
    #[arg(long, env = "TENANTD_RATE_LIMIT_SERVICE_RPS")]
    pub rate_limit_service_rps: Option<u32>,
    /// Kafka bootstrap brokers, host:port[,host:port] (also KAFKA_BROKERS): events are
    /// relayed from the outbox to Kafka; unset = they stay in the outbox (still listable).
    #[arg(long, env = "TENANTD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<Secret>,
    /// The events topic, created at start-up if missing [default: tenant.events.v1].
    #[arg(long, env = "TENANTD_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Partitions of the events topic when tenantd creates it [default: 6].
    #[arg(long, env = "TENANTD_KAFKA_TOPIC_PARTITIONS")]
    pub kafka_topic_partitions: Option<i32>,
    /// Replication factor of the events topic when tenantd creates it; -1 = the brokers'
    /// default [default: -1].
    #[arg(
        long,
        env = "TENANTD_KAFKA_TOPIC_REPLICATION_FACTOR",
        allow_hyphen_values = true
    )]
    pub kafka_topic_replication_factor: Option<i32>,
    /// How long a message may wait for the brokers to confirm it, in milliseconds, before
    /// the relay retries it [default: 10000].
    #[arg(long, env = "TENANTD_KAFKA_MESSAGE_TIMEOUT_MS")]
    pub kafka_message_timeout_ms: Option<u64>,
    /// How often the relay looks for unpublished events when idle, in milliseconds
    /// [default: 200].
    #[arg(long, env = "TENANTD_OUTBOX_POLL_INTERVAL_MS")]
    pub outbox_poll_interval_ms: Option<u64>,
    /// Most events the relay publishes in one batch [default: 500].
    #[arg(long, env = "TENANTD_OUTBOX_BATCH_SIZE")]
    pub outbox_batch_size: Option<usize>,
}

/// The same settings in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    dev_certs_dir: Option<PathBuf>,
    trust_domain: Option<String>,
    deletion_retention_days: Option<u32>,
    shutdown_grace_seconds: Option<u64>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    database_url: Option<Secret>,
    database_max_connections: Option<u32>,
    database_acquire_timeout_ms: Option<u64>,
    database_statement_timeout_ms: Option<u64>,
    health_probe_interval_ms: Option<u64>,
    encryption_keys: Option<Secret>,
    blind_index_key: Option<Secret>,
    provisioning_workers: Option<usize>,
    provisioning_lease_ms: Option<u64>,
    provisioning_poll_interval_ms: Option<u64>,
    provisioning_step_timeout_ms: Option<u64>,
    provisioning_max_attempts: Option<u32>,
    provisioning_backoff_base_ms: Option<u64>,
    provisioning_backoff_max_ms: Option<u64>,
    provisioning_run_timeout_seconds: Option<u64>,
    provisioning_sweep_interval_ms: Option<u64>,
    dns_base_domain: Option<String>,
    dns_ingress_address: Option<IpAddr>,
    tenant_schema_prefix: Option<String>,
    redis_url: Option<Secret>,
    redis_timeout_ms: Option<u64>,
    redis_key_prefix: Option<String>,
    cache_ttl_seconds: Option<u64>,
    rate_limit_admin_rps: Option<u32>,
    rate_limit_service_rps: Option<u32>,
    kafka_brokers: Option<Secret>,
    kafka_topic: Option<String>,
    kafka_topic_partitions: Option<i32>,
    kafka_topic_replication_factor: Option<i32>,
    kafka_message_timeout_ms: Option<u64>,
    outbox_poll_interval_ms: Option<u64>,
    outbox_batch_size: Option<usize>,
}

/// Where the server's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-provided PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// Client CA bundle.
        client_ca: PathBuf,
    },
    /// Generated development certificates in this directory (embedded mode).
    Dev {
        /// The directory.
        dir: PathBuf,
    },
}

/// A secret string (a database URL may carry a password): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
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
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where tenants are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// In memory: the embedded default, lost on exit.
    Memory,
    /// PostgreSQL.
    Postgres {
        /// Connection URL.
        url: Secret,
        /// Pool limits.
        max_connections: u32,
        /// Longest wait for a pooled connection.
        acquire_timeout: Duration,
        /// Server-side statement limit.
        statement_timeout: Duration,
        /// Contact-email key ring entries.
        encryption_keys: Secret,
        /// Blind-index key.
        blind_index_key: Secret,
    },
}

/// The validated configuration of `tenantd serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Metrics listen address (port 0 picks a free port).
    pub metrics_listen: SocketAddr,
    /// TLS material.
    pub tls: TlsSource,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Soft-deletion retention.
    pub deletion_retention: Duration,
    /// Drain deadline on shutdown.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
    /// Where tenants are stored.
    pub store: Store,
    /// Interval of the dependency health probes.
    pub health_probe_interval: Duration,
    /// The provisioning engine's tunables.
    pub provisioning: ProvisioningSettings,
    /// Where tenants' provisioned resources are named and pointed.
    pub tenant_resources: TenantResources,
    /// Redis, when configured: the cache and shared rate limits.
    pub redis: Option<RedisConfig>,
    /// Rates of admins and services.
    pub rate_limits: RateLimitSettings,
    /// Kafka, when configured: the event relay.
    pub kafka: Option<KafkaConfig>,
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {problem}")]
pub struct ConfigError {
    /// The flag (without dashes) or file key.
    pub setting: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn bad(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

impl Config {
    /// Merges flags/env over the optional file over defaults, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting (unreadable or malformed file included).
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        Self::load_with(args, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the plain, unprefixed variables (`DATABASE_URL`, `REDIS_URL`,
    /// `KAFKA_BROKERS`) read through `env`, so tests do not depend on the environment they
    /// run in. (The `TENANTD_*` ones arrive through `args`.)
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn load_with(
        args: ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let store = store(&args, &file, env("DATABASE_URL"))?;
        let provisioning = provisioning(&args, &file)?;
        let tenant_resources = tenant_resources(&args, &file)?;
        let redis = redis(&args, &file, env("REDIS_URL"))?;
        let rate_limits = rate_limits(&args, &file);
        let kafka = kafka(&args, &file, env("KAFKA_BROKERS"))?;
        let tls_cert = args.tls_cert.or(file.tls_cert);
        let tls_key = args.tls_key.or(file.tls_key);
        let tls_client_ca = args.tls_client_ca.or(file.tls_client_ca);
        let tls = match (tls_cert, tls_key, tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => TlsSource::Files {
                cert,
                key,
                client_ca,
            },
            (None, None, None) => TlsSource::Dev {
                dir: args
                    .dev_certs_dir
                    .or(file.dev_certs_dir)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DEV_CERTS_DIR)),
            },
            _ => {
                return Err(bad(
                    "tls-cert",
                    "--tls-cert, --tls-key and --tls-client-ca must be given together",
                ));
            }
        };
        let trust_domain = args
            .trust_domain
            .or(file.trust_domain)
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        if trust_domain.is_empty()
            || !trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(bad(
                "trust-domain",
                "must be a lowercase DNS name such as tenantd.local",
            ));
        }
        let retention_days = args
            .deletion_retention_days
            .or(file.deletion_retention_days)
            .unwrap_or(30);
        if !(1..=MAX_RETENTION_DAYS).contains(&retention_days) {
            return Err(bad("deletion-retention-days", "must be between 1 and 3650"));
        }
        let log = args.log.or(file.log).unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(bad(
                "log",
                "is not a valid tracing filter (e.g. info,tenantd=debug)",
            ));
        }
        let health_probe_interval = positive_ms(
            "health-probe-interval-ms",
            args.health_probe_interval_ms
                .or(file.health_probe_interval_ms),
            2000,
        )?;
        Ok(Self {
            store,
            health_probe_interval,
            provisioning,
            tenant_resources,
            redis,
            rate_limits,
            kafka,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| parse_default(DEFAULT_LISTEN)),
            metrics_listen: args
                .metrics_listen
                .or(file.metrics_listen)
                .unwrap_or_else(|| parse_default(DEFAULT_METRICS_LISTEN)),
            tls,
            trust_domain,
            deletion_retention: Duration::from_hours(u64::from(retention_days) * 24),
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace_seconds
                    .or(file.shutdown_grace_seconds)
                    .unwrap_or(10),
            ),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            log,
        })
    }
}

/// The store: PostgreSQL when a URL is set, else memory.
fn store(
    args: &ServeArgs,
    file: &FileConfig,
    database_url_env: Option<String>,
) -> Result<Store, ConfigError> {
    let url = args
        .database_url
        .clone()
        .map(|url| url.expose().to_owned())
        .or(database_url_env)
        .or_else(|| {
            file.database_url
                .as_ref()
                .map(|url| url.expose().to_owned())
        });
    let max_connections = args
        .database_max_connections
        .or(file.database_max_connections);
    let acquire_timeout_ms = args
        .database_acquire_timeout_ms
        .or(file.database_acquire_timeout_ms);
    let statement_timeout_ms = args
        .database_statement_timeout_ms
        .or(file.database_statement_timeout_ms);
    let Some(url) = url.filter(|url| !url.is_empty()) else {
        return Ok(Store::Memory);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad(
            "database-url",
            "must be a postgres:// or postgresql:// URL",
        ));
    }
    let max_connections = max_connections.unwrap_or(10);
    if max_connections == 0 {
        return Err(bad("database-max-connections", "must be at least 1"));
    }
    let Some(encryption_keys) = args
        .encryption_keys
        .clone()
        .or_else(|| file.encryption_keys.clone())
        .filter(|k| !k.expose().is_empty())
    else {
        return Err(bad(
            "encryption-keys",
            "required with a database: contact emails are stored encrypted (tenantd keys generate)",
        ));
    };
    let Some(blind_index_key) = args
        .blind_index_key
        .clone()
        .or_else(|| file.blind_index_key.clone())
        .filter(|k| !k.expose().is_empty())
    else {
        return Err(bad(
            "blind-index-key",
            "required with a database (tenantd keys generate)",
        ));
    };
    Ok(Store::Postgres {
        encryption_keys,
        blind_index_key,
        url: Secret::new(url),
        max_connections,
        acquire_timeout: positive_ms("database-acquire-timeout-ms", acquire_timeout_ms, 3000)?,
        statement_timeout: positive_ms(
            "database-statement-timeout-ms",
            statement_timeout_ms,
            5000,
        )?,
    })
}

/// Names and addresses of the resources provisioning creates for each tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantResources {
    /// DNS names are `<slug>.<base_domain>`.
    pub dns_base_domain: String,
    /// What the tenants' address records point at.
    pub dns_ingress: IpAddr,
    /// Tenant schemas are `<prefix><tenant id>`.
    pub schema_prefix: String,
}

impl Default for TenantResources {
    fn default() -> Self {
        Self {
            dns_base_domain: "tenants.tenantd.local".into(),
            dns_ingress: IpAddr::from([127, 0, 0, 1]),
            schema_prefix: tenantd_adapters::postgres::DEFAULT_SCHEMA_PREFIX.into(),
        }
    }
}

fn provisioning(args: &ServeArgs, file: &FileConfig) -> Result<ProvisioningSettings, ConfigError> {
    let defaults = ProvisioningSettings::default();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let workers = args
        .provisioning_workers
        .or(file.provisioning_workers)
        .unwrap_or(defaults.workers);
    if !(1..=256).contains(&workers) {
        return Err(bad("provisioning-workers", "must be between 1 and 256"));
    }
    let max_attempts = args
        .provisioning_max_attempts
        .or(file.provisioning_max_attempts)
        .unwrap_or(defaults.retry.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(bad(
            "provisioning-max-attempts",
            "must be between 1 and 100",
        ));
    }
    let lease = positive_ms(
        "provisioning-lease-ms",
        args.provisioning_lease_ms.or(file.provisioning_lease_ms),
        ms(defaults.lease),
    )?;
    if lease < Duration::from_secs(1) {
        // Renewed every third of it: shorter leases lapse under ordinary latency.
        return Err(bad("provisioning-lease-ms", "must be at least 1000"));
    }
    let backoff_base = positive_ms(
        "provisioning-backoff-base-ms",
        args.provisioning_backoff_base_ms
            .or(file.provisioning_backoff_base_ms),
        1000,
    )?;
    let backoff_max = positive_ms(
        "provisioning-backoff-max-ms",
        args.provisioning_backoff_max_ms
            .or(file.provisioning_backoff_max_ms),
        60_000,
    )?;
    if backoff_max < backoff_base {
        return Err(bad(
            "provisioning-backoff-max-ms",
            "must be at least provisioning-backoff-base-ms",
        ));
    }
    let run_timeout_seconds = args
        .provisioning_run_timeout_seconds
        .or(file.provisioning_run_timeout_seconds)
        .unwrap_or(defaults.run_timeout.as_secs());
    if !(1..=7 * 24 * 3600).contains(&run_timeout_seconds) {
        return Err(bad(
            "provisioning-run-timeout-seconds",
            "must be between 1 and 604800 (a week)",
        ));
    }
    let chrono_ms = |d: Duration| {
        chrono::Duration::milliseconds(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    Ok(ProvisioningSettings {
        workers,
        lease,
        poll_interval: positive_ms(
            "provisioning-poll-interval-ms",
            args.provisioning_poll_interval_ms
                .or(file.provisioning_poll_interval_ms),
            ms(defaults.poll_interval),
        )?,
        step_timeout: positive_ms(
            "provisioning-step-timeout-ms",
            args.provisioning_step_timeout_ms
                .or(file.provisioning_step_timeout_ms),
            ms(defaults.step_timeout),
        )?,
        retry: RetryPolicy {
            base: chrono_ms(backoff_base),
            max_delay: chrono_ms(backoff_max),
            max_attempts,
        },
        run_timeout: Duration::from_secs(run_timeout_seconds),
        sweep_interval: positive_ms(
            "provisioning-sweep-interval-ms",
            args.provisioning_sweep_interval_ms
                .or(file.provisioning_sweep_interval_ms),
            ms(defaults.sweep_interval),
        )?,
    })
}

fn tenant_resources(args: &ServeArgs, file: &FileConfig) -> Result<TenantResources, ConfigError> {
    let defaults = TenantResources::default();
    let dns_base_domain = args
        .dns_base_domain
        .clone()
        .or_else(|| file.dns_base_domain.clone())
        .unwrap_or(defaults.dns_base_domain);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if dns_base_domain.len() > 180 || !dns_base_domain.split('.').all(label_ok) {
        return Err(bad(
            "dns-base-domain",
            "must be a lowercase DNS name such as tenants.example.com",
        ));
    }
    let schema_prefix = args
        .tenant_schema_prefix
        .clone()
        .or_else(|| file.tenant_schema_prefix.clone())
        .unwrap_or(defaults.schema_prefix);
    if !tenantd_adapters::postgres::is_valid_schema_prefix(&schema_prefix) {
        return Err(bad(
            "tenant-schema-prefix",
            tenantd_adapters::postgres::BadSchemaPrefix.to_string(),
        ));
    }
    Ok(TenantResources {
        dns_base_domain,
        dns_ingress: args
            .dns_ingress_address
            .or(file.dns_ingress_address)
            .unwrap_or(defaults.dns_ingress),
        schema_prefix,
    })
}

fn positive_ms(
    setting: &'static str,
    value: Option<u64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(bad(setting, "must be at least 1")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        bad(
            "config",
            format!("{}: {}", path.display(), e.message().trim_end()),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// The serve settings of a command line.
    pub(super) fn parse(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["tenantd"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("valid flags").serve
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::load_with(ServeArgs::default(), &|_| None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(config.trust_domain, "tenantd.local");
        assert_eq!(
            config.tls,
            TlsSource::Dev {
                dir: PathBuf::from(".tenantd/dev-certs")
            }
        );
        assert_eq!(config.deletion_retention, Duration::from_hours(30 * 24));
        assert_eq!(config.provisioning, ProvisioningSettings::default());
        assert_eq!(config.provisioning.run_timeout, Duration::from_mins(30));
        assert_eq!(config.tenant_resources, TenantResources::default());
    }

    #[test]
    fn provisioning_settings_come_from_flags_and_are_checked() {
        let config = Config::load_with(
            parse(&[
                "--provisioning-workers",
                "8",
                "--provisioning-lease-ms",
                "2000",
                "--provisioning-max-attempts",
                "3",
                "--provisioning-backoff-base-ms",
                "50",
                "--provisioning-backoff-max-ms",
                "400",
                "--provisioning-run-timeout-seconds",
                "60",
                "--dns-base-domain",
                "tenants.example.com",
                "--tenant-schema-prefix",
                "tenant_",
            ]),
            &|_| None,
        )
        .unwrap();
        let p = config.provisioning;
        assert_eq!(
            (p.workers, p.lease, p.run_timeout),
            (8, Duration::from_secs(2), Duration::from_mins(1))
        );
        assert_eq!(
            p.retry,
            RetryPolicy {
                base: chrono::Duration::milliseconds(50),
                max_delay: chrono::Duration::milliseconds(400),
                max_attempts: 3,
            }
        );
        assert_eq!(
            config.tenant_resources.dns_base_domain,
            "tenants.example.com"
        );
        assert_eq!(config.tenant_resources.schema_prefix, "tenant_");

        for (flags, setting) in [
            (&["--provisioning-workers", "0"][..], "provisioning-workers"),
            (
                &["--provisioning-max-attempts", "0"],
                "provisioning-max-attempts",
            ),
            (&["--provisioning-lease-ms", "0"], "provisioning-lease-ms"),
            (&["--provisioning-lease-ms", "999"], "provisioning-lease-ms"),
            (
                &[
                    "--provisioning-backoff-base-ms",
                    "500",
                    "--provisioning-backoff-max-ms",
                    "100",
                ],
                "provisioning-backoff-max-ms",
            ),
            (
                &["--provisioning-run-timeout-seconds", "0"],
                "provisioning-run-timeout-seconds",
            ),
            (&["--dns-base-domain", "Bad Domain"], "dns-base-domain"),
            (
                &["--tenant-schema-prefix", "x\"; DROP"],
                "tenant-schema-prefix",
            ),
            (&["--tenant-schema-prefix", "_x"], "tenant-schema-prefix"),
        ] {
            let err = Config::load_with(parse(flags), &|_| None).unwrap_err();
            assert_eq!(err.setting, setting, "{flags:?}");
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7001\"\nlog_format = \"json\""
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let config = Config::load_with(
            parse(&["--config", path, "--listen", "127.0.0.1:8000"]),
            &|_| None,
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_file_keys_and_partial_tls_are_refused_with_the_setting_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "lisen = \"127.0.0.1:7000\"").unwrap();
        let err = Config::load_with(parse(&["--config", file.path().to_str().unwrap()]), &|_| {
            None
        })
        .unwrap_err();
        assert_eq!(err.setting, "config");
        assert!(err.to_string().contains("lisen"), "{err}");

        let err = Config::load_with(parse(&["--tls-cert", "a.pem"]), &|_| None).unwrap_err();
        assert_eq!(err.setting, "tls-cert");

        let err =
            Config::load_with(parse(&["--trust-domain", "Not Valid"]), &|_| None).unwrap_err();
        assert_eq!(err.setting, "trust-domain");

        for days in ["0", "3651"] {
            let err = Config::load_with(parse(&["--deletion-retention-days", days]), &|_| None)
                .unwrap_err();
            assert_eq!(err.setting, "deletion-retention-days");
        }
    }

    #[test]
    fn database_url_selects_postgres_and_is_redacted() {
        let config = Config::load_with(
            parse(&[
                "--encryption-keys",
                "k1:AAAA",
                "--blind-index-key",
                "BBBB",
                "--database-url",
                "postgres://app:s3cret@db:5432/tenantd",
                "--database-acquire-timeout-ms",
                "750",
            ]),
            &|_| None,
        )
        .unwrap();
        let Store::Postgres {
            url,
            acquire_timeout,
            ..
        } = &config.store
        else {
            panic!("expected PostgreSQL");
        };
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/tenantd");
        assert_eq!(*acquire_timeout, Duration::from_millis(750));
        assert!(!format!("{config:?}").contains("s3cret"));

        let err =
            Config::load_with(parse(&["--database-url", "mysql://db"]), &|_| None).unwrap_err();
        assert_eq!(err.setting, "database-url");
        let err = Config::load_with(parse(&["--database-url", "postgres://db/x"]), &|_| None)
            .unwrap_err();
        assert_eq!(
            err.setting, "encryption-keys",
            "a database needs encryption keys"
        );
    }

    #[test]
    fn malformed_flags_are_refused_by_the_parser() {
        assert!(Cli::try_parse_from(["tenantd", "--listen", "nowhere"]).is_err());
    }
}
