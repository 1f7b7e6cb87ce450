//! In-memory adapters: the embedded default (data lives as long as the process) and the
//! doubles other tests use. [`MemoryStore`] (`store.rs`) keeps one state behind one mutex,
//! so a change, its events and its idempotency record are applied atomically, like a
//! database transaction; each port it implements has a file of its own.

mod api_keys;
mod audit;
mod data_keys;
mod events;
mod exports;
mod initial_keys;
mod leases;
mod outbox;
mod plans;
mod providers;
mod provisioning;
mod purges;
mod rate_limit;
mod retention;
mod rollouts;
mod store;
mod tenant_schemas;
mod tenants;
#[cfg(test)]
mod tests;

pub use plans::MemoryPlanRepository;
pub use providers::{MemoryBilling, MemoryDns, MemoryTenantDatabases};
pub use rate_limit::LocalRateLimiter;
pub use store::MemoryStore;
