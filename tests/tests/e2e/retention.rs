//! Retention on a real server and PostgreSQL, with the broker down: published events and
//! audit records past their retention are deleted by the sweeper; an unpublished event is
//! never deleted, however old.

use std::time::Duration;

use sqlx::PgPool;
use tenantd_e2e::{Backend, TestServer, counter, create, eventually, new_tenant, settle};
use tenantd_server::config::{Config, KafkaConfig};
use uuid::Uuid;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn events_of(pool: &PgPool, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn audit_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT audit_id FROM audit_records WHERE principal = 'retention-test'")
        .fetch_all(pool)
        .await
        .expect("audit")
}

/// A Kafka configuration whose broker is never reachable: events stay unpublished.
fn unreachable_kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: format!("127.0.0.1:{}", closed_port()),
        topic: format!("tenant.events.test-{}", Uuid::new_v4().simple()),
        partitions: 1,
        replication_factor: -1,
        message_timeout: Duration::from_millis(500),
        max_message_bytes: 1_000_000,
        poll_interval: Duration::from_millis(50),
        batch_size: 100,
        max_delivery_attempts: 10,
    }
}

#[tokio::test]
async fn the_sweeper_trims_published_events_and_old_audit_records_and_keeps_unpublished_events() {
    let kafka = unreachable_kafka();
    let server = TestServer::start_with(Backend::Postgres, move |mut config| {
        config.retention.interval = Duration::from_millis(200);
        Config {
            kafka: Some(kafka),
            ..config
        }
    })
    .await
    .expect("server");
    let pool = PgPool::connect(&server.schema().expect("schema").url())
        .await
        .expect("pool");
    let mut tenants = server.tenants().await.expect("client");
    let published = create(&mut tenants, new_tenant("kept-published"))
        .await
        .expect("create");
    let unpublished = create(&mut tenants, new_tenant("kept-unpublished"))
        .await
        .expect("create");
    // Provisioning writes events too: let both runs end before the events are aged.
    let mut provisioning = server.provisioning().await.expect("client");
    for tenant in [&published, &unpublished] {
        settle(&mut provisioning, &tenant.tenant_id)
            .await
            .expect("settled");
    }
    let (published, unpublished) = (
        Uuid::parse_str(&published.tenant_id).expect("id"),
        Uuid::parse_str(&unpublished.tenant_id).expect("id"),
    );
    // Every event is 200 days old; the broker never took any, so pretend one tenant's were
    // published before it went down.
    sqlx::query("UPDATE tenant_events SET occurred_at = now() - interval '200 days'")
        .execute(&pool)
        .await
        .expect("age events");
    let marked = sqlx::query(
        "UPDATE tenant_events SET published_at = now() - interval '199 days' WHERE tenant_id = $1",
    )
    .bind(published)
    .execute(&pool)
    .await
    .expect("publish")
    .rows_affected();
    assert!(marked > 0, "the created tenant has events");
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO audit_records (audit_id, principal, method, code, at, request_id) VALUES \
         ($1, 'retention-test', '/tenant.v1.TenantService/DeleteTenant', 'OK', \
          now() - interval '401 days', 'r1'), \
         ($2, 'retention-test', '/tenant.v1.TenantService/DeleteTenant', 'OK', \
          now() - interval '399 days', 'r2')",
    )
    .bind(old)
    .bind(recent)
    .execute(&pool)
    .await
    .expect("audit records");
    let unpublished_before = events_of(&pool, unpublished).await;
    assert!(unpublished_before > 0);

    eventually(
        "the published events are trimmed",
        Duration::from_secs(10),
        || async { events_of(&pool, published).await == 0 },
    )
    .await;
    eventually(
        "the old audit record is trimmed",
        Duration::from_secs(10),
        || async { audit_ids(&pool).await == vec![recent] },
    )
    .await;
    assert_eq!(
        events_of(&pool, unpublished).await,
        unpublished_before,
        "an unpublished event is never trimmed"
    );
    let metrics = server.metrics_text().await.expect("metrics");
    assert_eq!(
        counter(
            &metrics,
            "retention_deleted_rows_total",
            &[("table", "tenant_events")]
        ),
        marked
    );
    assert_eq!(
        counter(
            &metrics,
            "retention_deleted_rows_total",
            &[("table", "audit_records")]
        ),
        1
    );
}
