//! The outbox relayed to a real Kafka-protocol broker (tansu; any Kafka works the same),
//! read back by an independent consumer (Python confluent-kafka decoding with the protos):
//! every event arrives once or more and none is lost, with CloudEvents headers, keyed by
//! tenant and in each tenant's order, also across a broker paused (SIGSTOP) during creates
//! and a broker stopped during creates and restarted without its data.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sqlx::PgPool;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::pb::{ListTenantEventsRequest, SuspendTenantRequest};
use tenantd_e2e::services::{
    Consumed, consume_events, kafka_brokers, private_broker, unique_topic,
};
use tenantd_e2e::{Backend, TestServer, counter, eventually, health_is, new_tenant};
use tenantd_server::config::{Config, KafkaConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

fn kafka(brokers: &str, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        partitions: 3,
        replication_factor: -1,
        message_timeout: Duration::from_millis(1500),
        max_message_bytes: 1_000_000,
        poll_interval: Duration::from_millis(50),
        batch_size: 100,
        max_delivery_attempts: 10,
    }
}

async fn server(brokers: &str, topic: &str) -> TestServer {
    let kafka = kafka(brokers, topic);
    TestServer::start_with(Backend::Postgres, move |config| Config {
        kafka: Some(kafka),
        ..config
    })
    .await
    .unwrap()
}

async fn pool(schema: &ScratchSchema) -> PgPool {
    PgPool::connect(&schema.url()).await.unwrap()
}

