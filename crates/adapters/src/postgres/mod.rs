//! PostgreSQL adapters (sqlx): the production store behind every repository port.
//!
//! **Unit of work.** The repository methods that change a tenant take the events that
//! describe the change (and, on create, the idempotency record) and write everything in one
//! transaction, so a change, its outbox rows and its idempotency record commit together or
//! not at all. On create the idempotency record is inserted *first*: a concurrent create
//! with the same request id then waits on that row and is answered from it, instead of
//! racing for the slug.
//!
//! **Schema.** Table names are unqualified; the schema is the connection's `search_path`
//! (`public` unless the URL says otherwise, e.g. `?options[search_path]=tenantd`).
//! Migrations in `migrations/` are embedded and applied under sqlx's advisory lock, so
//! replicas starting together apply each one once.
//!
//! **Failures.** Driver errors are translated here ([`errors`]): a taken slug becomes
//! [`RepoError::SlugTaken`](tenantd_domain::RepoError::SlugTaken), a lost connection, pool
//! exhaustion or statement timeout [`RepoError::Unavailable`](tenantd_domain::RepoError::Unavailable).

pub(crate) mod api_keys;
mod audit;
mod connect;
mod errors;
mod outbox;
mod plans;
mod providers;
mod provisioning;
pub(crate) mod rows;
mod tenants;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use connect::{ConnectError, MIGRATOR, PgSettings, connect, migrate};
pub use plans::PgPlanRepository;
pub use providers::{
    BadSchemaPrefix, DEFAULT_SCHEMA_PREFIX, PgBilling, PgDns, PgTenantDatabases, TENANT_MIGRATIONS,
    is_valid_schema_prefix,
};
pub use tenants::PgStore;
