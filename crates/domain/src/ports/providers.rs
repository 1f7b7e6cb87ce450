//! The external systems a provisioning run changes, one port per provider: the tenant's
//! database, its DNS records and its billing subscription.

use std::net::IpAddr;

use async_trait::async_trait;

use crate::provisioning::StepError;
use crate::{ContactEmail, DisplayName, PlanId, Slug, TenantId};

/// What a provisioning step knows about the tenant it provisions.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisioningTarget {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its slug (DNS names derive from it).
    pub slug: Slug,
    /// Its display name.
    pub display_name: DisplayName,
    /// Its plan.
    pub plan_id: PlanId,
    /// Its contact (the tenant's first admin user).
    pub contact_email: ContactEmail,
}

/// A DNS record a provider published for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsRecord {
    /// The fully qualified name, without the trailing dot.
    pub name: String,
    /// `A`, `AAAA` or `CNAME`.
    pub kind: String,
    /// The address or the target name.
    pub value: String,
}

impl DnsRecord {
    /// The records a tenant gets: `<slug>.<base domain>` as an A (or AAAA) record to the
    /// ingress address, and `www.<slug>.<base domain>` as a CNAME to it.
    pub fn of_tenant(slug: &Slug, base_domain: &str, ingress: IpAddr) -> [DnsRecord; 2] {
        let apex = format!("{slug}.{}", base_domain.trim_end_matches('.'));
        let address = if ingress.is_ipv4() { "A" } else { "AAAA" };
        [
            DnsRecord {
                name: apex.clone(),
                kind: address.to_owned(),
                value: ingress.to_string(),
            },
            DnsRecord {
                name: format!("www.{apex}"),
                kind: "CNAME".to_owned(),
                value: apex,
            },
        ]
    }
}

/// A tenant's billing subscription as the provider keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The plan subscribed to.
    pub plan_id: PlanId,
    /// Whether it is active (not cancelled).
    pub active: bool,
}

/// The DATABASE step's provider: the tenant's own schema, migrated and seeded.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantDatabases: Send + Sync {
    /// Creates and migrates the tenant's schema; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Drops the tenant's schema and everything in it; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError>;

    /// Whether the tenant's schema exists now.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the database cannot be asked.
    async fn exists(&self, tenant: TenantId) -> Result<bool, StepError>;
}

/// The DNS step's provider.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Publishes the tenant's records; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason (e.g. a name held by another tenant).
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Withdraws every record of the tenant; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError>;

    /// The records published for the tenant, ordered by name and type.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the provider cannot be asked.
    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError>;
}

/// The BILLING step's provider.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BillingProvider: Send + Sync {
    /// Makes sure the tenant is a customer with an active subscription to its plan;
    /// idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError>;

    /// Cancels the tenant's subscription; idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError>;

    /// The tenant's subscription, if it ever had one.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the provider cannot be asked.
    async fn subscription(&self, tenant: TenantId) -> Result<Option<Subscription>, StepError>;
}
