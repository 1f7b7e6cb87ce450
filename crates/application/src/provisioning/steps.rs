//! What each step does and how it is undone, over the provider ports.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenantd_domain::ports::{
    ApiKeyRepository, BillingProvider, DataKeyRepository, DnsProvider, IdGenerator,
    InitialKeyStore, PlanRepository, ProvisioningTarget, SecretGenerator, SecretSealer,
    TenantDatabases, TenantSchemaRepository,
};
use tenantd_domain::provisioning::{StepError, StepKind};
use tenantd_domain::{
    ApiKey, ApiKeyId, ApiKeySecret, Event, EventId, EventKind, RepoError, Tenant,
};

use crate::api_keys::hash;
use crate::tenant_schemas::PlacementPolicy;

/// The purpose the first key's secret is sealed for (the AAD binds it).
pub const INITIAL_KEY_PURPOSE: &str = "initial_api_key";

/// Scopes of a tenant's first admin key.
const INITIAL_KEY_SCOPES: [&str; 1] = ["tenant.admin"];

/// The external systems provisioning changes: one port per provider, so a real DNS,
/// billing or database host is one adapter each.
#[derive(Clone)]
pub struct Providers {
    /// DATABASE.
    pub databases: Arc<dyn TenantDatabases>,
    /// DNS.
    pub dns: Arc<dyn DnsProvider>,
    /// BILLING.
    pub billing: Arc<dyn BillingProvider>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

/// Everything the steps use: the providers and, for CREDENTIALS, the key stores.
#[derive(Clone)]
pub struct StepPorts {
    /// The providers.
    pub providers: Providers,
    /// The first admin keys.
    pub initial_keys: Arc<dyn InitialKeyStore>,
    /// API keys (to revoke the first one on compensation).
    pub api_keys: Arc<dyn ApiKeyRepository>,
    /// Plans (the key quota).
    pub plans: Arc<dyn PlanRepository>,
    /// Seals the first key's secret with the tenant's data key.
    pub sealer: Arc<dyn SecretSealer>,
    /// The tenants' data keys.
    pub data_keys: Arc<dyn DataKeyRepository>,
    /// Randomness for the secret.
    pub secrets: Arc<dyn SecretGenerator>,
    /// Ids of keys and events.
    pub ids: Arc<dyn IdGenerator>,
    /// The tenant schemas' versions, recorded when DATABASE makes one.
    pub schemas: Arc<dyn TenantSchemaRepository>,
    /// Where a tenant made before placements were recorded has its schema.
    pub placement: Arc<PlacementPolicy>,
}

impl std::fmt::Debug for StepPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepPorts").finish_non_exhaustive()
    }
}

pub(crate) fn store_error(what: &str, err: &RepoError) -> StepError {
    match err {
        RepoError::Unavailable(_) => StepError::new(
            "STORE_UNAVAILABLE",
            format!("{what}: the store is unavailable"),
        ),
        RepoError::LimitReached => StepError::permanent(
            "API_KEY_QUOTA_EXCEEDED",
            format!("{what}: the plan's API key quota is used up"),
        ),
        other => StepError::new("STORE_ERROR", format!("{what}: {other}")),
    }
}

impl StepPorts {
    fn event(&self, tenant: &Tenant, kind: EventKind, now: DateTime<Utc>) -> Event {
        Event {
            id: EventId(self.ids.new_v7()),
            subject: tenant.id().into(),
            occurred_at: now,
            kind,
        }
    }

