//! Failure injection for provisioning tests: decorators of the provider ports that fail a
//! given number of times, fail always, or hold every call until released. Used only by
//! tests, through [`crate::TestServer::start_with_providers`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use tenantd_application::Providers;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{
    BillingProvider, DnsProvider, DnsRecord, ProvisioningTarget, Subscription, TenantDatabases,
};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{AppliedMigration, Migrated, MigrationLimits, Placement};
use tokio::sync::Semaphore;

/// How a decorated provider misbehaves; clones share their state.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Forward calls fail while this is above zero (each failure takes one).
    failures_left: Arc<AtomicU32>,
    /// Every forward call fails.
    always: bool,
    /// Forward calls wait for a permit of this gate first.
    gate: Option<Arc<Semaphore>>,
    /// Forward calls made.
    calls: Arc<AtomicU32>,
}

impl Fault {
    /// The first `n` forward calls fail, later ones go through.
    pub fn fail_times(n: u32) -> Self {
        Self {
            failures_left: Arc::new(AtomicU32::new(n)),
            ..Self::default()
        }
    }

    /// Every forward call fails (undo calls go through).
    pub fn always() -> Self {
        Self {
            always: true,
            ..Self::default()
        }
    }

    /// Forward calls wait until [`Fault::release`] (a slow provider).
    pub fn held() -> Self {
        Self {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Self::default()
        }
    }

    /// Lets every waiting and future forward call through.
    pub fn release(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Forward calls made so far (including ones still waiting).
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn forward(&self, provider: &str) -> Result<(), StepError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire()
                .await
                .map_err(|_| StepError::new("TEST_GATE_CLOSED", "the gate closed"))?
                .forget();
        }
        let injected = || {
            StepError::new(
                "INJECTED_FAILURE",
                format!("{provider} failed on purpose (test fault)"),
            )
        };
        if self.always {
            return Err(injected());
        }
        let took = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if took.is_ok() {
            return Err(injected());
        }
        Ok(())
    }
}

/// Which providers misbehave how.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The DATABASE provider.
    pub databases: Option<Fault>,
    /// The DNS provider.
    pub dns: Option<Fault>,
    /// The BILLING provider.
    pub billing: Option<Fault>,
}

impl Faults {
    /// Wraps the providers that have a fault.
    pub fn wrap(self, providers: Providers) -> Providers {
        Providers {
            databases: match self.databases {
                Some(fault) => Arc::new(Faulty {
                    inner: providers.databases,
                    fault,
                }),
                None => providers.databases,
            },
            dns: match self.dns {
                Some(fault) => Arc::new(Faulty {
                    inner: providers.dns,
                    fault,
                }),
                None => providers.dns,
            },
            billing: match self.billing {
                Some(fault) => Arc::new(Faulty {
                    inner: providers.billing,
                    fault,
                }),
                None => providers.billing,
            },
        }
    }
}

/// A provider behind a fault.
struct Faulty<P: ?Sized> {
    inner: Arc<P>,
    fault: Fault,
}

#[async_trait]
impl TenantDatabases for Faulty<dyn TenantDatabases> {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError> {
        self.fault.forward("the database provider").await?;
        self.inner.provision(target).await
    }

    async fn deprovision(&self, tenant: TenantId, placement: &Placement) -> Result<(), StepError> {
        self.inner.deprovision(tenant, placement).await
    }

    async fn exists(&self, placement: &Placement) -> Result<bool, StepError> {
        self.inner.exists(placement).await
    }

    // Rollouts go through: their faults are real ones (bad data, a database down).
    async fn migrate(
        &self,
        placement: &Placement,
        to: u32,
        limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError> {
        self.inner.migrate(placement, to, limits).await
    }

    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError> {
        self.inner.applied(placement).await
    }
}

#[async_trait]
impl DnsProvider for Faulty<dyn DnsProvider> {
    async fn publish(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.fault.forward("the DNS provider").await?;
        self.inner.publish(target).await
    }

    async fn withdraw(&self, tenant: TenantId) -> Result<(), StepError> {
        self.inner.withdraw(tenant).await
    }

    async fn records(&self, tenant: TenantId) -> Result<Vec<DnsRecord>, StepError> {
        self.inner.records(tenant).await
    }
}

#[async_trait]
impl BillingProvider for Faulty<dyn BillingProvider> {
    async fn subscribe(&self, target: &ProvisioningTarget) -> Result<(), StepError> {
        self.fault.forward("the billing provider").await?;
        self.inner.subscribe(target).await
    }

    async fn cancel(&self, tenant: TenantId) -> Result<(), StepError> {
        self.inner.cancel(tenant).await
    }

    async fn subscription(&self, tenant: TenantId) -> Result<Option<Subscription>, StepError> {
        self.inner.subscription(tenant).await
    }
}
