//! The Redis adapters against a real Redis (`TEST_REDIS_URL`, else the local one), each
//! test under a key prefix of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tenantd_domain::ports::{Admission, RateLimit, RateLimiter, TenantRepository as _};

use super::cache::Lookup;
use super::testing::{test_redis_url, unique_prefix};
use super::*;
use crate::cached_plans::{CachedPlans, DEFAULT_PLAN_TTL};
use crate::contract::fixtures::{run_for, slug, tenant};
use crate::contract::{Limiter, Stores};
use crate::crypto::KeyRing;
use crate::memory::{LocalRateLimiter, MemoryPlanRepository, MemoryStore};

/// Counts what the cache reports.
#[derive(Default)]
struct Counts(Mutex<Vec<(&'static str, &'static str)>>);

impl Counts {
    fn count(&self, what: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| *w == what)
            .count()
    }
}

impl CacheObserver for Counts {
    fn hit(&self, cache: &'static str) {
        self.0.lock().unwrap().push(("hit", cache));
    }
    fn miss(&self, cache: &'static str) {
        self.0.lock().unwrap().push(("miss", cache));
    }
    fn error(&self, cache: &'static str) {
        self.0.lock().unwrap().push(("error", cache));
    }
    fn bypass(&self, cache: &'static str) {
        self.0.lock().unwrap().push(("bypass", cache));
    }
    fn local_hit(&self, cache: &'static str) {
        self.0.lock().unwrap().push(("local_hit", cache));
    }
}

fn redis_at(url: &str, prefix: &str) -> Arc<Redis> {
    Redis::new(
        url,
        RedisSettings {
            key_prefix: prefix.to_owned(),
            ..RedisSettings::default()
        },
    )
    .unwrap()
}

async fn redis() -> Arc<Redis> {
    redis_at(&test_redis_url().await, &unique_prefix())
}

/// The memory store behind the cache decorators: the repository contracts must hold
/// through the cache as they do without it.
async fn cached_stores() -> Stores {
    let ring: Arc<KeyRing> = Arc::new(KeyRing::generate("test"));
    let store = MemoryStore::with_cipher(ring.clone());
    let cache = RedisCache::new(
        redis().await,
        Duration::from_secs(30),
        Arc::new(Counts::default()),
    );
    Stores {
        tenants: Arc::new(CachedTenants::new(
            Arc::new(store.clone()),
            cache.clone(),
            ring,
        )),
        purges: Arc::new(CachedPurges::new(Arc::new(store.clone()), cache.clone())),
        exports: Arc::new(store.clone()),
        runs: Arc::new(CachedRuns::new(Arc::new(store.clone()), cache.clone())),
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(CachedApiKeys::new(Arc::new(store.clone()), cache)),
        events: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        schemas: Arc::new(store.clone()),
        retention: Arc::new(store.clone()),
        data_keys: Arc::new(store.clone()),
        rollouts: Arc::new(store),
        plans: Arc::new(CachedPlans::new(
            Arc::new(MemoryPlanRepository::default()),
            DEFAULT_PLAN_TTL,
        )),
        guard: None,
    }
}

crate::repository_contract_tests!(cached_stores);

/// A fallback that refuses to decide: a limiter test must see Redis's own answers.
struct NoFallback;

#[async_trait::async_trait]
impl RateLimiter for NoFallback {
    async fn admit(&self, _: &str, _: RateLimit) -> Result<Admission, tenantd_domain::RepoError> {
        Err(tenantd_domain::RepoError::Unavailable(
            "Redis did not answer and this test has no fallback".into(),
        ))
    }
}

async fn limiter() -> Limiter {
    Limiter {
        limiter: Arc::new(RedisRateLimiter::new(redis().await, Arc::new(NoFallback))),
        guard: None,
    }
}

mod rate_limits {
    crate::rate_limiter_contract_tests!(super::limiter);
}

