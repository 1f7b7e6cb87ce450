//! SIGTERM to a real `tenantd` process on PostgreSQL and Kafka, under load, with a watch
//! open and a provisioning step in flight (held on a lock the test takes): it exits within
//! its grace period plus a margin, every call in flight completes or fails with
//! UNAVAILABLE, every acknowledged tenant is there after a restart, every event the relay
//! had marked published before the exit is on the topic (the producer was flushed), and
//! the interrupted runs finish on the next process, each step's work done once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    CreateTenantRequest, GetTenantRequest, RunState, Tenant, WatchProvisioningRequest,
};
use tenantd_e2e::process::{REPLICA_ENV, TenantdProcess};
use tenantd_e2e::services::{consume_events, kafka_brokers, unique_topic};
use tenantd_e2e::{TestKeys, admin_channel, create, eventually, new_tenant, settle};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// The grace period the process is given, and what it may take beyond it (the audit
/// writer's last flush gets up to 2 s past the grace).
const GRACE: Duration = Duration::from_secs(3);
const MARGIN: Duration = Duration::from_secs(3);

/// What the load saw: acknowledged creates, reads answered, calls refused (code and
/// message), and the create refused, to retry with its request id.
#[derive(Debug, Default)]
struct Load {
    created: Vec<String>,
    reads: usize,
    refused: Vec<(Code, String)>,
    unanswered: Option<CreateTenantRequest>,
}

/// Creates and reads through `tenants` until `stop`; the first refusal ends the loop
/// (a client would go to another replica).
async fn load(
    mut tenants: TenantServiceClient<Channel>,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> Load {
    let mut seen = Load::default();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let request = CreateTenantRequest {
            tenant: Some(new_tenant(&format!("term-{worker}-{n}"))),
            request_id: Uuid::now_v7().to_string(),
        };
        match tenants.create_tenant(request.clone()).await {
            Ok(answer) => {
                let id = answer.into_inner().tenant.unwrap().tenant_id;
                let read = tenants
                    .get_tenant(GetTenantRequest {
                        tenant_id: id.clone(),
                    })
                    .await;
                seen.created.push(id);
                match read {
                    Ok(_) => seen.reads += 1,
                    Err(status) => {
                        seen.refused
                            .push((status.code(), status.message().to_owned()));
                        break;
                    }
                }
            }
            Err(status) => {
                seen.refused
                    .push((status.code(), status.message().to_owned()));
                break;
            }
        }
    }
    seen
}

async fn published_events(pool: &sqlx::PgPool) -> BTreeSet<String> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT event_id FROM tenant_events WHERE published_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect()
}

/// Holds the DNS step of a new tenant `held` on a row of an open transaction (the record
/// it must insert, uncommitted, in the name of the tenant `anchor`) until the returned
/// transaction ends; every other run goes on. Returns the transaction, `anchor`, `held`.
async fn hold_a_dns_step(
    pool: &sqlx::PgPool,
    admin: &mut TenantServiceClient<Channel>,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, Tenant, Tenant) {
    let anchor = create(admin, new_tenant("anchor")).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO dns_records (name, type, value, ttl, tenant_id) \
         VALUES ('held.tenants.tenantd.local', 'A', '192.0.2.1', 60, $1)",
    )
    .bind(Uuid::parse_str(&anchor.tenant_id).unwrap())
    .execute(&mut *blocker)
    .await
    .unwrap();
    let held = create(admin, new_tenant("held")).await.unwrap();
    let tenant = Uuid::parse_str(&held.tenant_id).unwrap();
    eventually(
        "the held DNS step running",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM provisioning_steps s JOIN provisioning_runs r \
             USING (run_id) WHERE s.kind = 'DNS' AND s.state = 'RUNNING' AND r.tenant_id = $1",
            )
            .bind(tenant)
            .fetch_one(pool)
            .await
            .unwrap()
                > 0
        },
    )
    .await;
    (blocker, anchor, held)
}

/// Retries each create the shutdown left unanswered with its request id: each makes one
/// tenant, and asking again gets the same one. How many there were.
async fn retry_unanswered(
    loads: &[Load],
    tenants: &mut TenantServiceClient<Channel>,
    provisioning: &mut ProvisioningServiceClient<Channel>,
    pool: &sqlx::PgPool,
) -> usize {
    let mut retried = 0;
    for request in loads.iter().filter_map(|l| l.unanswered.clone()) {
        let slug = request.tenant.as_ref().unwrap().slug.clone();
        let again = tenants.create_tenant(request.clone()).await.unwrap();
        let again = again.into_inner().tenant.unwrap();
        assert_eq!(again.slug, slug);
        let twice = tenants.create_tenant(request).await.unwrap().into_inner();
        assert_eq!(twice.tenant.unwrap().tenant_id, again.tenant_id);
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE slug = $1")
            .bind(&slug)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(stored, 1, "{slug}");
        settle(provisioning, &again.tenant_id).await.unwrap();
        retried += 1;
    }
    retried
}

