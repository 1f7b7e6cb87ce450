//! In-memory adapters: the embedded default (data lives as long as the process) and the
//! doubles other tests use. One mutex guards the whole state, so a change, its events and
//! its idempotency record are applied atomically, like a database transaction.

mod plans;
mod providers;
mod rate_limit;
mod store;

pub use plans::MemoryPlanRepository;
pub use providers::{MemoryBilling, MemoryDns, MemoryTenantDatabases};
pub use rate_limit::LocalRateLimiter;
pub use store::MemoryStore;
