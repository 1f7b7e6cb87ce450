//! The seeded plan catalogue, in memory.

use async_trait::async_trait;
use tenantd_domain::plan::seeded_plans;
use tenantd_domain::ports::PlanRepository;
use tenantd_domain::{Plan, PlanId, RepoError};

/// The plans of [`seeded_plans`], read-only.
#[derive(Debug, Clone)]
pub struct MemoryPlanRepository {
    plans: Vec<Plan>,
}

impl Default for MemoryPlanRepository {
    fn default() -> Self {
        let mut plans = seeded_plans();
        plans.sort_by(|a, b| a.id.cmp(&b.id));
        Self { plans }
    }
}

#[async_trait]
impl PlanRepository for MemoryPlanRepository {
    async fn list(&self) -> Result<Vec<Plan>, RepoError> {
        Ok(self.plans.clone())
    }

    async fn get(&self, id: &PlanId) -> Result<Option<Plan>, RepoError> {
        Ok(self.plans.iter().find(|p| &p.id == id).cloned())
    }
}