/// Waits for the outbox to drain, then checks that every event is on `topic`, those
/// `published_before_exit` included.
async fn assert_relayed(
    pool: &sqlx::PgPool,
    (brokers, topic): (&str, &str),
    published_before_exit: &BTreeSet<String>,
) -> usize {
    eventually("the outbox drained", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tenant_events WHERE published_at IS NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    let all = published_events(pool).await;
    let consumed = consume_events(brokers, topic, all.len(), Duration::from_mins(1))
        .await
        .unwrap();
    let on_topic: BTreeSet<String> = consumed.iter().map(|m| m.event_id().to_owned()).collect();
    let missing: Vec<&String> = published_before_exit.difference(&on_topic).collect();
    assert!(
        missing.is_empty(),
        "published before the exit, not on the topic: {missing:?}"
    );
    assert_eq!(on_topic, all, "every event relayed");
    all.len()
}

/// Ends `workers` and `watch` after the process exited: what the load saw.
async fn after_exit(
    workers: Vec<tokio::task::JoinHandle<Load>>,
    mut watch: tonic::Streaming<tenantd_e2e::pb::WatchProvisioningResponse>,
) -> Vec<Load> {
    let mut loads = Vec::new();
    for worker in workers {
        loads.push(worker.await.unwrap());
    }
    // The watch ended with the process, with UNAVAILABLE or cleanly.
    while let Some(item) = tokio::time::timeout(Duration::from_secs(1), watch.next())
        .await
        .expect("the watch outlived the process")
    {
        if let Err(status) = item {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            break;
        }
    }
    // Refused by the draining server (UNAVAILABLE), by a closed connection, or by the
    // client library for a stream the server refused at its GOAWAY ("operation was
    // canceled": CANCELLED, never processed); each is retried after the restart.
    for (code, message) in loads.iter().flat_map(|l| &l.refused) {
        assert!(
            matches!(code, Code::Unavailable | Code::Cancelled),
            "{code:?}: {message}"
        );
    }
    loads
}

#[tokio::test]
async fn sigterm_under_load_drains_flushes_and_the_interrupted_runs_finish_after_restart() {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let (brokers, topic) = (kafka_brokers(), unique_topic());
    let grace = GRACE.as_secs().to_string();
    let mut env = REPLICA_ENV.to_vec();
    env.extend([
        ("TENANTD_KAFKA_BROKERS", brokers.as_str()),
        ("TENANTD_KAFKA_TOPIC", topic.as_str()),
        ("TENANTD_SHUTDOWN_GRACE_SECONDS", grace.as_str()),
    ]);
    let mut first = TenantdProcess::start_with(&schema, dir.path(), &keys, &env)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let channel = admin_channel(first.grpc_addr, &certs).await.unwrap();
    let (blocker, anchor, held) =
        hold_a_dns_step(&pool, &mut TenantServiceClient::new(channel.clone())).await;
    let mut watch = ProvisioningServiceClient::new(channel.clone())
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: held.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.next().await.is_some(), "the watch sends the run");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(load(
                TenantServiceClient::new(channel.clone()),
                n,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (exit, took) = first.terminate(GRACE + MARGIN).await.unwrap();
    stop.store(true, Ordering::Release);
    assert!(exit.success(), "tenantd exited with {exit}");
    let loads = after_exit(workers, watch).await;
    let created: Vec<String> = loads.iter().flat_map(|l| l.created.clone()).collect();
    assert!(
        created.len() >= 4,
        "the load made {} tenants",
        created.len()
    );
    let published_before_exit = published_events(&pool).await;
    let logs = first.log_lines();
    assert!(
        logs.iter().any(|l| l.contains("shutting down")),
        "no shutdown logged"
    );
    for lost in ["kafka producer not flushed", "audit writer did not finish"] {
        assert!(!logs.iter().any(|l| l.contains(lost)), "logged {lost:?}");
    }
    blocker.rollback().await.unwrap();

    // The next process finishes every run, the interrupted one included, each once.
    let second = TenantdProcess::start_with(&schema, dir.path(), &keys, &env)
        .await
        .unwrap();
    let channel = admin_channel(second.grpc_addr, &certs).await.unwrap();
    let mut provisioning = ProvisioningServiceClient::new(channel.clone());
    let mut tenants = TenantServiceClient::new(channel);
    for id in created.iter().chain([&held.tenant_id, &anchor.tenant_id]) {
        let get = GetTenantRequest {
            tenant_id: id.clone(),
        };
        let found = tenants.get_tenant(get).await;
        assert!(found.is_ok(), "acknowledged tenant {id} lost: {found:?}");
        let run = settle(&mut provisioning, id).await.unwrap();
        assert_eq!(run.state(), RunState::Succeeded, "{id}: {run:?}");
    }
    let retried = retry_unanswered(&loads, &mut tenants, &mut provisioning, &pool).await;
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM dns_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(records).unwrap(),
        2 * (created.len() + 2 + retried),
        "a DNS step's records made twice or not at all"
    );
    let events = assert_relayed(&pool, (&brokers, &topic), &published_before_exit).await;
    eprintln!(
        "SIGTERM: exited in {took:?}; {} tenants acknowledged, {retried} creates unanswered \
         and retried, {} events published before the exit of {events}",
        created.len(),
        published_before_exit.len(),
    );
}
