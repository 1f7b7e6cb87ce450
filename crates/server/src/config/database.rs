//! Database settings: the control-plane PostgreSQL (unset: the embedded in-memory store)
//! and the keys that seal contact emails at rest.

use clap::Args;
use tenantd_adapters::postgres::PgSettings;

use super::{ConfigError, Secret, millis};

/// The control-plane database and encryption at rest.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// PostgreSQL URL (also read from DATABASE_URL); unset = in-memory store.
    #[arg(long, env = "TENANTD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Most pooled database connections.
    #[arg(
        long,
        env = "TENANTD_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub database_max_connections: u32,
    /// Connections of the pool background work uses (provisioning workers, rollouts, the
    /// outbox relay, the audit writer), apart from the pool of calls, so background work
    /// never takes the connections calls wait for.
    #[arg(
        long,
        env = "TENANTD_DATABASE_BACKGROUND_CONNECTIONS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub database_background_connections: u32,
    /// Longest wait for a pooled connection, in milliseconds; a call that waits longer
    /// fails with UNAVAILABLE (calls have a 30 s deadline).
    #[arg(
        long,
        env = "TENANTD_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 3000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub database_acquire_timeout_ms: u64,
    /// Server-side limit of one SQL statement, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub database_statement_timeout_ms: u64,
    /// Contact-email encryption keys, `id:base64(32 bytes)` separated by commas; the first
    /// encrypts, all decrypt. Required with a database (`tenantd keys generate` makes one).
    #[arg(long, env = "TENANTD_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<Secret>,
    /// Key of the contact-email blind index (base64, at least 32 bytes). Required with a
    /// database; never change it without re-indexing.
    #[arg(long, env = "TENANTD_BLIND_INDEX_KEY", hide_env_values = true)]
    pub blind_index_key: Option<Secret>,
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
        /// Limits of the pool calls use, and the statement timeout.
        pool: PgSettings,
        /// Those of the pool background work uses.
        background: PgSettings,
        /// Contact-email key ring entries.
        encryption_keys: Secret,
        /// Blind-index key.
        blind_index_key: Secret,
    },
}

impl DatabaseArgs {
    pub(super) fn resolve(self) -> Result<Store, ConfigError> {
        let Some(url) = Secret::non_empty(self.database_url) else {
            return Ok(Store::Memory);
        };
        let scheme_ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.expose().starts_with(scheme));
        if !scheme_ok {
            return Err(ConfigError::new(
                "database-url",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        let Some(encryption_keys) = Secret::non_empty(self.encryption_keys) else {
            return Err(ConfigError::new(
                "encryption-keys",
                "required with a database: contact emails are stored encrypted (tenantd keys generate)",
            ));
        };
        let Some(blind_index_key) = Secret::non_empty(self.blind_index_key) else {
            return Err(ConfigError::new(
                "blind-index-key",
                "required with a database (tenantd keys generate)",
            ));
        };
        let pool = PgSettings {
            max_connections: self.database_max_connections,
            acquire_timeout: millis(self.database_acquire_timeout_ms),
            statement_timeout: millis(self.database_statement_timeout_ms),
        };
        Ok(Store::Postgres {
            url,
            pool,
            background: PgSettings {
                max_connections: self.database_background_connections,
                ..pool
            },
            encryption_keys,
            blind_index_key,
        })
    }
}
