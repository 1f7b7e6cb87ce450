//! PostgreSQL going away under a running server: calls fail fast with UNAVAILABLE, health
//! reports the database (and the service) NOT_SERVING, and everything recovers by itself
//! when the database is back. A database that hangs (accepts, answers nothing) ends calls
//! at their deadline. Sessions terminated under 32 concurrent creates lose no
//! acknowledged tenant and make none twice. The database is cut, hung or terminated
//! through a local proxy (only the sessions it carries), so the shared server other
//! tests use is never touched.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use prost::Message as _;
use prost_types::FieldMask;
use sqlx::Connection as _;
use sqlx::postgres::PgConnectOptions;
use tenantd_adapters::postgres::testing::test_database_url;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{CreateTenantRequest, GetTenantRequest, Tenant, UpdateTenantRequest};
use tenantd_e2e::proxy::FaultProxy;
use tenantd_e2e::{
    Backend, TestServer, assert_reason, create, eventually, health_is, new_tenant, postgres_store,
};
use tenantd_server::config::Store;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `url` with its host:port replaced by `addr` (user, database and options kept).
fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{userinfo}{addr}{tail}")
}

/// Waits (10 s at most) until health reports `status` for `database` and the server.
async fn database_health_is(health: &HealthClient<Channel>, status: ServingStatus) {
    for service in ["database", ""] {
        eventually(
            &format!("health {service:?} {status:?}"),
            Duration::from_secs(10),
            || health_is(health, service, status),
        )
        .await;
    }
}

/// Restores `proxy` and waits until `get` answers again and health is SERVING.
async fn restore_and_recover(
    proxy: &FaultProxy,
    tenants: &TenantServiceClient<Channel>,
    get: &GetTenantRequest,
    health: &HealthClient<Channel>,
) {
    proxy.restore();
    eventually("GetTenant answers again", Duration::from_secs(15), || {
        let mut tenants = tenants.clone();
        let get = get.clone();
        async move { tenants.get_tenant(get).await.is_ok() }
    })
    .await;
    database_health_is(health, ServingStatus::Serving).await;
}

#[tokio::test]
async fn losing_postgres_makes_calls_unavailable_and_health_not_serving_until_it_returns() {
    let proxy = proxy_to_postgres().await;
    let acquire_timeout = Duration::from_secs(1);
    let server = server_via(&proxy, acquire_timeout).await;
    let mut tenants = server.tenants().await.unwrap();
    let health = HealthClient::new(server.admin_channel().await.unwrap());
    let tenant = create(&mut tenants, new_tenant("outage")).await.unwrap();
    let get = GetTenantRequest {
        tenant_id: tenant.tenant_id.clone(),
    };

    proxy.cut();
    let started = Instant::now();
    let status = tenants.get_tenant(get.clone()).await.unwrap_err();
    assert_reason(&status, Code::Unavailable, "DEPENDENCY_UNAVAILABLE");
    assert!(
        started.elapsed() < acquire_timeout + Duration::from_secs(2),
        "UNAVAILABLE took {:?}",
        started.elapsed()
    );
    database_health_is(&health, ServingStatus::NotServing).await;

    restore_and_recover(&proxy, &tenants, &get, &health).await;
}

/// A server on a scratch schema whose database connections go through `proxy`, with
/// `acquire_timeout` for a pool connection.
pub(crate) async fn server_via(proxy: &FaultProxy, acquire_timeout: Duration) -> TestServer {
    TestServer::start_with(Backend::Postgres, |config| {
        let Store::Postgres { url, .. } = &config.store else {
            unreachable!()
        };
        let mut store = postgres_store(&via(url.expose(), proxy.addr()));
        if let Store::Postgres { pool, .. } = &mut store {
            pool.acquire_timeout = acquire_timeout;
        }
        tenantd_server::Config { store, ..config }
    })
    .await
    .unwrap()
}

pub(crate) async fn proxy_to_postgres() -> FaultProxy {
    let options = PgConnectOptions::from_str(&test_database_url()).unwrap();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    FaultProxy::start(upstream).await.unwrap()
}