#[tokio::test]
async fn a_read_that_raced_a_write_cannot_put_the_old_value_back() {
    let counts = Arc::new(Counts::default());
    let cache = RedisCache::new(redis().await, Duration::from_secs(30), counts.clone());
    let Lookup::Miss(generation) = cache.lookup("tenant", "t1").await else {
        panic!("an empty cache misses");
    };
    // A writer commits and invalidates while the reader is at the database...
    cache.drop_entry("tenant", "t1").await;
    // ...so what the reader read is stale and must not be stored.
    cache.store("tenant", "t1", generation, b"stale").await;
    let Lookup::Miss(fresh) = cache.lookup("tenant", "t1").await else {
        panic!("the stale value was stored");
    };
    // A reader that started after the write stores its value.
    cache.store("tenant", "t1", fresh, b"fresh").await;
    let Lookup::Hit(value) = cache.lookup("tenant", "t1").await else {
        panic!("the fresh value was not stored");
    };
    assert_eq!(value, b"fresh");
    assert_eq!((counts.count("miss"), counts.count("error")), (2, 0));
}

#[tokio::test]
async fn a_cached_tenant_keeps_its_email_sealed_and_answers_only_for_its_id() {
    let redis = redis().await;
    let ring: Arc<KeyRing> = Arc::new(KeyRing::generate("test"));
    let store = MemoryStore::with_cipher(ring.clone());
    let counts = Arc::new(Counts::default());
    let cache = RedisCache::new(redis.clone(), Duration::from_secs(30), counts.clone());
    let tenants = CachedTenants::new(Arc::new(store.clone()), cache.clone(), ring);
    let t = tenant(&slug("cached"), "free", &[]);
    tenants.create(&t, &run_for(&t), &[], None).await.unwrap();

    let stored = tenants.get(t.id()).await.unwrap().expect("stored");
    assert_eq!(stored.id(), t.id());
    assert_eq!(tenants.get(t.id()).await.unwrap(), Some(stored));
    assert_eq!((counts.count("miss"), counts.count("hit")), (1, 1));

    let key = cache.entry_key("tenant", &t.id().to_string());
    let raw: Vec<u8> = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    let email = t
        .contact_email()
        .expect("an address")
        .expose()
        .to_lowercase();
    assert!(!text.contains(&email));
    assert!(!text.contains('@'), "no address in clear: {text}");
    assert!(
        text.contains("\"email\":\""),
        "the envelope is base64 text: {text}"
    );

    // An entry moved under another tenant's key does not answer for it.
    let other = tenant(&slug("other"), "free", &[]);
    tenants
        .create(&other, &run_for(&other), &[], None)
        .await
        .unwrap();
    let other_key = cache.entry_key("tenant", &other.id().to_string());
    let _: () = redis
        .query(redis::cmd("SET").arg(&other_key).arg(&raw))
        .await
        .unwrap();
    assert_eq!(
        tenants.get(other.id()).await.unwrap().map(|o| o.id()),
        Some(other.id())
    );
}

#[tokio::test]
async fn replicas_share_one_bucket_per_principal() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let a = RedisRateLimiter::new(redis_at(&url, &prefix), Arc::new(NoFallback));
    let b = RedisRateLimiter::new(redis_at(&url, &prefix), Arc::new(NoFallback));
    let limit = RateLimit {
        per_second: 1,
        burst: 2,
    };
    assert_eq!(a.admit("admin", limit).await.unwrap(), Admission::Allowed);
    assert_eq!(b.admit("admin", limit).await.unwrap(), Admission::Allowed);
    let Admission::Denied { retry_after } = a.admit("admin", limit).await.unwrap() else {
        panic!("the shared burst of 2 is used up");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1),
        "{retry_after:?}"
    );
    assert!(matches!(
        b.admit("admin", limit).await.unwrap(),
        Admission::Denied { .. }
    ));
    // Another principal has its own bucket.
    assert_eq!(
        b.admit("service/billing", limit).await.unwrap(),
        Admission::Allowed
    );
}

