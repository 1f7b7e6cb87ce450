//! The Redis cache end to end on PostgreSQL: reads of GetTenant and VerifyApiKey hit the
//! cache, every change is seen on the very next call (in every replica), nothing in Redis
//! is a plaintext email or secret, and with Redis stopped or paused (SIGSTOP) reads come
//! from PostgreSQL within the deadline while health marks the cache NOT_SERVING.

use std::time::{Duration, Instant};

use deadpool_redis::redis;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_adapters::redis::LocalSettings;
use tenantd_adapters::redis::testing::{test_redis_url, unique_prefix};
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, CreateApiKeyResponse, GetTenantRequest, RevokeApiKeyRequest,
    SuspendTenantRequest, Tenant, TenantStatus, UpdateTenantRequest, VerifyApiKeyRequest,
};
use tenantd_e2e::services::private_redis;
use tenantd_e2e::{
    Backend, TestKeys, TestServer, counter, eventually, health_is, identity, new_tenant,
    postgres_store_with,
};
use tenantd_server::config::{Config, RedisConfig, Secret};
use tenantd_server::devcerts;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn redis_config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: Secret::new(url),
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
        cache_ttl: Duration::from_mins(1),
        local: None,
    }
}

/// A server on `schema` (with `keys`) caching in Redis at `url` under `prefix`.
async fn server_on(schema: &ScratchSchema, keys: &TestKeys, url: &str, prefix: &str) -> TestServer {
    server_with(schema, keys, redis_config(url, prefix)).await
}

/// [`server_on`] with the in-process tier in front of Redis, its entries living a minute
/// (so only invalidation messages can make another replica's change show in time).
async fn tiered_server_on(
    schema: &ScratchSchema,
    keys: &TestKeys,
    url: &str,
    prefix: &str,
) -> TestServer {
    let redis = RedisConfig {
        local: Some(LocalSettings {
            ttl: Duration::from_mins(1),
            max_bytes: 16 << 20,
        }),
        ..redis_config(url, prefix)
    };
    server_with(schema, keys, redis).await
}

async fn server_with(schema: &ScratchSchema, keys: &TestKeys, redis: RedisConfig) -> TestServer {
    let store = postgres_store_with(&schema.url(), keys);
    let prefix = schema.tenant_schema_prefix();
    TestServer::start_with(Backend::Memory, move |mut config| {
        config.tenants.schema_prefix = prefix;
        Config {
            store,
            redis: Some(redis),
            ..config
        }
    })
    .await
    .unwrap()
}

