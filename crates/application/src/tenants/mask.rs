//! UpdateTenant's field mask (AIP-134): which paths exist, which may change, and the
//! validated change they describe.

use tenantd_domain::{
    ContactEmail, DisplayName, Error, FieldViolation, Labels, Reason, TenantChange, TenantConfig,
};

use super::commands::{TenantFields, plan_id};

/// Paths a caller may update.
pub const MUTABLE_PATHS: [&str; 5] = [
    "display_name",
    "plan_id",
    "contact_email",
    "labels",
    "config",
];

/// Paths that exist on Tenant but are immutable or output only.
const READ_ONLY_PATHS: [&str; 10] = [
    "tenant_id",
    "slug",
    "status",
    "status_reason",
    "provisioning",
    "create_time",
    "update_time",
    "delete_time",
    "purge_time",
    "etag",
];

/// Resolves `mask` against `fields` into the paths to change, sorted and de-duplicated.
///
/// Empty mask: every mutable field that is populated in `fields`. `*`: all mutable fields.
///
/// # Errors
/// [`Error::InvalidArgument`] on `update_mask` for unknown or read-only paths or an empty
/// resolution.
pub(crate) fn resolve(mask: &[String], fields: &TenantFields) -> Result<Vec<&'static str>, Error> {
    let mut violations = Vec::new();
    let mut paths: Vec<&'static str> = if mask.is_empty() {
        MUTABLE_PATHS
            .into_iter()
            .filter(|path| match *path {
                "display_name" => !fields.display_name.is_empty(),
                "plan_id" => !fields.plan_id.is_empty(),
                "contact_email" => !fields.contact_email.is_empty(),
                "labels" => !fields.labels.is_empty(),
                _ => !fields.config.is_empty(),
            })
            .collect()
    } else if mask.iter().any(|p| p == "*") {
        if mask.len() > 1 {
            violations.push(FieldViolation::new(
                "update_mask",
                "'*' cannot be combined with other paths",
            ));
        }
        MUTABLE_PATHS.to_vec()
    } else {
        let mut paths = Vec::new();
        for path in mask {
            if let Some(known) = MUTABLE_PATHS.iter().find(|m| **m == path) {
                paths.push(*known);
            } else if READ_ONLY_PATHS.contains(&path.as_str()) {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!("path {path:?} is immutable or output only"),
                ));
            } else {
                violations.push(FieldViolation::new(
                    "update_mask",
                    format!(
                        "unknown path {:.64?}; updatable paths are {}",
                        path,
                        MUTABLE_PATHS.join(", ")
                    ),
                ));
            }
        }
        paths
    };
    if !violations.is_empty() {
        return Err(Error::InvalidArgument {
            reason: Reason::UpdateMaskInvalid,
            violations,
        });
    }
    if paths.is_empty() {
        return Err(Error::invalid_because(
            Reason::UpdateMaskInvalid,
            "update_mask",
            "names no field to update and the tenant sets none",
        ));
    }
    paths.sort_unstable();
    paths.dedup();
    Ok(paths)
}

/// Validates the values of the masked `paths` into a change.
///
/// # Errors
/// [`Error::InvalidArgument`] with one violation per bad value, named `tenant.<field>`.
pub(crate) fn change(paths: &[&str], fields: &TenantFields) -> Result<TenantChange, Error> {
    let mut violations = Vec::new();
    let mut change = TenantChange::default();
    for path in paths {
        match *path {
            "display_name" => match DisplayName::parse(&fields.display_name) {
                Ok(v) => change.display_name = Some(v),
                Err(v) => violations.push(v),
            },
            "plan_id" => match plan_id(&fields.plan_id) {
                Ok(v) => change.plan_id = Some(v),
                Err(v) => violations.push(v),
            },
            "contact_email" => match ContactEmail::parse(&fields.contact_email) {
                Ok(v) => change.contact_email = Some(v),
                Err(v) => violations.push(v),
            },
            "labels" => match Labels::parse(fields.labels.clone()) {
                Ok(v) => change.labels = Some(v),
                Err(v) => violations.extend(v),
            },
            _ => match TenantConfig::parse(fields.config.clone()) {
                Ok(v) => change.config = Some(v),
                Err(v) => violations.push(v),
            },
        }
    }
    if violations.is_empty() {
        Ok(change)
    } else {
        Err(super::commands::under("tenant", violations))
    }
}