#[tokio::test]
async fn a_hung_postgres_ends_calls_at_their_deadline_reports_not_serving_and_recovers() {
    let proxy = proxy_to_postgres().await;
    let server = server_via(&proxy, Duration::from_secs(1)).await;
    let mut tenants = server.tenants().await.unwrap();
    let health = HealthClient::new(server.admin_channel().await.unwrap());
    // Active: provisioning is done, so nothing but the update could change the tenant.
    let tenant = server.create_active(new_tenant("hung")).await.unwrap();
    let get = GetTenantRequest {
        tenant_id: tenant.tenant_id.clone(),
    };

    proxy.hang();
    // Calls whose queries are stuck on the wire end at their deadline (the client's
    // grpc-timeout here); once every connection is stuck, a wait for one ends at the
    // acquire timeout with UNAVAILABLE.
    for _ in 0..3 {
        let started = Instant::now();
        let status = crate::limits::raw_unary(
            &server,
            "/tenant.v1.TenantService/GetTenant",
            &get.encode_to_vec(),
            &[("grpc-timeout", "500m")],
        )
        .await;
        let took = started.elapsed();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{status:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "answered after {took:?}"
        );
    }
    let rename = UpdateTenantRequest {
        tenant: Some(Tenant {
            display_name: "Renamed While Hung".to_owned(),
            ..tenant.clone()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["display_name".to_owned()],
        }),
    };
    let status = crate::limits::raw_unary(
        &server,
        "/tenant.v1.TenantService/UpdateTenant",
        &rename.encode_to_vec(),
        &[("grpc-timeout", "500m")],
    )
    .await;
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    database_health_is(&health, ServingStatus::NotServing).await;

    restore_and_recover(&proxy, &tenants, &get, &health).await;
    let after = tenants
        .get_tenant(get)
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(
        after.display_name, tenant.display_name,
        "an abandoned update landed"
    );
    assert_eq!(after.etag, tenant.etag);
}

/// Terminates (`pg_terminate_backend`) every session `proxy` carries, until `stop`; how
/// many it terminated.
async fn terminate_sessions(proxy: &FaultProxy, stop: &tokio_util::sync::CancellationToken) -> u64 {
    let mut admin = sqlx::PgConnection::connect(&test_database_url())
        .await
        .unwrap();
    let mut terminated = 0;
    while !stop.is_cancelled() {
        let ports: Vec<i32> = proxy.upstream_ports().into_iter().map(i32::from).collect();
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE client_addr = '127.0.0.1' AND client_port = ANY($1) AND pid <> pg_backend_pid()",
        )
        .bind(&ports)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        terminated += u64::try_from(killed).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminated
}

/// What one caller saw: the tenant id of each successful answer, the failures by code.
#[derive(Debug, Default)]
struct Outcome {
    answers: Vec<String>,
    failures: Vec<Code>,
}

/// Creates `slug` with one request id until it is acknowledged, then asks again with the
/// same id (a client that lost the answer).
async fn create_until_acknowledged(
    mut tenants: TenantServiceClient<Channel>,
    slug: String,
) -> (String, Outcome) {
    let request = CreateTenantRequest {
        tenant: Some(new_tenant(&slug)),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let mut outcome = Outcome::default();
    let started = Instant::now();
    while outcome.answers.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "{slug} never acknowledged: {outcome:?}"
        );
        match tenants.create_tenant(request.clone()).await {
            Ok(answer) => outcome
                .answers
                .push(answer.into_inner().tenant.unwrap().tenant_id),
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::Aborted),
                    "{slug}: {status:?}"
                );
                outcome.failures.push(status.code());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (slug, outcome)
}

#[tokio::test]
async fn sessions_terminated_during_32_concurrent_creates_lose_no_acknowledged_tenant_and_make_none_twice()
 {
    let proxy = proxy_to_postgres().await;
    let server = server_via(&proxy, Duration::from_secs(2)).await;
    // One connection, as a client library keeps one: the 32 calls are streams on it.
    let tenants = server.tenants().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (killer, answered) = tokio::join!(terminate_sessions(&proxy, &stop), async {
        let outcomes = futures::future::join_all(
            (0..32).map(|i| create_until_acknowledged(tenants.clone(), format!("terminated-{i}"))),
        )
        .await;
        stop.cancel();
        outcomes
    });
    assert!(killer > 0, "no session was terminated");
    let failures: usize = answered.iter().map(|(_, o)| o.failures.len()).sum();
    assert!(failures > 0, "no create met a terminated session");

    let pool = sqlx::PgPool::connect(&server.schema().unwrap().url())
        .await
        .unwrap();
    for (slug, outcome) in &answered {
        assert!(
            outcome.answers.iter().all(|id| *id == outcome.answers[0]),
            "{slug}: a retry with the same request id got another tenant: {outcome:?}"
        );
        let stored: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE slug = $1")
                .bind(slug)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(stored.len(), 1, "{slug} stored {} times", stored.len());
        assert_eq!(stored[0].to_string(), outcome.answers[0], "{slug}");
    }
    eprintln!("{killer} sessions terminated, {failures} creates refused and retried");
}

#[test]
fn via_replaces_only_host_and_port() {
    let addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    assert_eq!(
        via(
            "postgres://app:pw@db.internal:5432/tenantd?options[search_path]=s",
            addr
        ),
        "postgres://app:pw@127.0.0.1:6000/tenantd?options[search_path]=s"
    );
    assert_eq!(
        via("postgres://localhost/x", addr),
        "postgres://127.0.0.1:6000/x"
    );
}
