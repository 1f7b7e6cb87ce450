//! An event the broker can never take (larger than `--kafka-max-message-bytes`) on a real
//! `tenantd` process and a real Kafka-protocol broker: after its attempts it becomes a dead
//! letter with an ALERT line and a metric, its tenant's later events and every other
//! tenant's reach the topic, the publisher stays SERVING; after a restart with a larger
//! limit, an operator's RetryDeadLetters delivers it.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::PgPool;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{DeadLetter, ListDeadLettersRequest, RetryDeadLettersRequest, Tenant};
use tenantd_e2e::process::{REPLICA_ENV, TenantdProcess};
use tenantd_e2e::services::{consume_events, kafka_brokers, unique_topic};
use tenantd_e2e::{
    TestKeys, admin_channel, assert_reason, counter, create, eventually, health_is, new_tenant,
};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

const ATTEMPTS: &str = "3";

/// A tenant whose TenantCreated event is well over 1,000 bytes: 20 labels of 63
/// characters.
fn big_tenant() -> Tenant {
    let mut tenant = new_tenant("dead-big");
    tenant.labels = (0..20)
        .map(|i| (format!("label-{i:02}"), "v".repeat(63)))
        .collect();
    tenant
}

async fn dead_letters(events: &mut EventServiceClient<Channel>) -> Vec<DeadLetter> {
    events
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

/// Events not yet published, in id order.
async fn unpublished(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT event_id FROM tenant_events WHERE published_at IS NULL ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn stored_events(pool: &PgPool) -> Vec<(Uuid, Uuid)> {
    sqlx::query_as("SELECT event_id, tenant_id FROM tenant_events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What the test shares across its two processes.
struct Setup {
    dir: tempfile::TempDir,
    certs: devcerts::DevCerts,
    schema: ScratchSchema,
    keys: TestKeys,
    brokers: String,
    topic: String,
    pool: PgPool,
}

impl Setup {
    async fn new() -> Self {
        tenantd_server::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
        let schema = ScratchSchema::create().await.unwrap();
        let pool = PgPool::connect(&schema.url()).await.unwrap();
        Self {
            dir,
            certs,
            schema,
            keys: TestKeys::generate(),
            brokers: kafka_brokers(),
            topic: unique_topic(),
            pool,
        }
    }

    /// A `tenantd` process relaying to the topic with this message limit, and an admin
    /// channel to it.
    async fn start(&self, max_message_bytes: &str) -> (TenantdProcess, Channel) {
        let mut env = REPLICA_ENV.to_vec();
        env.extend([
            ("TENANTD_KAFKA_BROKERS", self.brokers.as_str()),
            ("TENANTD_KAFKA_TOPIC", self.topic.as_str()),
            ("TENANTD_KAFKA_MAX_MESSAGE_BYTES", max_message_bytes),
            ("TENANTD_OUTBOX_MAX_DELIVERY_ATTEMPTS", ATTEMPTS),
            ("TENANTD_OUTBOX_POLL_INTERVAL_MS", "50"),
        ]);
        let process = TenantdProcess::start_with(&self.schema, self.dir.path(), &self.keys, &env)
            .await
            .unwrap();
        let channel = admin_channel(process.grpc_addr, &self.certs).await.unwrap();
        (process, channel)
    }
}

/// Waits for the one dead letter, of `big`'s TenantCreated, and its ALERT line.
async fn the_dead_letter(process: &TenantdProcess, channel: &Channel, big: &Tenant) -> DeadLetter {
    let events = EventServiceClient::new(channel.clone());
    eventually("a dead letter", Duration::from_mins(1), || async {
        !dead_letters(&mut events.clone()).await.is_empty()
    })
    .await;
    let dead = dead_letters(&mut events.clone()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = dead[0].clone();
    assert_eq!(letter.tenant_id, big.tenant_id);
    assert_eq!(letter.event_type, "tenant.v1.TenantCreated");
    assert_eq!(letter.delivery_attempts.to_string(), ATTEMPTS);
    assert!(
        letter.last_error.contains("too large"),
        "{}",
        letter.last_error
    );
    assert!(
        process
            .wait_for_log(
                "ALERT: an outbox event cannot be delivered",
                Duration::from_secs(5)
            )
            .await,
        "no ALERT line"
    );
    assert!(
        process
            .log_lines()
            .iter()
            .any(|l| l.contains("ALERT") && l.contains(&letter.event_id)),
        "the ALERT line names the event"
    );
    letter
}

/// Every event but the dead letter reaches the topic (`big`'s later ones and `small`'s
/// included); the metrics count the dead letter; the publisher stays SERVING.
async fn the_rest_is_delivered(
    setup: &Setup,
    process: &TenantdProcess,
    channel: &Channel,
    dead: Uuid,
    (big, small): (&Tenant, &Tenant),
) {
    eventually(
        "only the dead letter unpublished",
        Duration::from_mins(1),
        || async { unpublished(&setup.pool).await == vec![dead] },
    )
    .await;
    let delivered: Vec<(Uuid, Uuid)> = stored_events(&setup.pool)
        .await
        .into_iter()
        .filter(|(id, _)| *id != dead)
        .collect();
    assert!(
        delivered
            .iter()
            .any(|(_, t)| t.to_string() == big.tenant_id),
        "the big tenant has later events"
    );
    let consumed = consume_events(
        &setup.brokers,
        &setup.topic,
        delivered.len(),
        Duration::from_mins(1),
    )
    .await
    .unwrap();
    let on_topic: BTreeSet<String> = consumed.iter().map(|m| m.event_id().to_owned()).collect();
    let expected: BTreeSet<String> = delivered.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        on_topic, expected,
        "every other event, and not the dead letter"
    );
    assert!(consumed.iter().any(|m| m.key == small.tenant_id));
    let metrics = process.metrics_text().await.unwrap();
    assert_eq!(
        counter(&metrics, "outbox_events_dead_lettered_total", &[]),
        1
    );
    eventually(
        "the dead-letter gauge at 1",
        Duration::from_secs(5),
        || async {
            counter(
                &process.metrics_text().await.unwrap(),
                "outbox_dead_letters",
                &[],
            ) == 1
        },
    )
    .await;
    // The publisher's status is probed every 2 s: it may still show the start (the topic
    // not made yet), never a refusal.
    let health = HealthClient::new(channel.clone());
    eventually("publisher SERVING", Duration::from_secs(10), || {
        health_is(&health, "publisher", ServingStatus::Serving)
    })
    .await;
    let refused_as_down: Vec<String> = process
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("dependency is down") && l.contains("no event delivered"))
        .collect();
    assert!(
        refused_as_down.is_empty(),
        "a refused event says nothing about the broker: {refused_as_down:?}"
    );
}

#[tokio::test]
async fn an_event_too_large_for_the_broker_becomes_a_dead_letter_and_a_retry_delivers_it() {
    let setup = Setup::new().await;
    let (mut first, channel) = setup.start("1000").await;
    let mut tenants = TenantServiceClient::new(channel.clone());
    let big = create(&mut tenants, big_tenant()).await.unwrap();
    let small = create(&mut tenants, new_tenant("dead-small"))
        .await
        .unwrap();
    let letter = the_dead_letter(&first, &channel, &big).await;
    let dead: Uuid = letter.event_id.parse().unwrap();
    the_rest_is_delivered(&setup, &first, &channel, dead, (&big, &small)).await;
    let status = EventServiceClient::new(channel)
        .retry_dead_letters(RetryDeadLettersRequest::default())
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
    first.terminate(Duration::from_secs(10)).await.unwrap();

    // A larger limit, and an operator's retry: the event reaches the topic.
    let (_second, channel) = setup.start("1000000").await;
    let mut events = EventServiceClient::new(channel);
    let retried = events
        .retry_dead_letters(RetryDeadLettersRequest {
            tenant_id: big.tenant_id.clone(),
            ..RetryDeadLettersRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .event_ids;
    assert_eq!(retried, vec![letter.event_id.clone()]);
    eventually(
        "the retried event published",
        Duration::from_mins(1),
        || async { unpublished(&setup.pool).await.is_empty() },
    )
    .await;
    assert!(dead_letters(&mut events).await.is_empty());
    let all = stored_events(&setup.pool).await.len();
    let consumed = consume_events(&setup.brokers, &setup.topic, all, Duration::from_mins(1))
        .await
        .unwrap();
    let created = consumed
        .iter()
        .find(|m| m.event_id() == letter.event_id)
        .expect("the retried event is on the topic");
    assert_eq!(created.payload_case, "tenant_created");
    assert_eq!(
        created.event["tenant_created"]["labels"]["label-00"],
        "v".repeat(63)
    );
    let again = events
        .retry_dead_letters(RetryDeadLettersRequest {
            event_ids: vec![letter.event_id.clone()],
            ..RetryDeadLettersRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .event_ids;
    assert!(again.is_empty(), "no dead letter any more");
    setup.pool.close().await;
}
