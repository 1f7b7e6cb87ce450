//! The provisioning pipeline end to end on PostgreSQL: a run from DATABASE to NOTIFICATION
//! with what each step leaves behind; retries, failure with compensation in reverse order
//! and the dead letter; cancel and the deadline sweeper; retry after cancel; the watch
//! stream; the first admin key claimed once; 200 tenants at once.

use std::time::Duration;

use futures::future::join_all;
use sqlx::PgPool;
use tenantd_e2e::faults::{Fault, Faults};
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::{
    CancelProvisioningRequest, ClaimInitialApiKeyRequest, GetProvisioningRequest, GetTenantRequest,
    ListTenantEventsRequest, ListTenantsRequest, ProvisioningRun, RetryProvisioningRequest,
    RunState, StepKind, StepState, Tenant, TenantEvent, TenantStatus, VerifyApiKeyRequest,
    WatchProvisioningRequest,
};
use tenantd_e2e::{Backend, TestServer, assert_reason, counter, create, new_tenant, settle};
use tenantd_server::config::Config;
use tonic::Code;

/// A PostgreSQL-backed server whose providers pass through `faults`.
async fn server_with(faults: Faults, adjust: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start_with_providers(Backend::Postgres, adjust, move |p| faults.wrap(p))
        .await
        .unwrap()
}

async fn pool(server: &TestServer) -> PgPool {
    PgPool::connect(&server.schema().unwrap().url())
        .await
        .unwrap()
}

/// The tenant schema's name, as the DATABASE step makes it.
fn tenant_schema(server: &TestServer, tenant_id: &str) -> String {
    format!(
        "{}{}",
        server.schema().unwrap().tenant_schema_prefix(),
        tenant_id.replace('-', "")
    )
}

async fn schema_exists(pool: &PgPool, name: &str) -> bool {
    sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .unwrap()
        .is_some()
}

