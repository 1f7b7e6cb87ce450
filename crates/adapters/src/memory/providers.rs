//! In-memory provisioning providers: what the embedded mode provisions. The DNS provider
//! keeps names per tenant, so a name held by another tenant is refused here too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{BillingProvider, DnsProvider, ProvisioningTarget, TenantDatabases};
use tenantd_domain::provisioning::StepError;

/// Tenant "schemas" as a set of tenant ids.
#[derive(Debug, Clone, Default)]
pub struct MemoryTenantDatabases {
    schemas: Arc<Mutex<BTreeSet<TenantId>>>,
}

#[async_trait]
impl TenantDatabases for MemoryTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.tenant_id);
        Ok(())
    }

    async fn deprovision(&self, tenant: TenantId) -> Result<(), StepError> {
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&tenant);
        Ok(())
    }
}

/// DNS names by tenant.
#[derive(Debug, Clone)]
pub struct MemoryDns {
    base_domain: String,
    names: Arc<Mutex<BTreeMap<String, TenantId>>>,
}

impl MemoryDns {
    /// Names under `base_domain`.
    pub fn new(base_domain: &str) -> Self {
        Self {
            base_domain: base_domain.trim_end_matches('.').to_owned(),
            names: Arc::default(),
        }
    }
}

#[async_trait]
impl DnsProvider for MemoryDns {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        let apex = format!("{}.{}", target.slug.as_str(), self.base_domain);
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        for name in [apex.clone(), format!("www.{apex}")] {
            match names.get(&name) {
                Some(holder) if *holder != target.tenant_id => {
                    return Err(StepError::permanent(
                        "DNS_NAME_TAKEN",
                        format!("{name} is held by another tenant"),
                    ));
                }
                _ => {
                    names.insert(name, target.tenant_id);
                }
            }
        }
        Ok(())
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, t| *t != tenant);
        Ok(())
    }
}

/// Subscriptions: tenant -> (plan, active).
#[derive(Debug, Clone, Default)]
pub struct MemoryBilling {
    subscriptions: Arc<Mutex<BTreeMap<TenantId, (String, bool)>>>,
}

#[async_trait]
impl BillingProvider for MemoryBilling {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.tenant_id, (target.plan_id.to_string(), true));
        Ok(())
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        if let Some((_, active)) = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&tenant)
        {
            *active = false;
        }
        Ok(())
    }
}
