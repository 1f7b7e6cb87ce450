//! Driven adapters of tenantd, one module per technology. Each implements port traits of
//! `tenantd-domain`; the server's wiring picks which.
//!
//! - [`cached_plans`]: the plan catalogue kept in process for a bounded time.
//! - [`crypto`]: the AES-256-GCM key ring for contact emails and their blind index.
//! - [`memory`]: the embedded default (no infrastructure) and test doubles.
//! - [`postgres`]: the production store (sqlx), with migrations and the outbox.
//! - [`redis`]: the read-through cache of tenants and API keys, and the shared rate limiter.
//! - [`kafka`]: the event publisher the outbox relay drives (rdkafka).
//! - [`system`]: the real clock and UUIDv7 generator.
//! - [`tenant_migrations`]: the tenant schema's migrations, from a directory or built in.
//! - `contract` (feature `test-support`): the port contract suites every implementation
//!   of a repository port must pass.

pub mod archives;
pub mod cached_plans;
#[cfg(any(test, feature = "test-support"))]
pub mod contract;
pub mod crypto;
pub mod kafka;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod system;
pub mod tenant_migrations;
