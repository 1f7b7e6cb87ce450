//! tenantd use cases. One service struct per area, holding its ports as `Arc<dyn Port>`:
//! validation, idempotency, pagination and lifecycle decisions live here, never in the
//! gRPC handlers nor in the adapters.

pub mod api_keys;
pub mod audit;
pub mod authorization;
mod digest;
pub mod events;
pub mod exports;
mod lease;
pub mod outbox;
pub mod pagination;
pub mod plans;
pub mod provisioning;
pub mod purge;
pub mod rate_limits;
pub mod retention;
pub mod tenant_schemas;
pub mod tenants;
#[cfg(test)]
mod testing;
mod watching;

pub use api_keys::{ApiKeyService, CreateApiKey, Verification};
pub use audit::{AuditService, ListAuditRecords};
pub use authorization::{Operation, authorize};
pub use events::EventService;
pub use outbox::{OutboxRelay, RelayObserver, RelaySettings, Relayed};
pub use pagination::{Page, PageRequest};
pub use plans::PlanService;
pub use provisioning::{
    Engine, INITIAL_KEY_PURPOSE, Providers, ProvisioningObserver, ProvisioningService,
    ProvisioningSettings, Signals, StepPorts,
};
pub use purge::{PurgeEngine, PurgeObserver, PurgeService, PurgeSettings, PurgeTargets, Swept};
pub use rate_limits::{RateLimitService, RateLimitSettings};
pub use retention::{RetentionObserver, RetentionService, RetentionSettings, Trimmed};
pub use tenant_schemas::{
    MigrationObserver, MigrationService, PlacementPolicy, RolloutEngine, RolloutSettings,
    RolloutSignals, RolloutView, SchemaStatus, StartRollout,
};
pub use tenants::{
    CreateTenant, ListTenants, TenantFields, TenantService, TenantSettings, UpdateTenant,
};
