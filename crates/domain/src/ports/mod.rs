//! Port traits: what the use cases need from the outside world, one file per area.
//! Adapters implement them (in memory, PostgreSQL, Redis, Kafka); use-case tests mock them
//! (`mockall`, behind the `mocks` feature for other crates).
//!
//! Unit of work: a change to a tenant, the events describing it and (on create) the
//! idempotency record commit together or not at all, because the repository methods that
//! change a tenant take those along.
//!
//! | file | ports |
//! | --- | --- |
//! | [`tenants`] | [`TenantRepository`], [`PlanRepository`] |
//! | [`provisioning`] | [`ProvisioningRepository`] |
//! | [`providers`] | [`TenantDatabases`], [`DnsProvider`], [`BillingProvider`] |
//! | [`api_keys`] | [`ApiKeyRepository`], [`InitialKeyStore`] |
//! | [`crypto`] | [`EmailCipher`], [`SecretSealer`], [`DataKeyCipher`], [`DataKeyRepository`] |
//! | [`exports`] | [`ExportRepository`], [`ExportArchives`], [`TenantSchemaDumps`] |
//! | [`outbox`] | [`EventLog`], [`Outbox`], [`EventPublisher`] |
//! | [`audit`] | [`AuditLog`] |
//! | [`purge`] | [`PurgeRepository`] |
//! | [`retention`] | [`Retention`] |
//! | [`system`] | [`Clock`], [`IdGenerator`], [`SecretGenerator`], [`RateLimiter`] |
//! | [`tenant_schemas`] | [`TenantSchemaRepository`], [`RolloutRepository`] |

pub mod api_keys;
pub mod audit;
pub mod crypto;
pub mod exports;
pub mod outbox;
pub mod providers;
pub mod provisioning;
pub mod purge;
pub mod retention;
pub mod system;
pub mod tenant_schemas;
pub mod tenants;

pub use api_keys::*;
pub use audit::*;
pub use crypto::*;
pub use exports::*;
pub use outbox::*;
pub use providers::*;
pub use provisioning::*;
pub use purge::*;
pub use retention::*;
pub use system::*;
pub use tenant_schemas::*;
pub use tenants::*;
