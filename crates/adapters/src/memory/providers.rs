//! In-memory provisioning providers: what the embedded mode provisions. The DNS provider
//! keeps records per tenant, so a name held by another tenant is refused here too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{
    BillingProvider, DnsProvider, DnsRecord, ProvisioningTarget, Subscription, TenantDatabases,
};
use tenantd_domain::provisioning::StepError;

/// Tenant "schemas" as a set of tenant ids.
#[derive(Debug, Clone, Default)]
pub struct MemoryTenantDatabases {
    schemas: Arc<Mutex<BTreeSet<TenantId>>>,
}

impl MemoryTenantDatabases {
    fn schemas(&self) -> std::sync::MutexGuard<'_, BTreeSet<TenantId>> {
        self.schemas.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl TenantDatabases for MemoryTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.schemas().insert(target.tenant_id);
        Ok(())
    }

    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError> {
        self.schemas().remove(&tenant);
        Ok(())
    }

    async fn exists(&self, tenant: TenantId) -> Result<bool, StepError> {
        Ok(self.schemas().contains(&tenant))
    }
}

/// DNS records: (name, type) -> (holder, value).
type Records = BTreeMap<(String, String), (TenantId, String)>;

/// DNS records by (name, type), each with its tenant.
#[derive(Debug, Clone)]
pub struct MemoryDns {
    base_domain: String,
    ingress: IpAddr,
    records: Arc<Mutex<Records>>,
}

impl MemoryDns {
    /// Records under `base_domain` pointing at `ingress`.
    pub fn new(base_domain: &str, ingress: IpAddr) -> Self {
        Self {
            base_domain: base_domain.to_owned(),
            ingress,
            records: Arc::default(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DnsProvider for MemoryDns {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let wanted = DnsRecord::of_tenant(&target.slug, &self.base_domain, self.ingress);
        let mut records = self.records();
        // Check every name before writing one: a refused publish changes nothing.
        for record in &wanted {
            if let Some((holder, _)) = records.get(&(record.name.clone(), record.kind.clone()))
                && *holder != target.tenant_id
            {
                return Err(StepError::permanent(
                    "DNS_NAME_TAKEN",
                    format!("{} is held by another tenant", record.name),
                ));
            }
        }
        for record in wanted {
            records.insert((record.name, record.kind), (target.tenant_id, record.value));
        }
        Ok(())
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        self.records().retain(|_, (holder, _)| *holder != tenant);
        Ok(())
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError> {
        Ok(self
            .records()
            .iter()
            .filter(|(_, (holder, _))| *holder == tenant)
            .map(|((name, kind), (_, value))| DnsRecord {
                name: name.clone(),
                kind: kind.clone(),
                value: value.clone(),
            })
            .collect())
    }
}

/// Subscriptions by tenant.
#[derive(Debug, Clone, Default)]
pub struct MemoryBilling {
    subscriptions: Arc<Mutex<BTreeMap<TenantId, Subscription>>>,
}

impl MemoryBilling {
    fn subscriptions(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, Subscription>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl BillingProvider for MemoryBilling {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.subscriptions().insert(
            target.tenant_id,
            Subscription {
                plan_id: target.plan_id.clone(),
                active: true,
            },
        );
        Ok(())
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        if let Some(subscription) = self.subscriptions().get_mut(&tenant) {
            subscription.active = false;
        }
        Ok(())
    }

    async fn subscription(&self, tenant: TenantId) -> Result<Option<Subscription>, StepError> {
        Ok(self.subscriptions().get(&tenant).cloned())
    }
}
