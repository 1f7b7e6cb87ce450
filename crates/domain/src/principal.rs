//! Who is calling: the identity a verified client certificate carries as a SPIFFE id
//! (`spiffe://<trust domain>/admin`, `/service/<name>`, `/tenant/<tenant id>`). Nothing
//! else — no header, no metadata — ever makes a principal.

use std::fmt;

use crate::TenantId;

/// A caller with a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An operator: may do everything.
    Admin,
    /// Another service of the platform: verifies API keys and reads.
    Service(String),
    /// A tenant: may read itself and manage its own API keys.
    Tenant(TenantId),
}

impl Principal {
    /// The principal of a SPIFFE id in `trust_domain`, or `None` when the id names another
    /// trust domain, no known role, or is malformed.
    pub fn from_spiffe_id(uri: &str, trust_domain: &str) -> Option<Self> {
        let path = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(trust_domain)?
            .strip_prefix('/')?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["admin"] => Some(Self::Admin),
            ["service", name] if valid_service_name(name) => {
                Some(Self::Service((*name).to_owned()))
            }
            ["tenant", id] => id.parse().ok().map(Self::Tenant),
            _ => None,
        }
    }

    /// The principal's role: `admin`, `service` or `tenant` (a bounded label value).
    pub const fn role(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Service(_) => "service",
            Self::Tenant(_) => "tenant",
        }
    }

    /// The SPIFFE id path of this principal (`admin`, `service/billing`, `tenant/<id>`).
    pub fn path(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::Service(name) => format!("service/{name}"),
            Self::Tenant(id) => format!("tenant/{id}"),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

fn valid_service_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "tenantd.local";

    #[test]
    fn parses_the_three_roles() {
        assert_eq!(
            Principal::from_spiffe_id("spiffe://tenantd.local/admin", TD),
            Some(Principal::Admin)
        );
        assert_eq!(
            Principal::from_spiffe_id("spiffe://tenantd.local/service/billing", TD),
            Some(Principal::Service("billing".into()))
        );
        let id = TenantId::from_uuid(uuid::Uuid::now_v7()).unwrap();
        assert_eq!(
            Principal::from_spiffe_id(&format!("spiffe://tenantd.local/tenant/{id}"), TD),
            Some(Principal::Tenant(id))
        );
    }

    #[test]
    fn refuses_other_trust_domains_roles_and_malformed_ids() {
        for uri in [
            "spiffe://evil.local/admin",
            "spiffe://tenantd.local.evil/admin",
            "spiffe://tenantd.localadmin",
            "spiffe://tenantd.local/admin/extra",
            "spiffe://tenantd.local/root",
            "spiffe://tenantd.local/service/",
            "spiffe://tenantd.local/service/Bad Name",
            "spiffe://tenantd.local/tenant/not-a-uuid",
            "spiffe://tenantd.local/tenant/9f1b6a50-8f0e-4d7e-9a57-1b2c3d4e5f60",
            "https://tenantd.local/admin",
            "",
        ] {
            assert_eq!(Principal::from_spiffe_id(uri, TD), None, "{uri}");
        }
    }
}
