//! Per-principal rate limits: a tenant over its plan's rate and an admin over the
//! configured one get RESOURCE_EXHAUSTED with google.rpc.RetryInfo; replicas share one
//! budget through Redis, and without a reachable Redis each limits on its own.

use std::time::Duration;

use tenantd_adapters::redis::testing::{test_redis_url, unique_prefix};
use tenantd_application::RateLimitSettings;
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{GetTenantRequest, ListPlansRequest, Tenant};
use tenantd_e2e::{Backend, TestServer, assert_reason, counter, identity, new_tenant};
use tenantd_server::config::{Config, RedisConfig, Secret};
use tenantd_server::devcerts;
use tonic::Code;
use tonic_types::StatusExt as _;

/// The delay a RESOURCE_EXHAUSTED status asks for.
fn retry_delay(status: &tonic::Status) -> Duration {
    assert_reason(status, Code::ResourceExhausted, "RATE_LIMITED");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

/// A server (its own in-memory store) whose admins may make `admin_rps` calls a second,
/// sharing buckets through Redis at `redis` (under `prefix`) if given.
async fn server(admin_rps: u32, redis: Option<(&str, &str)>) -> TestServer {
    let redis = redis.map(|(url, prefix)| RedisConfig {
        url: Secret::new(url),
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
        cache_ttl: Duration::from_secs(30),
        local: None,
    });
    TestServer::start_with(Backend::Memory, move |config| Config {
        rate_limits: RateLimitSettings {
            admin_per_second: admin_rps,
            service_per_second: 0,
        },
        redis,
        ..config
    })
    .await
    .unwrap()
}

async fn list_plans(server: &TestServer) -> Result<(), tonic::Status> {
    PlanServiceClient::new(server.admin_channel().await.unwrap())
        .list_plans(ListPlansRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_tenant_over_its_plans_rate_gets_resource_exhausted_with_retry_info() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    // The free plan allows 5 requests per second.
    let tenant = server
        .create_active(Tenant {
            plan_id: "free".into(),
            ..new_tenant("busy")
        })
        .await
        .unwrap();
    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        &format!("spiffe://tenantd.local/tenant/{}", tenant.tenant_id),
        "tenant-busy",
    )
    .unwrap();
    let mut client = TenantServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    );
    let mut admitted = 0;
    let refused = loop {
        match client
            .get_tenant(GetTenantRequest {
                tenant_id: tenant.tenant_id.clone(),
            })
            .await
        {
            Ok(_) => admitted += 1,
            Err(status) => break status,
        }
        // 5 at once, plus what refills (one per 200 ms) while the calls run.
        assert!(
            admitted <= 8,
            "not limited to 5 per second: {admitted} admitted"
        );
    };
    assert!(admitted >= 5, "the burst of 5 was admitted, got {admitted}");
    let delay = retry_delay(&refused);
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_millis(200),
        "one token of 5/s: {delay:?}"
    );
    assert!(refused.message().contains("rate limit"), "{refused:?}");
    // The admin's budget is another one.
    list_plans(&server).await.unwrap();
    // After the delay, the tenant is admitted again.
    tokio::time::sleep(delay).await;
    client
        .get_tenant(GetTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap();
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        counter(
            &metrics,
            "rate_limited_requests_total",
            &[("role", "tenant")]
        ) >= 1
    );
    assert!(
        counter(
            &metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "GetTenant"),
                ("grpc_code", "ResourceExhausted")
            ]
        ) >= 1,
        "refused calls are counted like any other"
    );
}

#[tokio::test]
async fn two_replicas_share_one_budget_through_redis() {
    let url = test_redis_url().await;
    let prefix = unique_prefix();
    let a = server(1, Some((&url, &prefix))).await;
    let b = server(1, Some((&url, &prefix))).await;
    list_plans(&a).await.unwrap();
    // B has not been called yet, but the admin's one request this second went to A.
    let refused = list_plans(&b).await.unwrap_err();
    let delay = retry_delay(&refused);
    assert!(delay <= Duration::from_secs(1), "{delay:?}");
    assert_reason(
        &list_plans(&a).await.unwrap_err(),
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
}

#[tokio::test]
async fn without_a_reachable_redis_each_replica_limits_on_its_own() {
    // A port nothing listens on: Redis refuses.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let a = server(1, Some((&url, "unreachable:"))).await;
    let b = server(1, Some((&url, "unreachable:"))).await;
    list_plans(&a).await.unwrap();
    // B's bucket is its own now: its one request this second is admitted...
    list_plans(&b).await.unwrap();
    // ...and each replica still holds the admin to its rate.
    let refused = list_plans(&a).await.unwrap_err();
    assert!(retry_delay(&refused) <= Duration::from_secs(1));
    assert_reason(
        &list_plans(&b).await.unwrap_err(),
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
}
