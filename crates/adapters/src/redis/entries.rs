//! What the cache stores: an entry type of its own per cached value (never another
//! adapter's row), JSON with a format version, byte fields as base64 strings. A tenant's
//! contact email stays the AES-GCM envelope bound to the tenant; an API key is its secret's
//! SHA-256, never the secret. An entry that does not decode (an older format, a key gone
//! from the ring) is treated as a miss.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantd_domain::ports::EmailCipher;
use tenantd_domain::provisioning::{RunId, RunState, RunSummary, StepKind};
use tenantd_domain::tenant_schema::Placement;
use tenantd_domain::{
    ApiKey, ApiKeyId, DisplayName, Labels, LegalHold, PlanId, Slug, Tenant, TenantConfig, TenantId,
    TenantParts, TenantStatus,
};
use uuid::Uuid;

/// The entry format; an entry of another version is a miss. 3: tenants carry their legal
/// hold (an entry of a replica that does not know holds must not read as "not held", or a
/// change made from it would clear the hold).
const FORMAT: u8 = 3;

/// Bytes as a base64 string in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD_NO_PAD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        STANDARD_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A cached tenant.
#[derive(Debug, Serialize, Deserialize)]
struct TenantEntry {
    v: u8,
    id: Uuid,
    slug: String,
    name: String,
    plan: String,
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status_reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_before_delete: Option<String>,
    /// The sealed contact email.
    #[serde(with = "base64_bytes")]
    email: Vec<u8>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    config: serde_json::Map<String, serde_json::Value>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purge: Option<DateTime<Utc>>,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    placement: Option<Placement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<RunEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold: Option<HoldEntry>,
}

/// A cached tenant's legal hold.
#[derive(Debug, Serialize, Deserialize)]
struct HoldEntry {
    reason: String,
    since: DateTime<Utc>,
}

/// A cached tenant's provisioning summary.
#[derive(Debug, Serialize, Deserialize)]
struct RunEntry {
    id: Uuid,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<String>,
    done: u32,
    total: u32,
}

/// A cached API key.
#[derive(Debug, Serialize, Deserialize)]
struct KeyEntry {
    v: u8,
    id: Uuid,
    tenant: Uuid,
    name: String,
    scopes: Vec<String>,
    /// The SHA-256 of the secret.
    #[serde(with = "base64_bytes")]
    hash: Vec<u8>,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used: Option<DateTime<Utc>>,
}

/// The entry of `tenant`, its contact email sealed by `cipher`; `None` for a tombstone
/// (never cached: it is rarely read, and has no address to seal).
pub(crate) fn encode_tenant(tenant: &Tenant, cipher: &dyn EmailCipher) -> Option<Vec<u8>> {
    let p = tenant.parts();
    let email = p.contact_email.as_ref()?;
    let entry = TenantEntry {
        v: FORMAT,
        id: p.id.as_uuid(),
        slug: p.slug.as_str().to_owned(),
        name: p.display_name.as_str().to_owned(),
        plan: p.plan_id.as_str().to_owned(),
        status: p.status.as_str().to_owned(),
        status_reason: p.status_reason.clone(),
        status_before_delete: p.status_before_delete.map(|s| s.as_str().to_owned()),
        email: cipher.seal(p.id, email).envelope,
        labels: p.labels.as_map().clone(),
        config: p.config.as_map().clone(),
        created: p.created_at,
        updated: p.updated_at,
        deleted: p.deleted_at,
        purge: p.purge_at,
        version: p.version,
        placement: p.placement.clone(),
        run: p.provisioning.as_ref().map(|r| RunEntry {
            id: r.run_id.0,
            state: r.state.as_str().to_owned(),
            step: r.current_step.map(|k| k.as_str().to_owned()),
            done: r.completed_steps,
            total: r.total_steps,
        }),
        hold: p.legal_hold.as_ref().map(|h| HoldEntry {
            reason: h.reason.clone(),
            since: h.since,
        }),
    };
    serde_json::to_vec(&entry).ok()
}