#[tokio::test]
async fn replicas_taking_leases_together_never_exceed_the_shared_bucket() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let replicas = [
        Arc::new(RedisRateLimiter::new(
            redis_at(&url, &prefix),
            Arc::new(NoFallback),
        )),
        Arc::new(RedisRateLimiter::new(
            redis_at(&url, &prefix),
            Arc::new(NoFallback),
        )),
    ];
    let limit = RateLimit {
        per_second: 5_000,
        burst: 1_000,
    };
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let replica = replicas[i % 2].clone();
            tokio::spawn(async move {
                let mut admitted = 0_u32;
                while started.elapsed() < Duration::from_millis(300) {
                    if replica.admit("admin", limit).await.unwrap() == Admission::Allowed {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for caller in callers {
        admitted += caller.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = 1_000.0 + 5_000.0 * elapsed;
    assert!(
        f64::from(admitted) <= most + 1.0,
        "{admitted} admitted by two replicas in {elapsed:.3} s: at most {most:.0}"
    );
    // Each replica holds at most about two leases of 50 it has not spent.
    assert!(
        f64::from(admitted) >= 1_000.0 + 5_000.0 * 0.3 - 4.0 * 50.0,
        "{admitted} admitted in {elapsed:.3} s"
    );
}

/// A TCP server that accepts connections and never answers: a hung Redis.
async fn hung_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("redis://{addr}"), task)
}

#[tokio::test]
async fn a_hung_redis_costs_one_timeout_then_is_skipped_and_limits_fall_back_locally() {
    let (url, server) = hung_server().await;
    let redis = redis_at(&url, "hung:");
    let started = Instant::now();
    let err = redis
        .query::<String>(redis::cmd("GET").arg("x"))
        .await
        .unwrap_err();
    assert_eq!(err, RedisError::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Within the cool-off, calls do not wait at all.
    let started = Instant::now();
    let err = redis
        .query::<String>(redis::cmd("GET").arg("x"))
        .await
        .unwrap_err();
    assert_eq!(err, RedisError::Skipped);
    assert!(started.elapsed() < Duration::from_millis(50));
    assert!(redis.ping().await.is_err(), "health sees it down");

    let limiter = RedisRateLimiter::new(redis, Arc::new(LocalRateLimiter::default()));
    let limit = RateLimit {
        per_second: 1,
        burst: 1,
    };
    assert_eq!(
        limiter.admit("admin", limit).await.unwrap(),
        Admission::Allowed
    );
    assert!(matches!(
        limiter.admit("admin", limit).await.unwrap(),
        Admission::Denied { .. }
    ));
    server.abort();
}

#[tokio::test]
async fn an_invalidation_made_while_the_breaker_is_open_still_reaches_the_other_replicas() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let a_redis = redis_at(&url, &prefix);
    let a = RedisCache::new(
        a_redis.clone(),
        Duration::from_secs(30),
        Arc::new(Counts::default()),
    );
    let b = RedisCache::new(
        redis_at(&url, &prefix),
        Duration::from_secs(30),
        Arc::new(Counts::default()),
    );
    // Replica B caches the tenant.
    let Lookup::Miss(generation) = b.lookup("tenant", "t1").await else {
        panic!("an empty cache misses");
    };
    b.store("tenant", "t1", generation, b"active").await;
    assert!(matches!(b.lookup("tenant", "t1").await, Lookup::Hit(_)));
    // Replica A had a failure a moment ago: its breaker is open when it suspends the tenant.
    let _failed = a_redis
        .query::<String>(&redis::cmd("NO.SUCH.COMMAND"))
        .await
        .unwrap_err();
    assert!(a_redis.is_skipping());
    a.drop_entry("tenant", "t1").await;
    // The invalidation gets through anyway (retried past the breaker): B misses, and A
    // uses the cache again once nothing of its own is pending.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !matches!(b.lookup("tenant", "t1").await, Lookup::Miss(_)) {
        assert!(Instant::now() < deadline, "B still serves the stale entry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !matches!(a.lookup("tenant", "t1").await, Lookup::Miss(_)) {
        assert!(Instant::now() < deadline, "A still reads around the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
