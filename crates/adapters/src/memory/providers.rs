//! In-memory provisioning providers: what the embedded mode provisions (tenant schemas
//! as the versions they record). The DNS provider
//! keeps records per tenant, so a name held by another tenant is refused here too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tenantd_domain::TenantId;
use tenantd_domain::ports::{
    BillingProvider, DnsProvider, DnsRecord, ProvisioningTarget, Subscription, TenantDatabases,
};
use tenantd_domain::provisioning::StepError;
use tenantd_domain::tenant_schema::{
    AppliedMigration, Migrated, MigrationLimits, MigrationSet, Placement,
};

/// Tenant "schemas": the migrations each placement's schema records, nothing run. A
/// migration of a schema that does not exist finds nothing, as on a database.
#[derive(Debug, Clone)]
pub struct MemoryTenantDatabases {
    set: Arc<MigrationSet>,
    schemas: Arc<Mutex<BTreeMap<Placement, Vec<AppliedMigration>>>>,
}

impl Default for MemoryTenantDatabases {
    /// Schemas of the built-in example set.
    fn default() -> Self {
        Self::new(Arc::new(crate::tenant_migrations::built_in()))
    }
}

impl MemoryTenantDatabases {
    /// Schemas migrated with `set`.
    pub fn new(set: Arc<MigrationSet>) -> Self {
        Self {
            set,
            schemas: Arc::default(),
        }
    }

    /// The same schemas, migrated with `set` (as a replica of another release sees them).
    #[must_use]
    pub fn with_set(&self, set: Arc<MigrationSet>) -> Self {
        Self {
            set,
            schemas: self.schemas.clone(),
        }
    }

    fn schemas(&self) -> std::sync::MutexGuard<'_, BTreeMap<Placement, Vec<AppliedMigration>>> {
        self.schemas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings `applied` to `to` (clamped to the set): what it was at, and is at now.
    fn bring(&self, applied: &mut Vec<AppliedMigration>, to: u32) -> Result<Migrated, StepError> {
        self.set
            .check_applied(applied)
            .map_err(|drift| StepError::permanent("MIGRATION_DRIFT", drift.to_string()))?;
        let from = applied.last().map_or(0, |m| m.version);
        let new: Vec<AppliedMigration> = self
            .set
            .between(from, to)
            .iter()
            .map(AppliedMigration::from)
            .collect();
        applied.extend(new.iter().cloned());
        Ok(Migrated {
            from,
            to: applied.last().map_or(0, |m| m.version),
            applied: new,
        })
    }
}

#[async_trait]
impl TenantDatabases for MemoryTenantDatabases {
    async fn provision(&self, target: &ProvisioningTarget) -> Result<Migrated, StepError> {
        let mut schemas = self.schemas();
        let applied = schemas.entry(target.placement.clone()).or_default();
        self.bring(applied, self.set.newest())
    }

    async fn deprovision(&self, _tenant: TenantId, placement: &Placement) -> Result<(), StepError> {
        self.schemas().remove(placement);
        Ok(())
    }

    async fn exists(&self, placement: &Placement) -> Result<bool, StepError> {
        Ok(self.schemas().contains_key(placement))
    }

    async fn migrate(
        &self,
        placement: &Placement,
        to: u32,
        _limits: MigrationLimits,
    ) -> Result<Option<Migrated>, StepError> {
        let mut schemas = self.schemas();
        let Some(applied) = schemas.get_mut(placement) else {
            return Ok(None);
        };
        // All or nothing, as a transaction: the copy is kept only when it succeeded.
        let mut next = applied.clone();
        let migrated = self.bring(&mut next, to)?;
        *applied = next;
        Ok(Some(migrated))
    }

    async fn applied(&self, placement: &Placement) -> Result<Vec<AppliedMigration>, StepError> {
        Ok(self.schemas().get(placement).cloned().unwrap_or_default())
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

/// The in-memory schemas hold no application tables: a dump is the one table they keep,
/// `schema_migrations`, as PostgreSQL's would show it.
#[async_trait]
impl tenantd_domain::ports::TenantSchemaDumps for MemoryTenantDatabases {
    async fn dump(
        &self,
        _tenant: TenantId,
        placement: &Placement,
        sink: &mut dyn tenantd_domain::ports::DumpSink,
    ) -> Result<(), StepError> {
        let applied = self
            .schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(placement)
            .cloned();
        let Some(applied) = applied else {
            return Ok(());
        };
        sink.table(
            "schema_migrations",
            "CREATE TABLE \"schema_migrations\" (\n    \"version\" integer NOT NULL,\n    \
             \"name\" text NOT NULL,\n    \"checksum\" bytea,\n    \
             CONSTRAINT \"schema_migrations_pkey\" PRIMARY KEY (version)\n);\n",
        )
        .await?;
        sink.rows(b"version,name,checksum\n").await?;
        for migration in applied {
            let checksum = crate::archives::hex(&migration.checksum);
            let line = format!("{},{},\\x{checksum}\n", migration.version, migration.name);
            sink.rows(line.as_bytes()).await?;
        }
        Ok(())
    }
}
