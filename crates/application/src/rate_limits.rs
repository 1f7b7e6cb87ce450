//! Request rate limits per principal: a token bucket per caller identity, refilled at the
//! rate of the caller's role (admins and services: configured) or of its tenant's plan.
//! Buckets live in the [`RateLimiter`] port: shared by every replica when it is Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tenantd_domain::ports::{Admission, PlanRepository, RateLimit, RateLimiter, TenantRepository};
use tenantd_domain::{Error, Principal, Reason, TenantId};

/// How long a tenant's plan rate is remembered before it is read again: a plan change
/// takes effect within this long.
const PLAN_RATE_MEMO: Duration = Duration::from_secs(10);
/// Most tenants whose rate is remembered at once.
const MAX_MEMO: usize = 10_000;
/// At most one "limiter unavailable" warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Rates of the roles that have no plan; 0 means no limit (their defaults are the
/// server's configuration defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per second of each admin identity.
    pub admin_per_second: u32,
    /// Requests per second of each service identity.
    pub service_per_second: u32,
}

/// Admits or refuses a principal's request.
#[derive(Clone)]
pub struct RateLimitService {
    limiter: Arc<dyn RateLimiter>,
    tenants: Arc<dyn TenantRepository>,
    plans: Arc<dyn PlanRepository>,
    settings: RateLimitSettings,
    memo: Arc<Mutex<HashMap<TenantId, (u32, Instant)>>>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for RateLimitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimitService {
    /// A service over these ports.
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        tenants: Arc<dyn TenantRepository>,
        plans: Arc<dyn PlanRepository>,
        settings: RateLimitSettings,
    ) -> Self {
        Self {
            limiter,
            tenants,
            plans,
            settings,
            memo: Arc::default(),
            last_warning: Arc::default(),
        }
    }