    /// Runs `step` for `tenant`; on success, the events to write with the step's success.
    pub(crate) async fn run(
        &self,
        step: StepKind,
        tenant: &Tenant,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, StepError> {
        let Some(contact_email) = tenant.contact_email().cloned() else {
            return Err(StepError::permanent(
                "TENANT_PURGED",
                "the tenant was purged: there is nothing to provision",
            ));
        };
        let target = ProvisioningTarget {
            tenant_id: tenant.id(),
            slug: tenant.slug().clone(),
            display_name: tenant.display_name().clone(),
            plan_id: tenant.plan_id().clone(),
            contact_email,
            placement: self.placement.placement_of(tenant),
        };
        match step {
            StepKind::Database => return self.database(&target, now).await,
            StepKind::Dns => self.providers.dns.publish(&target).await?,
            StepKind::Credentials => self.first_key(tenant, now).await?,
            StepKind::Billing => self.providers.billing.subscribe(&target).await?,
            // The request is the event itself, written with the step's success.
            StepKind::Notification => {
                return Ok(vec![EventKind::WelcomeNotificationRequested {
                    slug: tenant.slug().to_string(),
                    display_name: tenant.display_name().as_str().to_owned(),
                }]);
            }
        }
        Ok(Vec::new())
    }

    /// Undoes `step` for `tenant`.
    pub(crate) async fn undo(
        &self,
        step: StepKind,
        tenant: &Tenant,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        match step {
            StepKind::Database => {
                let placement = self.placement.placement_of(tenant);
                self.providers
                    .databases
                    .deprovision(tenant.id(), &placement)
                    .await?;
                self.schemas
                    .forget(tenant.id())
                    .await
                    .map_err(|e| store_error("cannot forget the tenant schema", &e))
            }
            StepKind::Dns => self.providers.dns.withdraw(tenant.id()).await,
            StepKind::Credentials => self.revoke_first_key(tenant, now).await,
            StepKind::Billing => self.providers.billing.cancel(tenant.id()).await,
            // A welcome request cannot be unsent; consumers see the tenant's FAILED or
            // CANCELLED status and its events.
            StepKind::Notification => Ok(()),
        }
    }

    /// Makes the tenant's schema at the newest version and records it; the event says so
    /// (a repeated attempt that found the schema made says the same).
    async fn database(
        &self,
        target: &ProvisioningTarget,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventKind>, StepError> {
        let started = std::time::Instant::now();
        let migrated = self.providers.databases.provision(target).await?;
        self.schemas
            .record(target.tenant_id, migrated.to, now)
            .await
            .map_err(|e| store_error("cannot record the tenant schema", &e))?;
        Ok(vec![EventKind::TenantSchemaMigrated {
            rollout_id: String::new(),
            from_version: migrated.from,
            to_version: migrated.to,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }])
    }

    /// Creates the tenant's first admin key unless an earlier attempt did; its secret is
    /// stored only sealed, for one claim.
    async fn first_key(&self, tenant: &Tenant, now: DateTime<Utc>) -> Result<(), StepError> {
        if let Some(initial) = self
            .initial_keys
            .initial(tenant.id())
            .await
            .map_err(|e| store_error("cannot read the first key", &e))?
            && let Some(key) = self
                .api_keys
                .get(initial.key_id)
                .await
                .map_err(|e| store_error("cannot read the first key", &e))?
            && key.revoked_at.is_none()
        {
            return Ok(());
        }
        let plan = self
            .plans
            .get(tenant.plan_id())
            .await
            .map_err(|e| store_error("cannot read the plan", &e))?
            .ok_or_else(|| {
                StepError::permanent(
                    "PLAN_MISSING",
                    format!("plan {} does not exist", tenant.plan_id()),
                )
            })?;
        let secret = ApiKeySecret::new(ApiKeyId(self.ids.new_v7()), &self.secrets.api_key_secret());
        let key = ApiKey {
            id: secret.id(),
            tenant_id: tenant.id(),
            display_name: "initial admin key".into(),
            scopes: INITIAL_KEY_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            secret_hash: hash(&secret),
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let fresh = self.sealer.new_data_key(tenant.id());
        let data_key = self
            .data_keys
            .get_or_create(tenant.id(), fresh)
            .await
            .map_err(|e| store_error("cannot read the tenant's data key", &e))?;
        let sealed = self
            .sealer
            .seal_with(
                tenant.id(),
                &data_key,
                INITIAL_KEY_PURPOSE,
                secret.expose().as_bytes(),
            )
            .map_err(|e| {
                StepError::permanent(
                    "DATA_KEY_INVALID",
                    format!("the tenant's data key does not unwrap: {e}"),
                )
            })?;
        let created = self.event(
            tenant,
            EventKind::ApiKeyCreated {
                key_id: key.id.to_string(),
                scopes: key.scopes.clone(),
            },
            now,
        );
        self.initial_keys
            .create_initial(&key, &sealed, &[created], plan.quotas.max_api_keys, now)
            .await
            .map_err(|e| store_error("cannot store the first key", &e))?;
        Ok(())
    }

    async fn revoke_first_key(&self, tenant: &Tenant, now: DateTime<Utc>) -> Result<(), StepError> {
        let Some(initial) = self
            .initial_keys
            .initial(tenant.id())
            .await
            .map_err(|e| store_error("cannot read the first key", &e))?
        else {
            return Ok(());
        };
        let revoked = self.event(
            tenant,
            EventKind::ApiKeyRevoked {
                key_id: initial.key_id.to_string(),
            },
            now,
        );
        match self.api_keys.revoke(initial.key_id, now, &[revoked]).await {
            Ok(_) | Err(RepoError::NotFound) => Ok(()),
            Err(err) => Err(store_error("cannot revoke the first key", &err)),
        }
    }
}
