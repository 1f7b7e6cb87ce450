//! The inputs of the tenant use cases, as plain data from the transport, and their
//! validation into domain values. Violations are collected (not first-error) and named by
//! their request path, e.g. `tenant.slug`.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest as _, Sha256};
use tenantd_domain::{
    ContactEmail, DisplayName, Error, FieldViolation, Labels, NewTenant, PlanId, Slug,
    TenantConfig, TenantStatus,
};

/// Longest accepted idempotency key.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The writable fields of a tenant as sent by a caller, unvalidated.
#[derive(Clone, Default, PartialEq)]
pub struct TenantFields {
    /// Slug (create only).
    pub slug: String,
    /// Display name.
    pub display_name: String,
    /// Plan id.
    pub plan_id: String,
    /// Contact email.
    pub contact_email: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Configuration object.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for TenantFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantFields")
            .field("slug", &self.slug)
            .field("display_name", &self.display_name)
            .field("plan_id", &self.plan_id)
            .field("contact_email", &"<redacted>")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// CreateTenant input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateTenant {
    /// The tenant's fields.
    pub tenant: TenantFields,
    /// Optional idempotency key.
    pub request_id: String,
}

/// ListTenants input.
#[derive(Clone, Default, PartialEq)]
pub struct ListTenants {
    /// Page size (0 = default).
    pub page_size: i32,
    /// Token from the previous page.
    pub page_token: String,
    /// Only this status.
    pub status: Option<TenantStatus>,
    /// Only this plan (empty = any).
    pub plan_id: String,
    /// Only tenants with all these labels.
    pub labels: BTreeMap<String, String>,
    /// Only slugs starting with this (empty = any).
    pub slug_prefix: String,
    /// Only this contact email (empty = any).
    pub contact_email: String,
    /// Include soft-deleted tenants.
    pub show_deleted: bool,
}

impl fmt::Debug for ListTenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListTenants")
            .field("page_size", &self.page_size)
            .field("status", &self.status)
            .field("plan_id", &self.plan_id)
            .field("labels", &self.labels)
            .field("slug_prefix", &self.slug_prefix)
            .field("show_deleted", &self.show_deleted)
            .finish_non_exhaustive()
    }
}

/// UpdateTenant input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateTenant {
    /// The tenant to change.
    pub tenant_id: String,
    /// Etag of the version the change is based on (empty = no check).
    pub etag: String,
    /// New values; only the masked ones are read.
    pub tenant: TenantFields,
    /// Field mask paths; empty = every populated mutable field, `*` = all mutable fields.
    pub update_mask: Vec<String>,
}

/// Validates every field of a new tenant.
pub(crate) fn validate_new(fields: &TenantFields) -> Result<NewTenant, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let slug = Slug::parse(&fields.slug)
        .map_err(|v| violations.push(v))
        .ok();
    let display_name = DisplayName::parse(&fields.display_name)
        .map_err(|v| violations.push(v))
        .ok();
    let plan_id = plan_id(&fields.plan_id)
        .map_err(|v| violations.push(v))
        .ok();
    let contact_email = ContactEmail::parse(&fields.contact_email)
        .map_err(|v| violations.push(v))
        .ok();
    let labels = Labels::parse(fields.labels.clone())
        .map_err(|v| violations.extend(v))
        .ok();
    let config = TenantConfig::parse(fields.config.clone())
        .map_err(|v| violations.push(v))
        .ok();
    match (slug, display_name, plan_id, contact_email, labels, config) {
        (
            Some(slug),
            Some(display_name),
            Some(plan_id),
            Some(contact_email),
            Some(labels),
            Some(config),
        ) if violations.is_empty() => Ok(NewTenant {
            slug,
            display_name,
            plan_id,
            contact_email,
            labels,
            config,
        }),
        _ => Err(violations),
    }
}

pub(crate) fn plan_id(text: &str) -> Result<PlanId, FieldViolation> {
    if text.is_empty() {
        Err(FieldViolation::new("plan_id", "is required"))
    } else if text.len() > 63 || text.chars().any(char::is_control) {
        Err(FieldViolation::new("plan_id", "is not a known plan"))
    } else {
        Ok(PlanId::new(text))
    }
}

/// Checks a free-text filter value: at most 256 characters, no control characters.
pub(crate) fn filter_text(field: &str, text: &str) -> Result<(), FieldViolation> {
    if text.chars().count() > 256 || text.chars().any(char::is_control) {
        Err(FieldViolation::new(
            field,
            "must be at most 256 characters without control characters",
        ))
    } else {
        Ok(())
    }
}

/// Validates an idempotency key.
pub(crate) fn validate_request_id(request_id: &str) -> Result<(), Error> {
    if request_id.len() > MAX_REQUEST_ID_LEN || request_id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "request_id",
            "must be at most 128 characters without control characters",
        ));
    }
    Ok(())
}

/// A stable hash of everything a create request asks for, so a retry is told apart from a
/// reuse of the same request id with a different body.
pub(crate) fn fingerprint(new: &NewTenant) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(new.slug.as_str().as_bytes());
    field(new.display_name.as_str().as_bytes());
    field(new.plan_id.as_str().as_bytes());
    field(new.contact_email.expose().as_bytes());
    field(&serde_json::to_vec(&new.labels).unwrap_or_default());
    field(&serde_json::to_vec(&new.config).unwrap_or_default());
    crate::digest::hex(&hasher.finalize())
}

/// Prefixes every violation with the request's message field name.
pub(crate) fn under(parent: &str, violations: Vec<FieldViolation>) -> Error {
    Error::invalid_fields(violations.into_iter().map(|v| v.under(parent)).collect())
}
