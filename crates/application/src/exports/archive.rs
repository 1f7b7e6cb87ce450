//! What goes into an export archive, file by file, and its manifest.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tenantd_domain::export::ExportId;
use tenantd_domain::ports::{ArchiveFile, ArchivedFile};
use tenantd_domain::{ApiKey, Event, Tenant};

/// The manifest's path in every archive.
pub const MANIFEST: &str = "manifest.json";

/// The archive layout's version, in the manifest: a reader checks it before anything else.
pub const FORMAT_VERSION: u32 = 1;

/// The control-plane record of a tenant, with its contact email opened.
#[derive(Serialize)]
struct TenantRecord<'a> {
    tenant_id: String,
    slug: &'a str,
    display_name: &'a str,
    plan_id: &'a str,
    status: &'static str,
    status_reason: &'a str,
    contact_email: Option<&'a str>,
    labels: &'a tenantd_domain::Labels,
    config: &'a tenantd_domain::TenantConfig,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    purge_at: Option<DateTime<Utc>>,
    legal_hold: Option<LegalHoldRecord<'a>>,
    placement: Option<&'a tenantd_domain::tenant_schema::Placement>,
}

#[derive(Serialize)]
struct LegalHoldRecord<'a> {
    reason: &'a str,
    since: DateTime<Utc>,
}

/// One event, as a line of `events.jsonl`.
#[derive(Serialize)]
struct EventRecord<'a> {
    event_id: String,
    occurred_at: DateTime<Utc>,
    #[serde(rename = "type")]
    type_name: &'static str,
    payload: &'a tenantd_domain::EventKind,
}

/// An API key's metadata (never its secret, nor its hash).
#[derive(Serialize)]
struct ApiKeyRecord<'a> {
    key_id: String,
    display_name: &'a str,
    scopes: &'a [String],
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format_version: u32,
    export_id: String,
    tenant_id: String,
    slug: &'a str,
    exported_at: DateTime<Utc>,
    files: Vec<ManifestFile<'a>>,
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    path: &'a str,
    size: u64,
    sha256: String,
}

/// A table name as a file name: letters, digits, `_` and `-` as they are, every other byte
/// as `%XX` (a quoted identifier may hold `/` or be `..`).
fn file_name(table: &str) -> String {
    use std::fmt::Write as _;
    table
        .bytes()
        .fold(String::with_capacity(table.len()), |mut out, b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

fn json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// `tenant.json`: the control-plane record, its contact email opened.
pub(super) fn tenant_json(tenant: &Tenant) -> Vec<u8> {
    let hold = tenant.legal_hold().map(|h| LegalHoldRecord {
        reason: &h.reason,
        since: h.since,
    });
    json(&TenantRecord {
        tenant_id: tenant.id().to_string(),
        slug: tenant.slug().as_str(),
        display_name: tenant.display_name().as_str(),
        plan_id: tenant.plan_id().as_str(),
        status: tenant.status().as_str(),
        status_reason: tenant.status_reason(),
        contact_email: tenant
            .contact_email()
            .map(tenantd_domain::ContactEmail::expose),
        labels: tenant.labels(),
        config: tenant.config(),
        created_at: tenant.created_at(),
        updated_at: tenant.updated_at(),
        deleted_at: tenant.deleted_at(),
        purge_at: tenant.purge_at(),
        legal_hold: hold,
        placement: tenant.placement(),
    })
}

/// Lines of `events.jsonl`, one JSON object per event.
pub(super) fn event_lines(events: &[Event]) -> Vec<u8> {
    let mut lines = Vec::new();
    for event in events {
        let line = EventRecord {
            event_id: event.id.0.to_string(),
            occurred_at: event.occurred_at,
            type_name: event.kind.type_name(),
            payload: &event.kind,
        };
        if let Ok(bytes) = serde_json::to_vec(&line) {
            lines.extend(bytes);
            lines.push(b'\n');
        }
    }
    lines
}

/// `api_keys.json`: every key's metadata.
pub(super) fn api_keys_json(keys: &[ApiKey]) -> Vec<u8> {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| ApiKeyRecord {
            key_id: k.id.to_string(),
            display_name: &k.display_name,
            scopes: &k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        })
        .collect();
    json(&keys)
}

/// The archive paths of a table's DDL and rows.
pub(super) fn table_paths(table: &str) -> (String, String) {
    let name = file_name(table);
    (format!("schema/{name}.sql"), format!("schema/{name}.csv"))
}

/// The manifest of export `id` of `tenant` at `now`, from the files of the archive.
pub(super) fn manifest(
    id: ExportId,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> impl Fn(&[ArchivedFile]) -> ArchiveFile + Send + Sync + use<> {
    let (export_id, tenant_id, slug) = (
        id.to_string(),
        tenant.id().to_string(),
        tenant.slug().as_str().to_owned(),
    );
    move |files| ArchiveFile {
        path: MANIFEST.into(),
        bytes: json(&Manifest {
            format_version: FORMAT_VERSION,
            export_id: export_id.clone(),
            tenant_id: tenant_id.clone(),
            slug: &slug,
            exported_at: now,
            files: files
                .iter()
                .map(|f| ManifestFile {
                    path: &f.path,
                    size: f.size,
                    sha256: f.sha256.clone(),
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names_become_plain_file_names() {
        assert_eq!(super::file_name("audit_logs"), "audit_logs");
        assert_eq!(super::file_name(".."), "%2E%2E");
        assert_eq!(super::file_name("a/../b"), "a%2F%2E%2E%2Fb");
        assert_eq!(
            super::file_name("Ünïcode table"),
            "%C3%9Cn%C3%AFcode%20table"
        );
    }
}
