//! PostgreSQL going away under a running server: calls fail fast with UNAVAILABLE, health
//! reports the database (and the service) NOT_SERVING, and everything recovers by itself
//! when the database is back. The database is cut through a local proxy, so the shared
//! server other tests use is never touched.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use tenantd_adapters::postgres::testing::test_database_url;
use tenantd_e2e::pb::GetTenantRequest;
use tenantd_e2e::proxy::FaultProxy;
use tenantd_e2e::{
    Backend, TestServer, assert_reason, create, eventually, health_is, new_tenant, postgres_store,
};
use tenantd_server::config::Store;
use tonic::Code;
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

#[tokio::test]
async fn losing_postgres_makes_calls_unavailable_and_health_not_serving_until_it_returns() {
    let options = PgConnectOptions::from_str(&test_database_url()).unwrap();
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let acquire_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(Backend::Postgres, |config| {
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
    .unwrap();
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
    for service in ["database", ""] {
        eventually(
            &format!("health {service:?} NOT_SERVING"),
            Duration::from_secs(10),
            || health_is(&health, service, ServingStatus::NotServing),
        )
        .await;
    }

    proxy.restore();
    eventually("GetTenant answers again", Duration::from_secs(15), || {
        let mut tenants = tenants.clone();
        let get = get.clone();
        async move { tenants.get_tenant(get).await.is_ok() }
    })
    .await;
    for service in ["database", ""] {
        eventually(
            &format!("health {service:?} SERVING again"),
            Duration::from_secs(10),
            || health_is(&health, service, ServingStatus::Serving),
        )
        .await;
    }
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
