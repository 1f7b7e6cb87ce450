//! The commands: one module per area, each turning flags into requests and responses into
//! output.

mod catalog;
mod keys;
mod lifecycle;
mod provisioning;
mod rollouts;
mod tenants;

use std::path::Path;

use clap::Subcommand;

use crate::context::{self, Config, Context};
use crate::output::{Format, Printer, Table, emit};
use crate::{Connection, Failure};

/// A command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tenants: create, get, list, update, delete, undelete, suspend, resume.
    #[command(subcommand)]
    Tenants(tenants::Tenants),
    /// Provisioning runs: get, watch, cancel, retry.
    #[command(subcommand)]
    Provisioning(provisioning::Provisioning),
    /// API keys: create, list, revoke, verify, claim the first one.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(keys::ApiKeys),
    /// Legal holds: set, release.
    #[command(subcommand, name = "legal-hold")]
    LegalHold(lifecycle::LegalHold),
    /// Purges of deleted tenants: start, get.
    #[command(subcommand)]
    Purge(lifecycle::PurgeCommand),
    /// Exports of a tenant's data: create, get, download.
    #[command(subcommand)]
    Exports(lifecycle::Exports),
    /// Rollouts of the application's migrations: start, get, list, watch, pause, resume,
    /// cancel, retry-failed.
    #[command(subcommand)]
    Rollouts(rollouts::Rollouts),
    /// The tenants' schemas and their versions.
    #[command(subcommand, name = "tenant-schemas")]
    TenantSchemas(rollouts::TenantSchemas),
    /// Plans: list, get.
    #[command(subcommand)]
    Plans(catalog::Plans),
    /// Lifecycle events and dead letters.
    #[command(subcommand)]
    Events(catalog::Events),
    /// Audit records.
    #[command(subcommand)]
    Audit(catalog::Audit),
    /// Named connection settings in the config file.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `tenantctl context ...`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Adds (or replaces) a context: the endpoint, and the certificates given with --ca,
    /// --cert, --key (default: the development ones, by absolute path); the first one added
    /// becomes current.
    Add {
        /// Its name.
        name: String,
        /// tenantd's address, host:port.
        endpoint: String,
    },
    /// Makes a context the current one.
    Use {
        /// Its name.
        name: String,
    },
    /// Lists the contexts (the current one marked `*`).
    List,
    /// Removes a context.
    Remove {
        /// Its name.
        name: String,
    },
}

/// Runs a context command on the config file at `path`; `flags` are the certificate flags
/// (for `add`).
pub fn context(
    command: ContextCommand,
    path: &Path,
    flags: &context::Overrides,
    printer: &Printer,
) -> anyhow::Result<()> {
    let mut config = Config::load(path)?;
    match command {
        ContextCommand::Add { name, endpoint } => {
            let given = context::resolve(None, flags);
            let added = Context {
                endpoint,
                ca: context::absolute(&given.ca)?,
                cert: context::absolute(&given.cert)?,
                key: context::absolute(&given.key)?,
                server_name: given.server_name,
            };
            for file in [&added.ca, &added.cert, &added.key] {
                anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
            }
            config.contexts.insert(name.clone(), added);
            if config.current.is_none() {
                config.current = Some(name.clone());
            }
            config.save(path)?;
            eprintln!("context {name} saved in {}", path.display());
        }
        ContextCommand::Use { name } => {
            config.selected(Some(&name))?;
            config.current = Some(name.clone());
            config.save(path)?;
            eprintln!("now using context {name}");
        }
        ContextCommand::Remove { name } => {
            config.selected(Some(&name))?;
            config.contexts.remove(&name);
            if config.current.as_deref() == Some(name.as_str()) {
                config.current = None;
            }
            config.save(path)?;
            eprintln!("context {name} removed");
        }
        ContextCommand::List => match printer.format() {
            Format::Table => {
                let mut table = Table::new(&["CURRENT", "NAME", "ENDPOINT", "CERT"]);
                for (name, c) in &config.contexts {
                    let current = config.current.as_deref() == Some(name.as_str());
                    table.row(vec![
                        if current { "*" } else { "" }.to_owned(),
                        name.clone(),
                        c.endpoint.clone(),
                        c.cert.display().to_string(),
                    ]);
                }
                emit(&table.render())?;
            }
            Format::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&config)?))?,
            Format::Yaml => emit(&serde_norway::to_string(&config)?)?,
        },
    }
    Ok(())
}

/// Runs a command that calls tenantd.
pub async fn call(
    command: Command,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    match command {
        Command::Tenants(command) => tenants::run(command, connection, printer).await,
        Command::Provisioning(command) => provisioning::run(command, connection, printer).await,
        Command::ApiKeys(command) => keys::run(command, connection, printer).await,
        Command::LegalHold(command) => lifecycle::legal_hold(command, connection, printer).await,
        Command::Purge(command) => lifecycle::purge(command, connection, printer).await,
        Command::Exports(command) => lifecycle::exports(command, connection, printer).await,
        Command::Rollouts(command) => rollouts::rollouts(command, connection, printer).await,
        Command::TenantSchemas(command) => {
            rollouts::tenant_schemas(command, connection, printer).await
        }
        Command::Plans(command) => catalog::plans(command, connection, printer).await,
        Command::Events(command) => catalog::events(command, connection, printer).await,
        Command::Audit(command) => catalog::audit(command, connection, printer).await,
        Command::Context(_) | Command::Completion { .. } => Ok(()),
    }
}

/// The paging flags of a list.
#[derive(Debug, Clone, clap::Args)]
pub struct Page {
    /// Items per page (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    /// The page after the one that gave this token.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

/// `key=value` into a pair.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Tells the user, on stderr, how to get the next page.
pub fn more(next_page_token: &str) {
    if !next_page_token.is_empty() {
        eprintln!("(more: --page-token {next_page_token})");
    }
}