/// The tenant of an entry cached under `id`, its contact email opened by `cipher`; `None`
/// when the entry does not decode or belongs to another tenant.
pub(crate) fn decode_tenant(
    bytes: &[u8],
    id: TenantId,
    cipher: &dyn EmailCipher,
) -> Option<Tenant> {
    let e: TenantEntry = serde_json::from_slice(bytes).ok()?;
    if e.v != FORMAT || e.id != id.as_uuid() {
        return None;
    }
    let status = |text: &str| TenantStatus::ALL.into_iter().find(|s| s.as_str() == text);
    let provisioning = match e.run {
        Some(run) => Some(RunSummary {
            run_id: RunId(run.id),
            state: RunState::parse(&run.state)?,
            current_step: match run.step {
                Some(step) => Some(StepKind::parse(&step)?),
                None => None,
            },
            completed_steps: run.done,
            total_steps: run.total,
        }),
        None => None,
    };
    Some(Tenant::from_parts(TenantParts {
        id,
        slug: Slug::from_stored(e.slug),
        display_name: DisplayName::parse(&e.name).ok()?,
        plan_id: PlanId::new(e.plan),
        status: status(&e.status)?,
        status_reason: e.status_reason,
        contact_email: Some(cipher.open(id, &e.email).ok()?),
        labels: Labels::parse(e.labels).ok()?,
        config: TenantConfig::parse(e.config).ok()?,
        created_at: e.created,
        updated_at: e.updated,
        deleted_at: e.deleted,
        purge_at: e.purge,
        purged_at: None,
        status_before_delete: match e.status_before_delete {
            Some(s) => Some(status(&s)?),
            None => None,
        },
        version: e.version,
        provisioning,
        placement: e.placement,
        legal_hold: e.hold.map(|h| LegalHold {
            reason: h.reason,
            since: h.since,
        }),
    }))
}

/// The entry of `key`.
pub(crate) fn encode_key(key: &ApiKey) -> Option<Vec<u8>> {
    serde_json::to_vec(&KeyEntry {
        v: FORMAT,
        id: key.id.0,
        tenant: key.tenant_id.as_uuid(),
        name: key.display_name.clone(),
        scopes: key.scopes.clone(),
        hash: key.secret_hash.to_vec(),
        created: key.created_at,
        expires: key.expires_at,
        revoked: key.revoked_at,
        used: key.last_used_at,
    })
    .ok()
}

/// The key of an entry cached under `id`; `None` when it does not decode or is another's.
pub(crate) fn decode_key(bytes: &[u8], id: ApiKeyId) -> Option<ApiKey> {
    let e: KeyEntry = serde_json::from_slice(bytes).ok()?;
    if e.v != FORMAT || e.id != id.0 {
        return None;
    }
    Some(ApiKey {
        id,
        tenant_id: TenantId::from_uuid(e.tenant).ok()?,
        display_name: e.name,
        scopes: e.scopes,
        secret_hash: e.hash.try_into().ok()?,
        created_at: e.created,
        expires_at: e.expires,
        revoked_at: e.revoked,
        last_used_at: e.used,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::SubsecRound as _;
    use tenantd_domain::provisioning::{RunId, RunState, RunSummary, StepKind};
    use tenantd_domain::{ApiKey, ApiKeyId, TenantId};
    use uuid::Uuid;

    use super::*;
    use crate::contract::fixtures::tenant;
    use crate::crypto::KeyRing;

    fn test_key_ring() -> KeyRing {
        KeyRing::generate("test")
    }

    #[test]
    fn a_tenant_entry_round_trips_with_the_email_sealed_and_bytes_as_text() {
        let ring = test_key_ring();
        let tenant =
            tenant("cache-entry", "pro", &[("env", "prod")]).with_provisioning(Some(RunSummary {
                run_id: RunId(Uuid::now_v7()),
                state: RunState::Running,
                current_step: Some(StepKind::Dns),
                completed_steps: 1,
                total_steps: 5,
            }));
        let bytes = encode_tenant(&tenant, &ring).expect("encodes");
        let text = std::str::from_utf8(&bytes).expect("JSON text");
        assert!(!text.to_lowercase().contains("ops@cache-entry"), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert!(json["email"].is_string(), "bytes are base64 text: {json}");
        assert_eq!(
            decode_tenant(&bytes, tenant.id(), &ring),
            Some(tenant.clone())
        );
        let other = TenantId::from_uuid(Uuid::now_v7()).expect("v7");
        assert_eq!(
            decode_tenant(&bytes, other, &ring),
            None,
            "another id's entry"
        );
        assert_eq!(
            decode_tenant(&bytes, tenant.id(), &test_key_ring()),
            None,
            "a key not in the ring"
        );
    }

    #[test]
    fn a_key_entry_round_trips_and_never_answers_for_another_key() {
        let key = ApiKey {
            id: ApiKeyId(Uuid::now_v7()),
            tenant_id: TenantId::from_uuid(Uuid::now_v7()).expect("v7"),
            display_name: "ci".into(),
            scopes: vec!["tenant.read".into()],
            secret_hash: [7; 32],
            created_at: chrono::Utc::now().trunc_subsecs(6),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let bytes = encode_key(&key).expect("encodes");
        let json: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes).expect("JSON");
        assert!(json["hash"].is_string());
        assert_eq!(decode_key(&bytes, key.id), Some(key.clone()));
        assert_eq!(decode_key(&bytes, ApiKeyId(Uuid::now_v7())), None);
        assert_eq!(decode_key(b"{\"v\":0}", key.id), None);
    }
}