async fn count(pool: &PgPool, sql: &str, tenant_id: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(uuid(tenant_id))
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

fn uuid(text: &str) -> sqlx::types::Uuid {
    text.parse().unwrap()
}

async fn get_run(server: &TestServer, tenant_id: &str) -> ProvisioningRun {
    server
        .provisioning()
        .await
        .unwrap()
        .get_provisioning(GetProvisioningRequest {
            tenant_id: tenant_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn get_tenant(server: &TestServer, tenant_id: &str) -> Tenant {
    server
        .tenants()
        .await
        .unwrap()
        .get_tenant(GetTenantRequest {
            tenant_id: tenant_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

async fn events(server: &TestServer, tenant_id: &str) -> Vec<TenantEvent> {
    EventServiceClient::new(server.admin_channel().await.unwrap())
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: tenant_id.into(),
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// The step transitions in the event log, in order.
fn transitions(events: &[TenantEvent]) -> Vec<(StepKind, StepState, i32)> {
    events
        .iter()
        .filter_map(|e| match e.payload.as_ref()? {
            Payload::ProvisioningStepChanged(c) => Some((c.step(), c.state(), c.attempt)),
            _ => None,
        })
        .collect()
}

fn step_states(run: &ProvisioningRun) -> Vec<(StepKind, StepState)> {
    run.steps.iter().map(|s| (s.kind(), s.state())).collect()
}

/// Polls GetProvisioning until `ready` holds (at most 20 s).
async fn wait_until(
    server: &TestServer,
    tenant_id: &str,
    ready: impl Fn(&ProvisioningRun) -> bool,
) -> ProvisioningRun {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let run = get_run(server, tenant_id).await;
        if ready(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn running(step: StepKind) -> impl Fn(&ProvisioningRun) -> bool {
    move |run| {
        run.steps
            .iter()
            .any(|s| s.kind() == step && s.state() == StepState::Running)
    }
}

const ORDER: [StepKind; 5] = [
    StepKind::Database,
    StepKind::Dns,
    StepKind::Credentials,
    StepKind::Billing,
    StepKind::Notification,
];

/// DATABASE's result: the tenant's own schema, migrated, with the default roles and an
/// admin user for the contact email, kept sealed there too.
async fn assert_tenant_schema(pool: &PgPool, schema: &str) {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let tables: Vec<_> = tables.into_iter().map(|(t,)| t).collect();
    assert_eq!(
        tables,
        ["audit_logs", "roles", "schema_migrations", "users"]
    );
    let roles: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT role_id FROM \"{schema}\".roles ORDER BY role_id"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        roles.into_iter().map(|(r,)| r).collect::<Vec<_>>(),
        ["admin", "user", "viewer"]
    );
    let users: Vec<(String, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT role_id, email_sealed FROM \"{schema}\".users"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].0, "admin");
    assert!(!String::from_utf8_lossy(&users[0].1).contains("happy.example"));
}

/// CREDENTIALS' result: the first admin key, claimable once; it verifies; its secret was
/// never stored or logged in clear.
async fn assert_first_key_is_claimed_once(server: &TestServer, pool: &PgPool, id: &str) {
    let mut keys = ApiKeyServiceClient::new(server.admin_channel().await.unwrap());
    let claimed = keys
        .claim_initial_api_key(ClaimInitialApiKeyRequest {
            tenant_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.api_key.unwrap().scopes, ["tenant.admin"]);
    let verified = keys
        .verify_api_key(VerifyApiKeyRequest {
            api_key: claimed.secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid && verified.tenant_active);
    assert_eq!(verified.tenant_id, id);
    let again = keys
        .claim_initial_api_key(ClaimInitialApiKeyRequest {
            tenant_id: id.to_owned(),
        })
        .await
        .unwrap_err();
    assert_reason(&again, Code::FailedPrecondition, "INITIAL_API_KEY_CLAIMED");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM initial_api_keys WHERE tenant_id = $1 AND secret_sealed IS NULL",
            id
        )
        .await,
        1,
        "the sealed copy is destroyed by the claim"
    );
    // The secret was never stored or logged in clear.
    let secret_part = &claimed.secret[claimed.secret.len() - 48..];
    let (hits,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM tenant_events WHERE payload::text LIKE '%' || $1 || '%'",
    )
    .bind(secret_part)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(hits, 0);
}

/// DNS's and BILLING's results: their rows.
async fn assert_dns_and_billing(pool: &PgPool, id: &str) {
    let names: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM dns_records WHERE tenant_id = $1 ORDER BY name")
            .bind(uuid(id))
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        names,
        [
            ("happy.tenants.tenantd.local".to_owned(), "A".to_owned()),
            (
                "www.happy.tenants.tenantd.local".to_owned(),
                "CNAME".to_owned()
            )
        ]
    );
    let (plan, status): (String, String) =
        sqlx::query_as("SELECT plan_id, status FROM billing_subscriptions WHERE tenant_id = $1")
            .bind(uuid(id))
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((plan.as_str(), status.as_str()), ("pro", "ACTIVE"));
}

/// The metrics of one successful run, one attempt per step.
async fn assert_one_successful_run_counted(server: &TestServer) {
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "provisioning_runs_total",
            &[("result", "succeeded")]
        ),
        1
    );
    for step in ["DATABASE", "DNS", "CREDENTIALS", "BILLING", "NOTIFICATION"] {
        assert_eq!(
            counter(
                &metrics,
                "provisioning_step_attempts_total",
                &[("step", step), ("result", "succeeded")]
            ),
            1,
            "{step}"
        );
        assert_eq!(
            counter(
                &metrics,
                "provisioning_step_duration_seconds_count",
                &[("step", step)]
            ),
            1
        );
    }
    assert!(metrics.contains("provisioning_runs_in_flight"));
}

#[tokio::test]
async fn a_new_tenant_is_provisioned_step_by_step_and_becomes_active() {
    let server = server_with(Faults::default(), |c| c).await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("happy"))
        .await
        .unwrap();
    assert_eq!(created.status(), TenantStatus::Provisioning);
    let id = created.tenant_id.clone();

    // The watch starts with the current state and ends after the terminal one; what it
    // shows only ever moves forward.
    let mut stream = server
        .provisioning()
        .await
        .unwrap()
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push(message.run.unwrap());
    }
    let progress: Vec<i32> = seen
        .iter()
        .map(|run| {
            run.steps
                .iter()
                .map(|s| {
                    i32::from(s.state() == StepState::Succeeded) * 2
                        + i32::from(s.state() == StepState::Running)
                })
                .sum()
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.state(), RunState::Succeeded);
    assert!(last.finish_time.is_some());
    assert!(
        last.steps
            .iter()
            .all(|s| s.state() == StepState::Succeeded && s.attempts == 1),
        "{last:?}"
    );

    // Every step ran in order, once, each transition an event; then the welcome request
    // and the activation.
    let log = events(&server, &id).await;
    let expected: Vec<_> = ORDER
        .iter()
        .flat_map(|k| [(*k, StepState::Running, 1), (*k, StepState::Succeeded, 1)])
        .collect();
    assert_eq!(transitions(&log), expected);
    let payloads: Vec<_> = log.iter().filter_map(|e| e.payload.clone()).collect();
    assert!(
        payloads
            .iter()
            .any(|p| matches!(p, Payload::WelcomeNotificationRequested(w) if w.slug == "happy"))
    );
    assert!(matches!(payloads.last(), Some(Payload::TenantActivated(_))));
    assert!(!format!("{log:?}").contains("ops@happy.example"));

    let tenant = get_tenant(&server, &id).await;
    assert_eq!(tenant.status(), TenantStatus::Active);
    let summary = tenant.provisioning.unwrap();
    assert_eq!(
        (
            summary.state(),
            summary.completed_steps,
            summary.total_steps
        ),
        (RunState::Succeeded, 5, 5)
    );

    let pool = pool(&server).await;
    assert_tenant_schema(&pool, &tenant_schema(&server, &id)).await;

    assert_dns_and_billing(&pool, &id).await;
    assert_first_key_is_claimed_once(&server, &pool, &id).await;

    assert_one_successful_run_counted(&server).await;
}

#[tokio::test]
async fn a_step_that_fails_twice_then_succeeds_is_retried_and_the_tenant_becomes_active() {
    let dns = Fault::fail_times(2);
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let tenant = server.create_active(new_tenant("flaky")).await.unwrap();
    let run = get_run(&server, &tenant.tenant_id).await;
    let dns_step = &run.steps[1];
    assert_eq!(dns_step.kind(), StepKind::Dns);
    assert_eq!(
        (dns_step.state(), dns_step.attempts),
        (StepState::Succeeded, 3)
    );
    assert_eq!(dns.calls(), 3);
    let dns_transitions: Vec<_> = transitions(&events(&server, &tenant.tenant_id).await)
        .into_iter()
        .filter(|(k, _, _)| *k == StepKind::Dns)
        .collect();
    assert_eq!(
        dns_transitions,
        [
            (StepKind::Dns, StepState::Running, 1),
            (StepKind::Dns, StepState::Pending, 1),
            (StepKind::Dns, StepState::Running, 2),
            (StepKind::Dns, StepState::Pending, 2),
            (StepKind::Dns, StepState::Running, 3),
            (StepKind::Dns, StepState::Succeeded, 3),
        ]
    );
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "provisioning_step_attempts_total",
            &[("step", "DNS"), ("result", "failed")]
        ),
        2
    );
}

#[tokio::test]
async fn a_step_that_always_fails_fails_the_run_and_undoes_everything_in_reverse() {
    let faults = Faults {
        billing: Some(Fault::always()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("doomed"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    let run = settle(&mut server.provisioning().await.unwrap(), &id)
        .await
        .unwrap();
    assert_eq!(run.state(), RunState::Failed);
    let error = run.error.clone().unwrap();
    assert_eq!(error.reason, "INJECTED_FAILURE");
    assert_eq!(
        step_states(&run),
        [
            (StepKind::Database, StepState::Compensated),
            (StepKind::Dns, StepState::Compensated),
            (StepKind::Credentials, StepState::Compensated),
            (StepKind::Billing, StepState::Compensated),
            (StepKind::Notification, StepState::Cancelled),
        ]
    );
    assert_eq!(run.steps[3].attempts, 5, "the configured attempts");

    let log = events(&server, &id).await;
    let undone: Vec<_> = transitions(&log)
        .into_iter()
        .filter(|(_, s, _)| *s == StepState::Compensated)
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(
        undone,
        [
            StepKind::Billing,
            StepKind::Credentials,
            StepKind::Dns,
            StepKind::Database
        ],
        "compensation runs latest first"
    );
    assert!(
        transitions(&log).contains(&(StepKind::Notification, StepState::Cancelled, 0)),
        "the step that never ran is cancelled, as an event too: {:?}",
        transitions(&log)
    );
    let dead_letter = log
        .iter()
        .find_map(|e| match e.payload.as_ref()? {
            Payload::ProvisioningFailed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a dead-letter event");
    assert_eq!(dead_letter.failed_step(), StepKind::Billing);
    assert_eq!(dead_letter.error.unwrap().reason, "INJECTED_FAILURE");
    assert_eq!(dead_letter.run_id, run.run_id);

    let tenant = get_tenant(&server, &id).await;
    assert_eq!(tenant.status(), TenantStatus::Failed);
    assert!(tenant.status_reason.contains("INJECTED_FAILURE"));
    assert_eq!(
        tenant.provisioning.unwrap().current_step(),
        StepKind::Billing
    );

    // Nothing is left behind.
    let pool = pool(&server).await;
    assert!(!schema_exists(&pool, &tenant_schema(&server, &id)).await);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM dns_records WHERE tenant_id = $1",
            &id
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
            &id
        )
        .await,
        0,
        "the first admin key is revoked"
    );
    let claim = ApiKeyServiceClient::new(server.admin_channel().await.unwrap())
        .claim_initial_api_key(ClaimInitialApiKeyRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&claim, Code::FailedPrecondition, "INITIAL_API_KEY_REVOKED");
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(&metrics, "provisioning_runs_total", &[("result", "failed")]),
        1
    );
}

/// RetryProvisioning of a cancelled run: from the first step not done to ACTIVE; a second
/// retry has nothing to restart.
async fn retry_finishes_the_run(server: &TestServer, id: &str, run_id: &str) {
    let mut provisioning = server.provisioning().await.unwrap();
    let pool = pool(server).await;
    let retried = provisioning
        .retry_provisioning(RetryProvisioningRequest {
            tenant_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(retried.state(), RunState::Running);
    assert_eq!(retried.run_id, run_id);
    let done = settle(&mut provisioning, id).await.unwrap();
    assert_eq!(done.state(), RunState::Succeeded);
    assert_eq!(get_tenant(server, id).await.status(), TenantStatus::Active);
    assert!(schema_exists(&pool, &tenant_schema(server, id)).await);
    let retry_again = provisioning
        .retry_provisioning(RetryProvisioningRequest {
            tenant_id: id.to_owned(),
        })
        .await
        .unwrap_err();
    assert_reason(&retry_again, Code::FailedPrecondition, "RUN_NOT_RETRYABLE");
}

#[tokio::test]
async fn a_permanent_failure_fails_at_once_and_leaves_others_records_alone() {
    let server = server_with(Faults::default(), |c| c).await;
    let holder = server.create_active(new_tenant("holder")).await.unwrap();
    let pool = pool(&server).await;
    // Someone else's record holds the name the next tenant needs.
    sqlx::query(
        "INSERT INTO dns_records (name, type, value, ttl, tenant_id) \
         VALUES ('clash.tenants.tenantd.local', 'A', '10.0.0.9', 300, $1)",
    )
    .bind(uuid(&holder.tenant_id))
    .execute(&pool)
    .await
    .unwrap();
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("clash"))
        .await
        .unwrap();
    let run = settle(
        &mut server.provisioning().await.unwrap(),
        &created.tenant_id,
    )
    .await
    .unwrap();
    assert_eq!(run.state(), RunState::Failed);
    assert_eq!(run.error.unwrap().reason, "DNS_NAME_TAKEN");
    assert_eq!(run.steps[1].attempts, 1, "no retry can free the name");
    let (value, owner): (String, sqlx::types::Uuid) = sqlx::query_as(
        "SELECT value, tenant_id FROM dns_records WHERE name = 'clash.tenants.tenantd.local'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (value.as_str(), owner),
        ("10.0.0.9", uuid(&holder.tenant_id))
    );
    assert!(!schema_exists(&pool, &tenant_schema(&server, &created.tenant_id)).await);
}

#[tokio::test]
async fn cancel_mid_run_compensates_and_retry_then_finishes_the_run() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("fickle"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    wait_until(&server, &id, running(StepKind::Dns)).await;
    let pool = pool(&server).await;
    assert!(schema_exists(&pool, &tenant_schema(&server, &id)).await);

    // A watcher that goes away mid-run does not disturb anything.
    let abandoned = server
        .provisioning()
        .await
        .unwrap()
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap();
    drop(abandoned);

    let mut provisioning = server.provisioning().await.unwrap();
    let cancelled = provisioning
        .cancel_provisioning(CancelProvisioningRequest {
            tenant_id: id.clone(),
            reason: "customer changed their mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    assert_eq!(
        cancelled.error.unwrap().message,
        "customer changed their mind"
    );
    // The DNS attempt in flight is abandoned (the worker sees the cancel on its next lease
    // renewal) and undone with the rest, without waiting for the slow provider.
    let run = settle(&mut provisioning, &id).await.unwrap();
    assert_eq!(
        step_states(&run),
        [
            (StepKind::Database, StepState::Compensated),
            (StepKind::Dns, StepState::Compensated),
            (StepKind::Credentials, StepState::Cancelled),
            (StepKind::Billing, StepState::Cancelled),
            (StepKind::Notification, StepState::Cancelled),
        ]
    );
    assert!(!schema_exists(&pool, &tenant_schema(&server, &id)).await);
    let tenant = get_tenant(&server, &id).await;
    assert_eq!(tenant.status(), TenantStatus::Cancelled);
    assert!(
        events(&server, &id)
            .await
            .iter()
            .any(|e| matches!(&e.payload, Some(Payload::ProvisioningCancelled(c)) if c.reason.contains("changed their mind")))
    );
    let cancelled_steps: Vec<_> = transitions(&events(&server, &id).await)
        .into_iter()
        .filter(|(_, state, _)| *state == StepState::Cancelled)
        .map(|(kind, _, _)| kind)
        .collect();
    assert_eq!(
        cancelled_steps,
        [
            StepKind::Dns,
            StepKind::Credentials,
            StepKind::Billing,
            StepKind::Notification
        ]
    );
    let again = provisioning
        .cancel_provisioning(CancelProvisioningRequest {
            tenant_id: id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&again, Code::FailedPrecondition, "RUN_NOT_RUNNING");

    dns.release();
    retry_finishes_the_run(&server, &id, &run.run_id).await;
}

#[tokio::test]
async fn deleting_a_tenant_mid_run_cancels_and_undoes_its_provisioning() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let mut tenants = server.tenants().await.unwrap();
    let created = create(&mut tenants, new_tenant("fleeting")).await.unwrap();
    let id = created.tenant_id.clone();
    wait_until(&server, &id, running(StepKind::Dns)).await;
    tenants
        .delete_tenant(tenantd_e2e::pb::DeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    dns.release();
    let run = settle(&mut server.provisioning().await.unwrap(), &id)
        .await
        .unwrap();
    assert_eq!(run.state(), RunState::Cancelled);
    assert_eq!(run.error.unwrap().reason, "TENANT_DELETED");
    let pool = pool(&server).await;
    assert!(!schema_exists(&pool, &tenant_schema(&server, &id)).await);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM dns_records WHERE tenant_id = $1",
            &id
        )
        .await,
        0
    );
    assert_eq!(
        get_tenant(&server, &id).await.status(),
        TenantStatus::Deleted
    );
    let restored = tenants
        .undelete_tenant(tenantd_e2e::pb::UndeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(
        restored.status(),
        TenantStatus::Cancelled,
        "retry is the way back"
    );
}

#[tokio::test]
async fn the_sweeper_cancels_a_run_past_its_deadline_and_compensates() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |config| Config {
        provisioning: tenantd_application::ProvisioningSettings {
            run_timeout: Duration::from_secs(1),
            ..config.provisioning
        },
        ..config
    })
    .await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("slowpoke"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    let run = settle(&mut server.provisioning().await.unwrap(), &id)
        .await
        .unwrap();
    assert_eq!(run.state(), RunState::Cancelled);
    assert_eq!(run.error.unwrap().reason, "DEADLINE_EXCEEDED");
    assert_eq!(run.steps[0].state(), StepState::Compensated);
    assert_eq!(run.steps[1].state(), StepState::Compensated);
    let pool = pool(&server).await;
    assert!(!schema_exists(&pool, &tenant_schema(&server, &id)).await);
    assert_eq!(
        get_tenant(&server, &id).await.status(),
        TenantStatus::Cancelled
    );
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "provisioning_runs_total",
            &[("result", "cancelled")]
        ),
        1
    );
    dns.release();
}

#[tokio::test]
async fn a_watch_survives_a_client_that_does_not_read_and_ends_with_the_final_state() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("lazy"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    let mut stream = server
        .provisioning()
        .await
        .unwrap()
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The client reads nothing while the run goes through all its steps.
    wait_until(&server, &id, running(StepKind::Dns)).await;
    dns.release();
    wait_until(&server, &id, |run| run.state() == RunState::Succeeded).await;
    let mut last = None;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        last = message.run;
    }
    assert_eq!(last.unwrap().state(), RunState::Succeeded);

    let status = server
        .provisioning()
        .await
        .unwrap()
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "PROVISIONING_RUN_NOT_FOUND");
}

/// Polls `/metrics` until the gauge `provisioning_watches_open` shows `open` (10 s).
async fn wait_for_open_watches(server: &TestServer, open: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = server.metrics_text().await.unwrap();
        if counter(&metrics, "provisioning_watches_open", &[]) == open {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "provisioning_watches_open never reached {open}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_watch_stops_when_its_client_goes_away() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = server_with(faults, |c| c).await;
    let created = create(&mut server.tenants().await.unwrap(), new_tenant("leaver"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    wait_until(&server, &id, running(StepKind::Dns)).await;
    // A client on its own connection, which then goes away entirely.
    let channel = server.admin_channel().await.unwrap();
    let mut stream = tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient::new(
        channel.clone(),
    )
    .watch_provisioning(WatchProvisioningRequest {
        tenant_id: id.clone(),
    })
    .await
    .unwrap()
    .into_inner();
    assert!(
        stream.message().await.unwrap().is_some(),
        "the current state first"
    );
    wait_for_open_watches(&server, 1).await;
    drop(stream);
    drop(channel);
    wait_for_open_watches(&server, 0).await;
    // The run is unaffected.
    dns.release();
    let run = settle(&mut server.provisioning().await.unwrap(), &id)
        .await
        .unwrap();
    assert_eq!(run.state(), RunState::Succeeded);
}

#[tokio::test]
async fn two_hundred_tenants_created_at_once_all_become_active() {
    let server = server_with(Faults::default(), |c| c).await;
    let client = server.tenants().await.unwrap();
    let creates = (0..200).map(|i| {
        let mut client = client.clone();
        async move { create(&mut client, new_tenant(&format!("load-{i}"))).await }
    });
    let answers: Vec<Tenant> = join_all(creates)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(answers.len(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_mins(2);
    let mut client = client.clone();
    loop {
        let active = client
            .list_tenants(ListTenantsRequest {
                page_size: 500,
                status: TenantStatus::Active.into(),
                ..ListTenantsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tenants
            .len();
        if active == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {active} of 200 tenants active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pool = pool(&server).await;
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(server.schema().unwrap().tenant_schema_prefix())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(schemas, 200);
    let (records,): (i64,) = sqlx::query_as("SELECT count(*) FROM dns_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(records, 400);
}