/// The outbox as stored: (event id, tenant id, type), in id order.
async fn outbox(pool: &PgPool) -> Vec<(Uuid, Uuid, String)> {
    sqlx::query_as("SELECT event_id, tenant_id, event_type FROM tenant_events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenant_events WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn drained(pool: &PgPool, limit: Duration) {
    eventually("every outbox event published", limit, || async {
        unpublished(pool).await == 0
    })
    .await;
}

/// Waits (at most 15 s) until `metric` reads above 0.
async fn metric_rises(server: &TestServer, metric: &str) {
    eventually(
        &format!("{metric} above 0"),
        Duration::from_secs(15),
        || async { counter(&server.metrics_text().await.unwrap(), metric, &[]) > 0 },
    )
    .await;
}

/// Every stored event was consumed, each message is well-formed, and each tenant's events
/// first appear in the order they were written.
fn assert_delivered(stored: &[(Uuid, Uuid, String)], consumed: &[Consumed]) {
    let types: HashMap<String, &str> = stored
        .iter()
        .map(|(id, _, kind)| (id.to_string(), kind.as_str()))
        .collect();
    let distinct: BTreeSet<&str> = consumed.iter().map(Consumed::event_id).collect();
    let expected: BTreeSet<String> = stored.iter().map(|(id, _, _)| id.to_string()).collect();
    assert_eq!(
        distinct,
        expected.iter().map(String::as_str).collect(),
        "none lost, none unknown"
    );
    for message in consumed {
        let id = message.event_id();
        assert_eq!(message.header("ce_id"), Some(id));
        assert_eq!(message.header("ce_specversion"), Some("1.0"));
        assert_eq!(message.header("ce_type"), types.get(id).copied());
        assert_eq!(
            message.header("ce_source"),
            Some("urn:tenantd:tenantd.local")
        );
        assert_eq!(message.header("content-type"), Some("application/protobuf"));
        let tenant = message.event["tenant_id"].as_str().unwrap();
        assert_eq!(message.key, tenant);
        assert_eq!(message.header("ce_subject"), Some(tenant));
        let time = message.header("ce_time").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        // The payload case names the type: tenant_created <-> tenant.v1.TenantCreated.
        let pascal: String = message
            .payload_case
            .split('_')
            .map(|w| w[..1].to_uppercase() + &w[1..])
            .collect();
        assert_eq!(
            message.header("ce_type"),
            Some(format!("tenant.v1.{pascal}").as_str())
        );
    }
    let mut tenants: HashMap<String, Vec<String>> = HashMap::new();
    for (id, tenant, _) in stored {
        tenants
            .entry(tenant.to_string())
            .or_default()
            .push(id.to_string());
    }
    for (tenant, written) in tenants {
        let mut seen = BTreeSet::new();
        let first_seen: Vec<String> = consumed
            .iter()
            .filter(|m| m.key == tenant)
            .map(|m| m.event_id().to_owned())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        assert_eq!(first_seen, written, "tenant {tenant}'s events in order");
    }
}

#[tokio::test]
async fn every_event_reaches_kafka_decodable_with_cloudevents_headers_in_tenant_order() {
    let brokers = kafka_brokers();
    let topic = unique_topic();
    let server = server(&brokers, &topic).await;
    let mut created = Vec::new();
    for i in 0..8 {
        created.push(
            server
                .create_active(new_tenant(&format!("kafka-{i}")))
                .await
                .unwrap(),
        );
    }
    let pool = pool(server.schema().unwrap()).await;
    drained(&pool, Duration::from_secs(30)).await;
    let stored = outbox(&pool).await;
    let consumed = consume_events(&brokers, &topic, stored.len(), Duration::from_mins(1))
        .await
        .unwrap();
    assert_delivered(&stored, &consumed);
    // Each created tenant's TenantCreated carries its slug.
    for tenant in &created {
        let event = consumed
            .iter()
            .find(|m| m.key == tenant.tenant_id && m.payload_case == "tenant_created")
            .unwrap_or_else(|| panic!("no TenantCreated for {}", tenant.tenant_id));
        assert_eq!(event.event["tenant_created"]["slug"], tenant.slug.as_str());
    }
    let metrics = server.metrics_text().await.unwrap();
    assert!(counter(&metrics, "outbox_events_published_total", &[]) >= stored.len() as u64);
    eventually(
        "the backlog gauge reads 0",
        Duration::from_secs(5),
        || async {
            counter(
                &server.metrics_text().await.unwrap(),
                "outbox_backlog_events",
                &[],
            ) == 0
        },
    )
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_broker_outage_during_creates_loses_no_event_and_keeps_each_tenants_order() {
    let broker = private_broker().await.unwrap();
    let brokers = broker.addr.to_string();
    let topic = unique_topic();
    let server = server(&brokers, &topic).await;
    let health = HealthClient::new(server.admin_channel().await.unwrap());
    let pool = pool(server.schema().unwrap()).await;
    let before = server.create_active(new_tenant("before")).await.unwrap();
    drained(&pool, Duration::from_secs(30)).await;

    broker.pause().unwrap();
    let mut tenants = server.tenants().await.unwrap();
    for i in 0..5 {
        server
            .create_active(new_tenant(&format!("during-{i}")))
            .await
            .expect("creates succeed while the broker is down");
    }
    tenants
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: before.tenant_id.clone(),
            reason: "during the outage".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    eventually(
        "health publisher NOT_SERVING",
        Duration::from_secs(15),
        || health_is(&health, "publisher", ServingStatus::NotServing),
    )
    .await;
    assert!(health_is(&health, "", ServingStatus::Serving).await);
    metric_rises(&server, "outbox_backlog_events").await;
    assert!(unpublished(&pool).await > 0, "events wait in the outbox");
    let metrics = server.metrics_text().await.unwrap();
    let age = metrics
        .lines()
        .find_map(|l| l.strip_prefix("outbox_oldest_unpublished_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no oldest-age gauge in {metrics}"));
    assert!(age > 0.0, "the oldest waiting event has an age: {age}");
    // Deliveries are bounded by message.timeout.ms: they fail, and are retried later.
    metric_rises(&server, "outbox_publish_errors_total").await;

    broker.resume().unwrap();
    drained(&pool, Duration::from_mins(1)).await;
    eventually(
        "health publisher SERVING again",
        Duration::from_secs(15),
        || health_is(&health, "publisher", ServingStatus::Serving),
    )
    .await;
    let stored = outbox(&pool).await;
    let consumed = consume_events(&brokers, &topic, stored.len(), Duration::from_mins(1))
        .await
        .unwrap();
    assert_delivered(&stored, &consumed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_broker_restarted_without_its_data_gets_the_topic_again_and_every_waiting_event() {
    let mut broker = private_broker().await.unwrap();
    let brokers = broker.addr.to_string();
    let topic = unique_topic();
    let server = server(&brokers, &topic).await;
    let pool = pool(server.schema().unwrap()).await;
    server.create_active(new_tenant("early")).await.unwrap();
    drained(&pool, Duration::from_secs(30)).await;

    // Stopped: every create still succeeds, and its events wait.
    broker.kill().await.unwrap();
    for i in 0..4 {
        server
            .create_active(new_tenant(&format!("stopped-{i}")))
            .await
            .expect("creates succeed while the broker is stopped");
    }
    let waiting: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM tenant_events WHERE published_at IS NULL")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(!waiting.is_empty());

    // Back, but empty (in-memory storage): the relay makes the topic again and publishes
    // everything that waited, each tenant in order.
    broker.start().await.unwrap();
    drained(&pool, Duration::from_mins(1)).await;
    let stored: Vec<(Uuid, Uuid, String)> = outbox(&pool)
        .await
        .into_iter()
        .filter(|(id, _, _)| waiting.contains(id))
        .collect();
    let consumed = consume_events(&brokers, &topic, stored.len(), Duration::from_mins(1))
        .await
        .unwrap();
    assert_delivered(&stored, &consumed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_with_a_hung_broker_ends_within_the_grace_and_leaves_events_in_the_outbox() {
    let broker = private_broker().await.unwrap();
    let topic = unique_topic();
    let server = server(&broker.addr.to_string(), &topic).await;
    let schema_url = server.schema().unwrap().url();
    server.create_active(new_tenant("first")).await.unwrap();
    broker.pause().unwrap();
    server.create_active(new_tenant("second")).await.unwrap();
    // The test servers' grace is 5 s; the relay is waiting on the broker.
    let started = std::time::Instant::now();
    let schema = server.stop().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    // Nothing was marked published that the broker did not confirm.
    let pool = PgPool::connect(&schema_url).await.unwrap();
    assert!(unpublished(&pool).await > 0);
    pool.close().await;
    drop(schema);
    broker.resume().unwrap();
}

#[tokio::test]
async fn the_embedded_store_relays_its_outbox_the_same_way() {
    let brokers = kafka_brokers();
    let topic = unique_topic();
    let kafka = kafka(&brokers, &topic);
    let server = TestServer::start_with(Backend::Memory, move |config| Config {
        kafka: Some(kafka),
        ..config
    })
    .await
    .unwrap();
    server.create_active(new_tenant("embedded")).await.unwrap();
    let listed = server
        .events()
        .await
        .unwrap()
        .list_tenant_events(ListTenantEventsRequest {
            page_size: 500,
            ..ListTenantEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let stored: Vec<(Uuid, Uuid, String)> = listed
        .iter()
        .map(|e| {
            let id: Uuid = e.event_id.parse().unwrap();
            let kind = consumed_type(e);
            (id, e.tenant_id.parse().unwrap(), kind)
        })
        .collect();
    let consumed = consume_events(&brokers, &topic, stored.len(), Duration::from_mins(1))
        .await
        .unwrap();
    assert_delivered(&stored, &consumed);
    let published = counter(
        &server.metrics_text().await.unwrap(),
        "outbox_events_published_total",
        &[],
    );
    assert!(
        published >= stored.len() as u64,
        "{published} < {}",
        stored.len()
    );
    server.stop().await.unwrap();
}

/// The CloudEvents type of a listed event, from its payload.
fn consumed_type(event: &tenantd_e2e::pb::TenantEvent) -> String {
    let payload = format!("{:?}", event.payload.as_ref().unwrap());
    let name = payload.split('(').next().unwrap();
    format!("tenant.v1.{name}")
}
