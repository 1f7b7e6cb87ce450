//! The gRPC driving adapter: thin handlers per service (proto <-> use case), the
//! conversions, and the single domain-error -> Status mapping.

mod api_keys;
pub mod convert;
#[cfg(test)]
mod event_properties;
mod events;
mod methods;
mod migrations;
mod plans;
mod provisioning;
pub mod status;
mod tenants;

pub use api_keys::ApiKeyApi;
pub use events::EventApi;
pub use methods::unary_methods;
pub use migrations::MigrationApi;
pub use plans::PlanApi;
pub use provisioning::ProvisioningApi;
pub use tenants::TenantApi;

use tenantd_application::{Operation, authorize};
use tonic::{Request, Status};

use tenantd_domain::TenantId;

use crate::call::CallContext;
use crate::identity::Caller;

/// Authorizes the caller of `request` for `operation` on `tenant` (the tenant id as sent).
/// Every handler calls this first, before reading or validating anything else.
pub(crate) fn allow<T>(
    request: &Request<T>,
    operation: Operation,
    tenant: Option<&str>,
) -> Result<(), Status> {
    let principal = request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.principal.as_ref());
    if let (Some(target), Some(tenant)) = (
        request.extensions().get::<CallContext>(),
        tenant.and_then(|t| t.parse::<TenantId>().ok()),
    ) {
        target.set_tenant(tenant);
    }
    authorize(principal, operation, tenant).map_err(status::to_status)
}

/// The SPIFFE path of the caller's principal (`admin`, `service/billing`), for what a
/// request records as its requester; empty without one (`allow` refused those already).
pub(crate) fn principal_path<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.principal.as_ref())
        .map(tenantd_domain::Principal::path)
        .unwrap_or_default()
}
