//! The core of tenantd: tenants, plans and lifecycle events as entities and value objects,
//! the domain errors, and the port traits every adapter implements.
//!
//! Nothing here performs I/O or names a technology: no tonic, sqlx, redis or rdkafka.
//! Invariants (slug rules, allowed status transitions, label syntax) are enforced by the
//! types themselves, so an invalid tenant cannot be built.

pub mod api_key;
pub mod audit;
pub mod error;
pub mod event;
pub mod export;
pub mod plan;
pub mod ports;
pub mod principal;
pub mod provisioning;
pub mod purge;
pub mod reason;
pub mod tenant;
pub mod tenant_schema;

pub use api_key::{ApiKey, ApiKeyId, ApiKeySecret};
pub use audit::{AuditQuery, AuditRecord};
pub use error::{Error, FieldViolation, RepoError};
pub use event::{Event, EventId, EventKind, Subject};
pub use plan::{Plan, PlanId, PlanQuotas};
pub use principal::Principal;
pub use reason::Reason;
pub use tenant::{
    ContactEmail, DisplayName, Labels, LegalHold, NewTenant, Slug, Tenant, TenantChange,
    TenantConfig, TenantId, TenantParts, TenantStatus,
};