    /// Takes one request from `principal`'s budget.
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] with the delay after which a retry is admitted, when
    /// the principal is over its rate. A limiter that cannot decide admits (fails open),
    /// with a warning at most every 30 seconds.
    pub async fn check(&self, principal: &Principal) -> Result<(), Error> {
        let Some(per_second) = self.rate_of(principal).await else {
            return Ok(());
        };
        let limit = RateLimit {
            per_second,
            burst: per_second,
        };
        match self.limiter.admit(&principal.path(), limit).await {
            Ok(Admission::Allowed) => Ok(()),
            Ok(Admission::Denied { retry_after }) => Err(Error::ResourceExhausted {
                reason: Reason::RateLimited,
                detail: format!(
                    "rate limit of {per_second} requests per second exceeded by {principal}"
                ),
                retry_after: Some(retry_after),
                limit: Some(u64::from(per_second)),
            }),
            Err(err) => {
                self.warn(&err.to_string());
                Ok(())
            }
        }
    }

    /// The principal's rate, or `None` for no limit.
    async fn rate_of(&self, principal: &Principal) -> Option<u32> {
        let rate = match principal {
            Principal::Admin => self.settings.admin_per_second,
            Principal::Service(_) => self.settings.service_per_second,
            Principal::Tenant(id) => self.tenant_rate(*id).await?,
        };
        (rate > 0).then_some(rate)
    }

    /// The rate of a tenant's plan; `None` when the tenant or plan cannot be read (the
    /// handler answers that request on its own terms).
    async fn tenant_rate(&self, id: TenantId) -> Option<u32> {
        let now = Instant::now();
        if let Some((rate, at)) = self.memo().get(&id)
            && now.duration_since(*at) < PLAN_RATE_MEMO
        {
            return Some(*rate);
        }
        let tenant = self.tenants.get(id).await.ok()??;
        let plan = self.plans.get(tenant.plan_id()).await.ok()??;
        let rate = plan.quotas.requests_per_second;
        let mut memo = self.memo();
        if memo.len() >= MAX_MEMO {
            memo.retain(|_, (_, at)| now.duration_since(*at) < PLAN_RATE_MEMO);
            if memo.len() >= MAX_MEMO {
                memo.clear();
            }
        }
        memo.insert(id, (rate, now));
        Some(rate)
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (u32, Instant)>> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warn(&self, cause: &str) {
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(cause = %cause, "rate limiter unavailable: admitting requests");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tenantd_domain::ports::{MockPlanRepository, MockRateLimiter, MockTenantRepository};
    use tenantd_domain::{
        ContactEmail, DisplayName, Labels, NewTenant, Plan, PlanId, PlanQuotas, RepoError, Slug,
        Tenant, TenantConfig,
    };
    use uuid::Uuid;

    use super::*;

    fn tenant(plan: &str) -> Tenant {
        Tenant::create(
            TenantId::from_uuid(Uuid::now_v7()).unwrap(),
            NewTenant {
                slug: Slug::parse("acme").unwrap(),
                display_name: DisplayName::parse("Acme").unwrap(),
                plan_id: PlanId::new(plan),
                contact_email: ContactEmail::parse("ops@acme.test").unwrap(),
                labels: Labels::default(),
                config: TenantConfig::default(),
            },
            Utc::now(),
        )
    }

    fn plan(rate: u32) -> Plan {
        Plan {
            id: PlanId::new("free"),
            display_name: "Free".into(),
            quotas: PlanQuotas {
                max_api_keys: 1,
                requests_per_second: rate,
                max_users: 1,
            },
        }
    }

    fn service(
        limiter: MockRateLimiter,
        tenants: MockTenantRepository,
        plans: MockPlanRepository,
    ) -> RateLimitService {
        RateLimitService::new(
            Arc::new(limiter),
            Arc::new(tenants),
            Arc::new(plans),
            RateLimitSettings {
                admin_per_second: 7,
                service_per_second: 0,
            },
        )
    }

    #[tokio::test]
    async fn a_denied_request_is_resource_exhausted_with_the_delay() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .withf(|key, limit| {
                key == "admin"
                    && *limit
                        == RateLimit {
                            per_second: 7,
                            burst: 7,
                        }
            })
            .returning(|_, _| {
                Ok(Admission::Denied {
                    retry_after: Duration::from_millis(140),
                })
            });
        let limits = service(
            limiter,
            MockTenantRepository::new(),
            MockPlanRepository::new(),
        );
        let err = limits.check(&Principal::Admin).await.unwrap_err();
        let Error::ResourceExhausted { retry_after, .. } = err else {
            panic!("expected ResourceExhausted, got {err:?}");
        };
        assert_eq!(retry_after, Some(Duration::from_millis(140)));
    }

    #[tokio::test]
    async fn a_tenant_gets_its_plan_rate_read_once_and_remembered() {
        let t = tenant("free");
        let id = t.id();
        let mut tenants = MockTenantRepository::new();
        tenants
            .expect_get()
            .times(1)
            .returning(move |_| Ok(Some(t.clone())));
        let mut plans = MockPlanRepository::new();
        plans.expect_get().times(1).returning(|_| Ok(Some(plan(5))));
        let mut limiter = MockRateLimiter::new();
        let key = format!("tenant/{id}");
        limiter
            .expect_admit()
            .withf(move |k, limit| k == key && limit.per_second == 5 && limit.burst == 5)
            .times(3)
            .returning(|_, _| Ok(Admission::Allowed));
        let limits = service(limiter, tenants, plans);
        for _ in 0..3 {
            limits.check(&Principal::Tenant(id)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn zero_means_unlimited_and_an_unavailable_limiter_admits() {
        let mut limiter = MockRateLimiter::new();
        limiter
            .expect_admit()
            .times(1)
            .returning(|_, _| Err(RepoError::Unavailable("redis down".into())));
        let limits = service(
            limiter,
            MockTenantRepository::new(),
            MockPlanRepository::new(),
        );
        // Services are configured 0 (no limit): the limiter is not even asked.
        limits
            .check(&Principal::Service("billing".into()))
            .await
            .unwrap();
        limits.check(&Principal::Admin).await.unwrap();
    }
}
