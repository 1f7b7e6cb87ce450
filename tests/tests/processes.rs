//! The real `tenantd` binary on PostgreSQL: durability across SIGKILL, and several replicas
//! starting together on an empty database.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers take the server as an argument, so they are not #[test] fns; a failed unwrap fails the test"
)]

use tenantd_adapters::postgres::MIGRATOR;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{GetTenantRequest, ListTenantEventsRequest};
use tenantd_e2e::process::{TenantdProcess, binary};
use tenantd_e2e::{TestKeys, admin_channel, create, new_tenant};
use tenantd_server::devcerts::{self, DevCerts};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn certs() -> (tempfile::TempDir, DevCerts) {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    (dir, certs)
}

#[tokio::test]
async fn a_tenant_acknowledged_before_sigkill_is_there_after_restart_with_its_events() {
    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();

    let first = TenantdProcess::start(&schema.url(), dir.path(), &keys)
        .await
        .unwrap();
    let channel = admin_channel(first.grpc_addr, &certs).await.unwrap();
    let created = create(
        &mut TenantServiceClient::new(channel),
        new_tenant("durable"),
    )
    .await
    .unwrap();
    first.kill().await.unwrap();

    let second = TenantdProcess::start(&schema.url(), dir.path(), &keys)
        .await
        .unwrap();
    let channel = admin_channel(second.grpc_addr, &certs).await.unwrap();
    let read = TenantServiceClient::new(channel.clone())
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(read, created);
    let events = EventServiceClient::new(channel)
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: created.tenant_id.clone(),
            ..ListTenantEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        matches!(events.first().and_then(|e| e.payload.as_ref()), Some(Payload::TenantCreated(c)) if c.slug == "durable"),
        "{events:?}"
    );
}

#[tokio::test]
async fn three_replicas_started_together_on_an_empty_database_all_become_healthy() {
    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();
    let url = schema.url();
    let (a, b, c) = tokio::join!(
        TenantdProcess::start(&url, dir.path(), &keys),
        TenantdProcess::start(&url, dir.path(), &keys),
        TenantdProcess::start(&url, dir.path(), &keys),
    );
    for replica in [a.unwrap(), b.unwrap(), c.unwrap()] {
        let mut health = HealthClient::new(admin_channel(replica.grpc_addr, &certs).await.unwrap());
        for service in ["", "database"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service:?}");
        }
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (applied, succeeded): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE success) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
    let expected = i64::try_from(MIGRATOR.iter().count()).unwrap();
    assert_eq!((applied, succeeded), (expected, expected));
}

#[tokio::test]
async fn migrate_subcommand_applies_the_migrations_and_exits() {
    let schema = ScratchSchema::create().await.unwrap();
    let output = tokio::process::Command::new(binary().unwrap())
        .arg("migrate")
        .envs(TestKeys::generate().env())
        .env("TENANTD_DATABASE_URL", schema.url())
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_name IN ('tenants', 'plans', 'idempotency_records', 'tenant_events')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 4);
}

#[tokio::test]
async fn a_bad_or_unreachable_database_stops_startup_with_one_line_and_no_password() {
    let (dir, _certs) = certs();
    for url in [
        "postgres://app:hunter2@127.0.0.1:1/tenantd",
        "postgres://app:hunter2@[::1/tenantd",
    ] {
        let output = tokio::process::Command::new(binary().unwrap())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--dev-certs-dir")
            .arg(dir.path())
            .envs(TestKeys::generate().env())
            .env("TENANTD_DATABASE_URL", url)
            .env_remove("DATABASE_URL")
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{url} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("tenantd: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("database-url"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}
