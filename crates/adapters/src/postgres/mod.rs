//! PostgreSQL adapters (sqlx): the production store behind every repository port.
//!
//! **Layout.** [`PgStore`] (`store.rs`) holds the pool and the contact-email cipher and
//! offers `in_tx`, the transaction helper (the outbox's batch, which holds its transaction
//! while it is published, aside); each port it implements has a file of its
//! own (`tenants.rs`, `provisioning.rs`, `api_keys.rs`, `initial_keys.rs`, `events.rs`,
//! `outbox.rs`, `audit.rs`, `tenant_schemas.rs`, `rollouts.rs`); statements on a table that several ports write live in
//! `tables/` (no port file imports another); the provisioning providers are in
//! [`providers`]; re-sealing with a new key is [`PgRewrap`] (`rewrap.rs`).
//!
//! **Unit of work.** The repository methods that change a tenant take the events that
//! describe the change (and, on create, the idempotency record) and write everything in one
//! transaction, so a change, its outbox rows and its idempotency record commit together or
//! not at all.
//!
//! **Schema.** Table names are unqualified; the schema is the connection's `search_path`
//! (`public` unless the URL says otherwise, e.g. `?options[search_path]=tenantd`).
//! Migrations in `migrations/` are embedded and applied under sqlx's advisory lock, so
//! replicas starting together apply each one once.
//!
//! **Failures.** Driver errors are translated in one place (`errors.rs`): a taken slug
//! becomes [`RepoError::SlugTaken`](tenantd_domain::RepoError::SlugTaken), a lost
//! connection, pool exhaustion or statement timeout
//! [`RepoError::Unavailable`](tenantd_domain::RepoError::Unavailable).

mod api_keys;
mod audit;
mod connect;
mod data_keys;
mod errors;
mod events;
mod exports;
mod held;
mod initial_keys;
mod leases;
mod outbox;
mod plans;
pub mod providers;
mod provisioning;
mod purges;
mod retention;
mod rewrap;
mod rollouts;
mod store;
mod tables;
mod tenant_schemas;
mod tenants;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use connect::{ConnectError, MIGRATOR, PgSettings, connect, migrate};
pub use plans::PgPlanRepository;
pub use providers::{BadSchemaPrefix, PgBilling, PgDns, PgTenantDatabases, is_valid_schema_prefix};
pub use rewrap::{PgRewrap, Rewrapped};
pub use sqlx::PgPool;
pub use store::PgStore;
pub use tenant_schemas::RegistryError;
