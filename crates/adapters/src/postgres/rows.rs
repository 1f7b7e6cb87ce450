//! Rows of the tenants and tenant_events tables and their conversion to domain values.
//! A [`TenantRow`] is also the JSON snapshot kept as an idempotent create's response.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use tenantd_domain::{
    ContactEmail, DisplayName, Event, EventId, EventKind, Labels, PlanId, RepoError, Slug, Tenant,
    TenantConfig, TenantId, TenantParts, TenantStatus,
};
use uuid::Uuid;

/// Columns of `tenants` in [`TenantRow`] order.
pub(crate) const TENANT_COLUMNS: &str = "tenant_id, slug, display_name, plan_id, status, \
     status_reason, status_before_delete, contact_email, labels, config, created_at, \
     updated_at, deleted_at, purge_at, version";

/// One `tenants` row.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(crate) struct TenantRow {
    pub tenant_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub plan_id: String,
    pub status: String,
    pub status_reason: String,
    pub status_before_delete: Option<String>,
    pub contact_email: String,
    pub labels: Json<BTreeMap<String, String>>,
    pub config: Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl From<&Tenant> for TenantRow {
    fn from(tenant: &Tenant) -> Self {
        let p = tenant.parts();
        Self {
            tenant_id: p.id.as_uuid(),
            slug: p.slug.as_str().to_owned(),
            display_name: p.display_name.as_str().to_owned(),
            plan_id: p.plan_id.as_str().to_owned(),
            status: p.status.as_str().to_owned(),
            status_reason: p.status_reason.clone(),
            status_before_delete: p.status_before_delete.map(|s| s.as_str().to_owned()),
            contact_email: p.contact_email.expose().to_owned(),
            labels: Json(p.labels.as_map().clone()),
            config: Json(p.config.as_map().clone()),
            created_at: p.created_at,
            updated_at: p.updated_at,
            deleted_at: p.deleted_at,
            purge_at: p.purge_at,
            version: i64::try_from(p.version).unwrap_or(i64::MAX),
        }
    }
}

fn corrupt(what: &str) -> RepoError {
    RepoError::Internal(format!("stored tenant has an invalid {what}"))
}

fn status(text: &str) -> Result<TenantStatus, RepoError> {
    TenantStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| corrupt("status"))
}

impl TryFrom<TenantRow> for Tenant {
    type Error = RepoError;

    fn try_from(row: TenantRow) -> Result<Self, RepoError> {
        Ok(Tenant::from_parts(TenantParts {
            id: TenantId::from_uuid(row.tenant_id).map_err(|_| corrupt("id"))?,
            slug: Slug::from_stored(row.slug),
            display_name: DisplayName::parse(&row.display_name)
                .map_err(|_| corrupt("display name"))?,
            plan_id: PlanId::new(row.plan_id),
            status: status(&row.status)?,
            status_reason: row.status_reason,
            contact_email: ContactEmail::parse(&row.contact_email)
                .map_err(|_| corrupt("contact email"))?,
            labels: Labels::parse(row.labels.0).map_err(|_| corrupt("labels"))?,
            config: TenantConfig::parse(row.config.0).map_err(|_| corrupt("config"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            purge_at: row.purge_at,
            status_before_delete: row
                .status_before_delete
                .as_deref()
                .map(status)
                .transpose()?,
            version: u64::try_from(row.version).map_err(|_| corrupt("version"))?,
        }))
    }
}

/// One `tenant_events` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub payload: Json<EventKind>,
    pub occurred_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for Event {
    type Error = RepoError;

    fn try_from(row: EventRow) -> Result<Self, RepoError> {
        Ok(Event {
            id: EventId(row.event_id),
            tenant_id: TenantId::from_uuid(row.tenant_id)
                .map_err(|_| RepoError::Internal("stored event has an invalid tenant id".into()))?,
            occurred_at: row.occurred_at,
            kind: row.payload.0,
        })
    }
}
