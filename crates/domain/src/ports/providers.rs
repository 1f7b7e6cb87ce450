//! The external systems a provisioning run changes, one port per provider: the tenant's
//! database, its DNS records and its billing subscription.

use std::net::IpAddr;

use async_trait::async_trait;

use crate::provisioning::StepError;
use crate::tenant_schema::{AppliedMigration, Migrated, MigrationLimits, Placement};
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
    /// Where its schema goes.
    pub placement: Placement,
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

/// The DATABASE step's provider and the rollouts' hands: each tenant's own schema, where
/// its [`Placement`] says, migrated with the application's migrations.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantDatabases: Send + Sync {
    /// Creates the tenant's schema (and its database, when dedicated) at the newest
    /// version, in one transaction; idempotent (a schema that exists is migrated instead).
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError>;

    /// Drops the tenant's schema (its database, when dedicated) and everything in it;
    /// idempotent.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason.
    async fn deprovision(&self, tenant: TenantId, placement: &Placement) -> Result<(), StepError>;

    /// Whether the tenant's schema exists now.
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the database cannot be asked.
    async fn exists(&self, placement: &Placement) -> Result<bool, StepError>;

    /// Brings an existing schema to version `to`, applying only the versions it lacks, all
    /// in one transaction under `limits`: on failure it stays exactly at its version.
    /// Serialized with every other change of the same schema. `Ok(None)` when the schema
    /// does not exist.
    ///
    /// # Errors
    /// A [`StepError`]: `DATABASE_UNAVAILABLE` (worth retrying), `MIGRATION_FAILED`,
    /// `MIGRATION_DRIFT` (the schema holds a version the set does not), `LOCK_TIMEOUT`,
    /// `STATEMENT_TIMEOUT`.
    async fn migrate(
        &self,
        placement: &Placement,
        to: u32,
        limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError>;

    /// The migrations the schema records, in version order (empty when it does not exist).
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the database cannot be asked.
    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError>;
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
