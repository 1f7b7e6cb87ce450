//! The composition root: the one place that picks an adapter for every port. Swapping an
//! adapter is a change here and nowhere else.

use std::sync::Arc;

use tenantd_adapters::memory::{MemoryPlanRepository, MemoryStore};
use tenantd_adapters::system::{SystemClock, UuidV7Generator};
use tenantd_application::{EventService, PlanService, TenantService, TenantSettings};

use crate::config::Config;

/// The use-case services the gRPC handlers call.
#[derive(Debug, Clone)]
pub struct Services {
    /// Tenant lifecycle.
    pub tenants: TenantService,
    /// Plan catalogue.
    pub plans: PlanService,
    /// Event log.
    pub events: EventService,
}

/// Builds the services for `config`. Without a database every port is served from memory
/// (the embedded default).
pub fn build(config: &Config) -> Services {
    let store = MemoryStore::new();
    let plans = Arc::new(MemoryPlanRepository::default());
    let settings = TenantSettings {
        deletion_retention: chrono::Duration::from_std(config.deletion_retention)
            .unwrap_or(chrono::Duration::days(30)),
        ..TenantSettings::default()
    };
    Services {
        tenants: TenantService::new(
            Arc::new(store.clone()),
            plans.clone(),
            Arc::new(SystemClock),
            Arc::new(UuidV7Generator),
            settings,
        ),
        plans: PlanService::new(plans),
        events: EventService::new(Arc::new(store)),
    }
}
