//! The publisher against librdkafka's in-process mock cluster (fast fault tests); the
//! end-to-end tests use a real broker.

use std::time::{Duration, Instant};

use chrono::{SubsecRound as _, Utc};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use tenantd_domain::{EventId, EventKind, TenantId};
use uuid::Uuid;

use super::*;

const TOPIC: &str = "tenant.events.v1";

fn settings(brokers: String) -> KafkaSettings {
    KafkaSettings {
        brokers,
        topic: TOPIC.to_owned(),
        message_timeout: Duration::from_millis(1500),
        max_message_bytes: 1_000_000,
        partitions: 3,
        replication_factor: 1,
        source: "urn:tenantd:test".to_owned(),
        client_id: "tenantd-test".to_owned(),
    }
}

fn event(tenant: TenantId) -> Event {
    Event {
        id: EventId(Uuid::now_v7()),
        subject: tenant.into(),
        occurred_at: Utc::now().trunc_subsecs(6),
        kind: EventKind::TenantResumed,
    }
}

/// The event id's bytes: enough to recognize a payload.
fn encoder() -> EventEncoder {
    Arc::new(|event: &Event| event.id.0.as_bytes().to_vec())
}

/// A received message: key, payload, headers.
type Received = (String, Vec<u8>, Vec<(String, String)>);

fn consume(brokers: &str, count: usize) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", Uuid::new_v4().to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen.push((
            String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            message.payload().unwrap().to_vec(),
            headers,
        ));
    }
    seen
}

#[tokio::test]
async fn events_are_delivered_keyed_by_tenant_with_cloudevents_headers_in_order() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    let publisher = KafkaPublisher::new(settings(cluster.bootstrap_servers()), encoder()).unwrap();
    let tenants: Vec<TenantId> = (0..3)
        .map(|_| TenantId::from_uuid(Uuid::now_v7()).unwrap())
        .collect();
    let events: Vec<Event> = (0..12).map(|i| event(tenants[i % 3])).collect();
    let outcomes = publisher.publish(&events).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");

    let seen = consume(&cluster.bootstrap_servers(), events.len());
    assert_eq!(seen.len(), events.len());
    for tenant in &tenants {
        let sent: Vec<Vec<u8>> = events
            .iter()
            .filter(|e| e.subject.tenant() == Some(*tenant))
            .map(|e| e.id.0.as_bytes().to_vec())
            .collect();
        let received: Vec<Vec<u8>> = seen
            .iter()
            .filter(|(key, _, _)| *key == tenant.to_string())
            .map(|(_, payload, _)| payload.clone())
            .collect();
        assert_eq!(received, sent, "one tenant's events arrive in order");
    }
    let first = &events[0];
    let (_, _, headers) = seen
        .iter()
        .find(|(_, payload, _)| *payload == first.id.0.as_bytes())
        .unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or_else(|| panic!("header {name} missing"), |(_, v)| v.clone())
    };
    assert_eq!(header("ce_specversion"), "1.0");
    assert_eq!(header("ce_id"), first.id.0.to_string());
    assert_eq!(header("ce_type"), "tenant.v1.TenantResumed");
    assert_eq!(header("ce_source"), "urn:tenantd:test");
    assert_eq!(header("ce_subject"), first.subject.id().to_string());
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&header("ce_time")).unwrap(),
        first.occurred_at
    );
    assert_eq!(header("content-type"), "application/protobuf");
    publisher.flush(Duration::from_secs(5)).await.unwrap();
}

/// A mock cluster with the topic, a publisher that has delivered one event of `tenant`
/// and passes its check.
async fn delivering() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaPublisher,
    TenantId,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let publisher = KafkaPublisher::new(settings(cluster.bootstrap_servers()), encoder()).unwrap();
    let tenant = TenantId::from_uuid(Uuid::now_v7()).unwrap();
    assert!(publisher.publish(&[event(tenant)]).await[0].is_ok());
    assert!(publisher.check(Duration::from_secs(2)).await.is_ok());
    (cluster, publisher, tenant)
}

/// Publishes an event of `tenant` until one is delivered (20 s at most).
async fn delivered_again(publisher: &KafkaPublisher, tenant: TenantId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let outcomes = publisher.publish(&[event(tenant)]).await;
        if outcomes[0].is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "no delivery: {outcomes:?}");
    }
}

#[tokio::test]
async fn with_the_broker_down_deliveries_fail_within_the_message_timeout_then_recover() {
    let (cluster, publisher, tenant) = delivering().await;

    cluster.broker_down(1).unwrap();
    let started = Instant::now();
    let outcomes = publisher.publish(&[event(tenant), event(tenant)]).await;
    assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by message.timeout.ms"
    );

    cluster.broker_up(1).unwrap();
    delivered_again(&publisher, tenant).await;
}

#[tokio::test]
async fn a_broker_that_answers_metadata_but_refuses_every_produce_fails_the_check_until_one_is_delivered()
 {
    let (cluster, publisher, tenant) = delivering().await;

    // Every produce request fails (retriably, so librdkafka retries until the message
    // timeout); metadata requests are still answered.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let outcomes = publisher.publish(&[event(tenant), event(tenant)]).await;
    assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
    let metadata_answered = {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(Some(TOPIC), Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap()
    };
    assert!(metadata_answered, "the broker answers metadata");
    let refused = publisher.check(Duration::from_secs(2)).await.unwrap_err();
    assert!(refused.contains("no event delivered"), "{refused}");

    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    delivered_again(&publisher, tenant).await;
    assert!(publisher.check(Duration::from_secs(2)).await.is_ok());
}

#[tokio::test]
async fn a_message_refused_for_itself_fails_permanently_and_leaves_the_publisher_serving() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    let (big, small) = (
        event(TenantId::from_uuid(Uuid::now_v7()).unwrap()),
        event(TenantId::from_uuid(Uuid::now_v7()).unwrap()),
    );
    let big_id = big.id;
    let encode: EventEncoder = Arc::new(move |event: &Event| {
        if event.id == big_id {
            vec![7; 5000]
        } else {
            event.id.0.as_bytes().to_vec()
        }
    });
    let publisher = KafkaPublisher::new(
        KafkaSettings {
            max_message_bytes: 1000,
            ..settings(cluster.bootstrap_servers())
        },
        encode,
    )
    .unwrap();

    let outcomes = publisher.publish(&[big.clone(), small]).await;
    let refused = outcomes[0].clone().unwrap_err();
    assert!(refused.permanent, "{refused}");
    assert!(refused.message.contains("too large"), "{refused}");
    assert!(outcomes[1].is_ok(), "the other tenant's event is delivered");

    // A round of nothing but such a refusal, and the tenant's later event left unsent
    // behind it, says nothing about the broker.
    let behind = Event {
        id: EventId(Uuid::now_v7()),
        ..big.clone()
    };
    let alone = publisher.publish(&[big.clone(), behind]).await;
    assert!(alone[0].as_ref().is_err_and(|e| e.permanent), "{alone:?}");
    assert!(alone[1].as_ref().is_err_and(|e| !e.permanent), "{alone:?}");
    assert!(publisher.check(Duration::from_secs(2)).await.is_ok());
}
