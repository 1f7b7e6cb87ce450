//! The command line: the subcommands and their own arguments. The settings every
//! store-opening command shares are [`Settings`](super::Settings).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::Settings;
use super::server::{DEFAULT_DEV_CERTS_DIR, DEFAULT_TRUST_DOMAIN};

/// tenantd: a gRPC control plane for multi-tenant SaaS.
#[derive(Debug, Parser)]
#[command(
    name = "tenantd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TENANTD_COMMIT"), ")"),
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings when no subcommand is given.
    #[command(flatten)]
    pub serve: Settings,
}

impl Cli {
    /// The settings of the command to run, unless it takes none.
    pub fn settings(&self) -> Option<&Settings> {
        match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(settings) | Command::Migrate(settings)) => Some(settings),
            Some(
                Command::Keys(KeysCommand::Rewrap { serve, .. })
                | Command::TenantMigrations(
                    TenantMigrationsCommand::List(serve) | TenantMigrationsCommand::Status(serve),
                ),
            ) => Some(serve),
            Some(Command::Keys(KeysCommand::Generate { .. }) | Command::Certs(_)) => None,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (the default).
    Serve(Settings),
    /// Apply pending database migrations and exit (start-up also applies them).
    Migrate(Settings),
    /// Manage the contact-email encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show the tenant schema's migrations and how far the tenant schemas are.
    #[command(subcommand)]
    TenantMigrations(TenantMigrationsCommand),
}

/// `tenantd tenant-migrations ...`.
#[derive(Debug, Subcommand)]
pub enum TenantMigrationsCommand {
    /// List the migrations (--tenant-migrations-dir, or the built-in set): version, name,
    /// checksum.
    List(Settings),
    /// Show how many tenant schemas are at each version, how many are behind the newest,
    /// and the rollout running or paused (needs the database).
    Status(Settings),
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
    /// Re-seal everything still sealed with an older key (contact emails, the tenant
    /// schemas' user emails, unclaimed first API keys) with the first key of
    /// --encryption-keys, in batches, while the service runs.
    Rewrap {
        /// Settings (database and keys) as for `serve`.
        #[command(flatten)]
        serve: Settings,
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
