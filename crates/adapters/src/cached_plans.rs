//! The plan catalogue in process: a decorator over any [`PlanRepository`] that keeps the
//! whole (small) catalogue for a bounded time, so CreateTenant, API key quotas and rate
//! limits read plans without a round trip. Plans change only through the database today
//! (migrations or an operator's SQL): a change is seen within the TTL on every replica,
//! or at once after [`CachedPlans::invalidate`] on this one.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tenantd_domain::ports::PlanRepository;
use tenantd_domain::{Plan, PlanId, RepoError};

/// How long the catalogue is kept unless configured otherwise.
pub const DEFAULT_PLAN_TTL: Duration = Duration::from_secs(10);

/// The catalogue as read at one moment.
struct Snapshot {
    read_at: Instant,
    plans: Arc<[Plan]>,
}

/// [`PlanRepository`] decorator keeping the catalogue in process for `ttl`.
pub struct CachedPlans {
    inner: Arc<dyn PlanRepository>,
    ttl: Duration,
    snapshot: RwLock<Option<Snapshot>>,
}

impl std::fmt::Debug for CachedPlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedPlans")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedPlans {
    /// Keeps `inner`'s catalogue for `ttl` at a time.
    pub fn new(inner: Arc<dyn PlanRepository>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            snapshot: RwLock::new(None),
        }
    }

    /// Forgets the catalogue: the next read goes to the store.
    pub fn invalidate(&self) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The catalogue, from the snapshot while it is fresh. Concurrent reads of an expired
    /// snapshot may each read the store once; a failed read is not kept.
    async fn plans(&self) -> Result<Arc<[Plan]>, RepoError> {
        if let Some(snapshot) = &*self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
            && snapshot.read_at.elapsed() < self.ttl
        {
            return Ok(snapshot.plans.clone());
        }
        let read_at = Instant::now();
        let plans: Arc<[Plan]> = self.inner.list().await?.into();
        let mut snapshot = self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Keep the newest read (an invalidation in between leaves the slot empty: this read
        // may predate the change, so it is returned but not kept).
        if snapshot.as_ref().is_none_or(|s| s.read_at < read_at) {
            *snapshot = Some(Snapshot {
                read_at,
                plans: plans.clone(),
            });
        }
        Ok(plans)
    }
}

#[async_trait]
impl PlanRepository for CachedPlans {
    async fn list(&self) -> Result<Vec<Plan>, RepoError> {
        Ok(self.plans().await?.to_vec())
    }

    async fn get(&self, id: &PlanId) -> Result<Option<Plan>, RepoError> {
        Ok(self.plans().await?.iter().find(|p| &p.id == id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use tenantd_domain::PlanQuotas;
    use tenantd_domain::ports::MockPlanRepository;

    use super::*;

    fn plan(id: &str, max_api_keys: u32) -> Plan {
        Plan {
            id: PlanId::new(id),
            display_name: id.to_owned(),
            quotas: PlanQuotas {
                max_api_keys,
                requests_per_second: 10,
                max_users: 5,
            },
        }
    }

    #[tokio::test]
    async fn reads_within_the_ttl_make_one_store_read() {
        let mut inner = MockPlanRepository::new();
        inner
            .expect_list()
            .times(1)
            .returning(|| Ok(vec![plan("free", 1), plan("pro", 20)]));
        let plans = CachedPlans::new(Arc::new(inner), Duration::from_mins(1));
        let pro = plans.get(&PlanId::new("pro")).await.unwrap().unwrap();
        assert_eq!(pro.quotas.max_api_keys, 20);
        assert!(plans.get(&PlanId::new("gold")).await.unwrap().is_none());
        assert_eq!(plans.list().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_invalidation_or_the_ttl_reads_the_store_again() {
        let mut inner = MockPlanRepository::new();
        let mut reads = 0;
        inner.expect_list().times(3).returning(move || {
            reads += 1;
            Ok(vec![plan("pro", reads)])
        });
        let plans = CachedPlans::new(Arc::new(inner), Duration::from_millis(50));
        let quota = async || {
            plans
                .get(&PlanId::new("pro"))
                .await
                .unwrap()
                .unwrap()
                .quotas
                .max_api_keys
        };
        assert_eq!(quota().await, 1);
        assert_eq!(quota().await, 1);
        plans.invalidate();
        assert_eq!(quota().await, 2);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(quota().await, 3);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let mut inner = MockPlanRepository::new();
        let mut calls = 0;
        inner.expect_list().times(2).returning(move || {
            calls += 1;
            if calls == 1 {
                Err(RepoError::Unavailable("down".into()))
            } else {
                Ok(vec![plan("free", 1)])
            }
        });
        let plans = CachedPlans::new(Arc::new(inner), Duration::from_mins(1));
        assert!(plans.get(&PlanId::new("free")).await.is_err());
        assert!(plans.get(&PlanId::new("free")).await.unwrap().is_some());
    }
}
