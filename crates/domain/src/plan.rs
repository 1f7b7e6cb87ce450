//! Plans: what a tenant pays for and the quotas it grants.

use std::fmt;

/// A plan's id, e.g. `pro`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PlanId(String);

impl PlanId {
    /// Wraps an id; existence is checked against the plan repository, not here.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The limits a plan grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanQuotas {
    /// Active API keys per tenant.
    pub max_api_keys: u32,
    /// Requests per second for the tenant's principal.
    pub requests_per_second: u32,
    /// Users inside the tenant.
    pub max_users: u32,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Id.
    pub id: PlanId,
    /// Human-readable name.
    pub display_name: String,
    /// Quotas.
    pub quotas: PlanQuotas,
}

/// The plan catalogue every store is seeded with: free, basic, pro, enterprise.
pub fn seeded_plans() -> Vec<Plan> {
    let plan = |id: &str, name: &str, max_api_keys, requests_per_second, max_users| Plan {
        id: PlanId::new(id),
        display_name: name.to_owned(),
        quotas: PlanQuotas {
            max_api_keys,
            requests_per_second,
            max_users,
        },
    };
    vec![
        plan("basic", "Basic", 5, 20, 25),
        plan("enterprise", "Enterprise", 100, 1000, 10_000),
        plan("free", "Free", 2, 5, 5),
        plan("pro", "Pro", 20, 100, 250),
    ]
}