async fn get(server: &TestServer, id: &str) -> Tenant {
    server
        .tenants()
        .await
        .unwrap()
        .get_tenant(GetTenantRequest {
            tenant_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

fn cache_count(text: &str, metric: &str, cache: &str) -> u64 {
    counter(text, metric, &[("cache", cache)])
}

/// Suspends tenant `id` through `server`.
async fn suspend(server: &TestServer, id: &str) {
    server
        .tenants()
        .await
        .unwrap()
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id.into(),
            reason: "abuse".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
}

async fn service_keys(server: &TestServer) -> ApiKeyServiceClient<Channel> {
    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        "spiffe://tenantd.local/service/billing",
        "service-billing",
    )
    .unwrap();
    ApiKeyServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    )
}

async fn verify(keys: &mut ApiKeyServiceClient<Channel>, secret: &str) -> (bool, bool) {
    let verified = keys
        .verify_api_key(VerifyApiKeyRequest {
            api_key: secret.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (verified.valid, verified.tenant_active)
}

/// Every string value under `prefix` in Redis: none holds an address or `secret`, and
/// the tenant `id` is among the entries.
async fn assert_nothing_in_clear(url: &str, prefix: &str, id: &str, secret: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let cached: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        cached.iter().any(|k| k.contains(&format!("tenant:{id}"))),
        "{cached:?}"
    );
    let secret_part = secret.rsplit('_').next().unwrap().to_owned();
    let mut values = 0;
    for key in &cached {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind != "string" {
            continue;
        }
        let raw: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&raw).to_lowercase();
        assert!(
            !text.contains("ops@cached"),
            "an email in clear under {key}"
        );
        assert!(!text.contains('@'), "an address in clear under {key}");
        assert!(
            !text.contains(&secret_part.to_lowercase()),
            "a secret under {key}"
        );
        values += 1;
    }
    assert!(values >= 2, "the tenant and the key are cached");
}

/// An admin's key client and a new key of tenant `id`.
async fn create_key(
    server: &TestServer,
    id: &str,
) -> (ApiKeyServiceClient<Channel>, CreateApiKeyResponse) {
    let mut admin_keys = ApiKeyServiceClient::new(server.admin_channel().await.unwrap());
    let created = admin_keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: id.into(),
            display_name: "deploy".into(),
            scopes: vec!["tenants.read".into()],
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    (admin_keys, created)
}

/// Revokes key `key_id` of tenant `id`.
async fn revoke(admin_keys: &mut ApiKeyServiceClient<Channel>, id: &str, key_id: String) {
    admin_keys
        .revoke_api_key(RevokeApiKeyRequest {
            tenant_id: id.into(),
            key_id,
        })
        .await
        .unwrap();
}

/// Verifies `secret` three times: the first verify records the key's use (a write: the
/// entry is dropped), the second caches it again, the third is a hit.
async fn verify_until_cached(keys: &mut ApiKeyServiceClient<Channel>, secret: &str) {
    for _ in 0..3 {
        assert_eq!(verify(keys, secret).await, (true, true));
    }
}

#[tokio::test]
async fn reads_are_cached_changes_show_at_once_and_redis_holds_nothing_in_clear() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let server = server_on(&schema, &keys, &url, &prefix).await;
    let tenant = server.create_active(new_tenant("cached")).await.unwrap();
    let id = tenant.tenant_id.clone();

    let first = get(&server, &id).await;
    let second = get(&server, &id).await;
    assert_eq!(first, second);
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        cache_count(&metrics, "cache_hits_total", "tenant") >= 1,
        "{metrics}"
    );
    assert!(cache_count(&metrics, "cache_misses_total", "tenant") >= 1);

    // An update is seen by the next read.
    let mut tenants = server.tenants().await.unwrap();
    tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: id.clone(),
                display_name: "Renamed Inc".into(),
                ..Tenant::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(get(&server, &id).await.display_name, "Renamed Inc");

    // API keys: verified through the cache; a revocation fails the very next verify.
    let (mut admin_keys, created) = create_key(&server, &id).await;
    let mut billing = service_keys(&server).await;
    verify_until_cached(&mut billing, &created.secret).await;
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        cache_count(&metrics, "cache_hits_total", "api_key") >= 1,
        "{metrics}"
    );

    assert_nothing_in_clear(&url, &prefix, &id, &created.secret).await;

    // Suspension and revocation: visible on the very next call.
    tenants
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id.clone(),
            reason: "unpaid".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(get(&server, &id).await.status(), TenantStatus::Suspended);
    assert_eq!(verify(&mut billing, &created.secret).await, (true, false));
    revoke(&mut admin_keys, &id, created.api_key.unwrap().key_id).await;
    assert!(!verify(&mut billing, &created.secret).await.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_change_made_through_one_replica_is_seen_at_once_by_another() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let a = server_on(&schema, &keys, &url, &prefix).await;
    let b = server_on(&schema, &keys, &url, &prefix).await;
    let tenant = a.create_active(new_tenant("replicated")).await.unwrap();
    let id = tenant.tenant_id;
    // B reads it twice: the second time from the cache.
    get(&b, &id).await;
    assert_eq!(get(&b, &id).await.status(), TenantStatus::Active);
    let hits = cache_count(
        &b.metrics_text().await.unwrap(),
        "cache_hits_total",
        "tenant",
    );
    assert!(hits >= 1);
    // B verifies a key twice, the second time from the cache...
    let (mut admin_keys, created) = create_key(&a, &id).await;
    let mut billing = service_keys(&b).await;
    verify_until_cached(&mut billing, &created.secret).await;
    // ...A revokes it: B's very next verify refuses it.
    revoke(&mut admin_keys, &id, created.api_key.unwrap().key_id).await;
    assert!(!verify(&mut billing, &created.secret).await.0);
    // A suspends; B's very next read says so.
    suspend(&a, &id).await;
    assert_eq!(get(&b, &id).await.status(), TenantStatus::Suspended);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// How long another replica's change may take to show through the in-process tier when
/// the invalidation subscription works (the README states it).
const TIER_BOUND: Duration = Duration::from_secs(1);

/// Polls `read` until it is `want`; fails past [`TIER_BOUND`]. Returns how long it took.
async fn within_bound<F, Fut, T>(what: &str, want: T, mut read: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: PartialEq + std::fmt::Debug,
{
    let started = Instant::now();
    loop {
        let seen = read().await;
        if seen == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < TIER_BOUND,
            "{what}: still {seen:?} after {TIER_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn with_the_in_process_tier_changes_apply_at_once_on_their_replica_and_within_the_bound_on_others()
 {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let a = tiered_server_on(&schema, &keys, &url, &prefix).await;
    let b = tiered_server_on(&schema, &keys, &url, &prefix).await;
    let tenant = a.create_active(new_tenant("tiered")).await.unwrap();
    let id = tenant.tenant_id;
    let (mut admin_keys, created) = create_key(&a, &id).await;
    let (mut billing_a, mut billing_b) = (service_keys(&a).await, service_keys(&b).await);

    // Both replicas answer from their tier once it is subscribed and filled.
    for (server, billing) in [(&a, &mut billing_a), (&b, &mut billing_b)] {
        let started = Instant::now();
        loop {
            verify_until_cached(billing, &created.secret).await;
            get(server, &id).await;
            get(server, &id).await;
            let metrics = server.metrics_text().await.unwrap();
            if cache_count(&metrics, "cache_local_hits_total", "api_key") >= 1
                && cache_count(&metrics, "cache_local_hits_total", "tenant") >= 1
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the tier did not answer within 10 s: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let redis_hits = cache_count(
        &b.metrics_text().await.unwrap(),
        "cache_hits_total",
        "api_key",
    );
    for _ in 0..20 {
        assert_eq!(verify(&mut billing_b, &created.secret).await, (true, true));
    }
    assert_eq!(
        cache_count(
            &b.metrics_text().await.unwrap(),
            "cache_hits_total",
            "api_key"
        ),
        redis_hits,
        "tier hits do not ask Redis"
    );

    // A revokes: A's very next verify refuses it, B's within the bound.
    revoke(&mut admin_keys, &id, created.api_key.unwrap().key_id).await;
    assert!(!verify(&mut billing_a, &created.secret).await.0);
    let started = Instant::now();
    while verify(&mut billing_b, &created.secret).await.0 {
        assert!(
            started.elapsed() < TIER_BOUND,
            "B still verifies the revoked key after {TIER_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!("B saw the revocation {took:?} after A's answer");

    // A suspends: A's very next read says so, B's within the bound.
    suspend(&a, &id).await;
    assert_eq!(get(&a, &id).await.status(), TenantStatus::Suspended);
    within_bound(
        "B's read after the suspension",
        TenantStatus::Suspended,
        || {
            let (b, id) = (&b, &id);
            async move { get(b, id).await.status() }
        },
    )
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Reads keep working within the deadline while Redis is in `trouble`, health marks the
/// cache NOT_SERVING (the service stays SERVING), and the cache is used again after.
async fn reads_survive(
    server: &TestServer,
    id: &str,
    health: &HealthClient<Channel>,
    trouble: &str,
) {
    for _ in 0..5 {
        let started = Instant::now();
        let tenant = tokio::time::timeout(Duration::from_secs(5), get(server, id))
            .await
            .unwrap_or_else(|_| panic!("a read hung with Redis {trouble}"));
        assert_eq!(tenant.tenant_id, id);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a read took {:?} with Redis {trouble}",
            started.elapsed()
        );
    }
    eventually(
        &format!("health cache NOT_SERVING with Redis {trouble}"),
        Duration::from_secs(10),
        || health_is(health, "cache", ServingStatus::NotServing),
    )
    .await;
    assert!(health_is(health, "", ServingStatus::Serving).await);
    assert!(health_is(health, "tenant.v1.TenantService", ServingStatus::Serving).await);
}

async fn cache_used_again(server: &TestServer, id: &str, health: &HealthClient<Channel>) {
    eventually(
        "health cache SERVING again",
        Duration::from_secs(10),
        || health_is(health, "cache", ServingStatus::Serving),
    )
    .await;
    let before = cache_count(
        &server.metrics_text().await.unwrap(),
        "cache_hits_total",
        "tenant",
    );
    eventually(
        "reads hit the cache again",
        Duration::from_secs(10),
        || async {
            get(server, id).await;
            cache_count(
                &server.metrics_text().await.unwrap(),
                "cache_hits_total",
                "tenant",
            ) > before
        },
    )
    .await;
}

#[tokio::test]
async fn with_redis_paused_or_stopped_reads_come_from_postgres_and_the_cache_returns() {
    let mut redis = private_redis().await.unwrap();
    let url = format!("redis://{}", redis.addr);
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let server = server_on(&schema, &keys, &url, &unique_prefix()).await;
    let id = server
        .create_active(new_tenant("survivor"))
        .await
        .unwrap()
        .tenant_id;
    get(&server, &id).await;
    get(&server, &id).await;
    let health = HealthClient::new(server.admin_channel().await.unwrap());

    // Paused: accepts connections, answers nothing.
    redis.pause().unwrap();
    reads_survive(&server, &id, &health, "paused").await;
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        cache_count(&metrics, "cache_errors_total", "tenant")
            + cache_count(&metrics, "cache_bypassed_total", "tenant")
            >= 1,
        "{metrics}"
    );
    redis.resume().unwrap();
    cache_used_again(&server, &id, &health).await;

    // Stopped: connections refused.
    redis.kill().await.unwrap();
    reads_survive(&server, &id, &health, "stopped").await;
    redis.start().await.unwrap();
    cache_used_again(&server, &id, &health).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_change_made_while_redis_hangs_is_never_read_stale_once_redis_answers_again() {
    let redis = private_redis().await.unwrap();
    let url = format!("redis://{}", redis.addr);
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let server = server_on(&schema, &keys, &url, &unique_prefix()).await;
    let id = server
        .create_active(new_tenant("changed-in-the-dark"))
        .await
        .unwrap()
        .tenant_id;
    let health = HealthClient::new(server.admin_channel().await.unwrap());
    // Cached as ACTIVE in Redis (and in the in-process tier).
    get(&server, &id).await;
    cache_used_again(&server, &id, &health).await;

    // The suspension cannot drop the Redis entry: Redis accepts and answers nothing.
    redis.pause().unwrap();
    suspend(&server, &id).await;
    for _ in 0..5 {
        assert_eq!(get(&server, &id).await.status(), TenantStatus::Suspended);
    }
    redis.resume().unwrap();

    // From then on every read, from PostgreSQL or from the cache again, is the change.
    let until = Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    while Instant::now() < until {
        let tenant = get(&server, &id).await;
        assert_eq!(
            tenant.status(),
            TenantStatus::Suspended,
            "read {reads} after Redis returned is stale"
        );
        reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cache_used_again(&server, &id, &health).await;
    assert_eq!(get(&server, &id).await.status(), TenantStatus::Suspended);
    server.stop().await.unwrap();
}
