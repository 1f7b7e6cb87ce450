//! The gRPC driving adapter: thin handlers per service (proto <-> use case), the
//! conversions, and the single domain-error -> Status mapping.

pub mod convert;
mod events;
mod pending;
mod plans;
pub mod status;
mod tenants;

pub use events::EventApi;
pub use pending::{PendingApiKeyApi, PendingProvisioningApi};
pub use plans::PlanApi;
pub use tenants::TenantApi;
