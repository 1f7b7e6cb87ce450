//! PlanService use cases: the plan catalogue, read-only.

use std::sync::Arc;

use tenantd_domain::ports::PlanRepository;
use tenantd_domain::{Error, Plan, PlanId, Reason};

use crate::{Page, PageRequest};

/// Lists and reads plans.
#[derive(Clone)]
pub struct PlanService {
    plans: Arc<dyn PlanRepository>,
}

impl std::fmt::Debug for PlanService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanService").finish_non_exhaustive()
    }
}

impl PlanService {
    /// A service over `plans`.
    pub fn new(plans: Arc<dyn PlanRepository>) -> Self {
        Self { plans }
    }

    /// One page of plans, ordered by id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad page size or token; store failures.
    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<Page<Plan>, Error> {
        const FILTERS: &str = "plans";
        let page = PageRequest::parse(page_size, page_token, FILTERS)?;
        let mut plans = self.plans.list().await?;
        plans.sort_by(|a, b| a.id.cmp(&b.id));
        let fetched = plans
            .into_iter()
            .filter(|p| {
                page.after
                    .as_deref()
                    .is_none_or(|after| p.id.as_str() > after)
            })
            .take(page.fetch_limit())
            .collect();
        Ok(page.finish(fetched, FILTERS, |p| p.id.to_string()))
    }

    /// One plan.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty id; [`Error::NotFound`]; store failures.
    pub async fn get(&self, plan_id: &str) -> Result<Plan, Error> {
        if plan_id.is_empty() {
            return Err(Error::invalid("plan_id", "is required"));
        }
        if plan_id.len() > 63 || plan_id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "plan_id",
                "must be at most 63 characters without control characters",
            ));
        }
        self.plans
            .get(&PlanId::new(plan_id))
            .await?
            .ok_or_else(|| Error::not_found(Reason::PlanNotFound, "plan", plan_id))
    }
}

#[cfg(test)]
mod tests {
    use tenantd_domain::plan::seeded_plans;
    use tenantd_domain::ports::MockPlanRepository;

    use super::*;

    fn service() -> PlanService {
        let mut plans = MockPlanRepository::new();
        plans.expect_list().returning(|| Ok(seeded_plans()));
        plans
            .expect_get()
            .returning(|id| Ok(seeded_plans().into_iter().find(|p| &p.id == id)));
        PlanService::new(Arc::new(plans))
    }

    #[tokio::test]
    async fn lists_plans_in_id_order_across_pages() {
        let svc = service();
        let first = svc.list(3, "").await.unwrap();
        let ids: Vec<_> = first.items.iter().map(|p| p.id.to_string()).collect();
        assert_eq!(ids, ["basic", "enterprise", "free"]);
        let second = svc.list(3, &first.next_page_token).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].id.as_str(), "pro");
        assert!(second.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn get_unknown_plan_is_not_found_and_empty_id_invalid() {
        let svc = service();
        assert_eq!(svc.get("pro").await.unwrap().quotas.max_api_keys, 20);
        assert!(matches!(
            svc.get("gold").await,
            Err(Error::NotFound {
                resource: "plan",
                ..
            })
        ));
        assert!(matches!(
            svc.get("").await,
            Err(Error::InvalidArgument { .. })
        ));
    }
}
