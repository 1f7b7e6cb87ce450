//! Where a tenant's data lives: a schema in a shared tenant database (the pool model), or a
//! database of its own on a tenant database's server (the silo model), chosen per plan.

use crate::TenantId;

/// Where one tenant's data lives.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Placement {
    /// The tenant database: a configured name (`default` is the control plane's own).
    pub tenant_database: String,
    /// With a database of its own: its name, on the tenant database's server; `None`: a
    /// schema in the tenant database itself.
    pub dedicated: Option<String>,
    /// The tenant's schema (in the tenant database, or in its own database).
    pub schema: String,
}

/// How a plan's tenants are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementRule {
    /// A schema each in this tenant database.
    Shared(String),
    /// A database each on this tenant database's server.
    Dedicated(String),
}

impl PlacementRule {
    /// The tenant database the rule names.
    pub fn tenant_database(&self) -> &str {
        match self {
            Self::Shared(name) | Self::Dedicated(name) => name,
        }
    }

    /// Where `tenant` goes under this rule, its schema (and its own database, when
    /// dedicated) named `<prefix><tenant id without dashes>`.
    pub fn place(&self, tenant: TenantId, prefix: &str) -> Placement {
        let name = format!("{prefix}{}", tenant.as_uuid().simple());
        match self {
            Self::Shared(database) => Placement {
                tenant_database: database.clone(),
                dedicated: None,
                schema: name,
            },
            Self::Dedicated(database) => Placement {
                tenant_database: database.clone(),
                dedicated: Some(name.clone()),
                schema: name,
            },
        }
    }
}

/// The name of the control plane's own database as a tenant database.
pub const DEFAULT_TENANT_DATABASE: &str = "default";

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn shared_tenants_get_a_schema_and_dedicated_ones_a_database_of_the_same_name() {
        let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
        let simple = tenant.as_uuid().simple().to_string();
        let shared = PlacementRule::Shared("default".into()).place(tenant, "t_");
        assert_eq!(shared.schema, format!("t_{simple}"));
        assert_eq!(
            (shared.tenant_database.as_str(), shared.dedicated),
            ("default", None)
        );
        let dedicated = PlacementRule::Dedicated("silo".into()).place(tenant, "t_");
        assert_eq!(dedicated.tenant_database, "silo");
        assert_eq!(
            dedicated.dedicated.as_deref(),
            Some(dedicated.schema.as_str())
        );
    }
}
