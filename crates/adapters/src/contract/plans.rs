//! Contract of [`PlanRepository`](tenantd_domain::ports::PlanRepository).

use tenantd_domain::PlanId;

use super::Stores;

/// The four seeded plans are listed in id order with their quotas, and each can be read.
pub async fn plans_are_seeded(stores: Stores) {
    let plans = stores.plans.list().await.expect("list plans");
    let ids: Vec<_> = plans.iter().map(|p| p.id.as_str().to_owned()).collect();
    assert_eq!(ids, ["basic", "enterprise", "free", "pro"]);
    let pro = stores
        .plans
        .get(&PlanId::new("pro"))
        .await
        .expect("get plan")
        .expect("pro exists");
    assert_eq!(pro.quotas.max_api_keys, 20);
    assert!(pro.quotas.requests_per_second > 0);
    assert!(
        stores
            .plans
            .get(&PlanId::new("gold"))
            .await
            .expect("get plan")
            .is_none()
    );
}
