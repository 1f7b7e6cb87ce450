//! Purge end to end on both stores: a deleted tenant purged on request becomes its
//! tombstone with its keys revoked (and, on PostgreSQL, its schema, DNS records,
//! subscription, idempotency records and sealed address gone, another tenant's untouched);
//! refusals carry their reasons; a second request answers with the started purge. On
//! PostgreSQL alone: the sweeper purges a tenant whose purge time passed.

use std::time::Duration;

use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, CreateTenantRequest, DeleteTenantRequest, GetPurgeRequest,
    GetTenantRequest, ListTenantEventsRequest, Purge, PurgeStepKind, PurgeStepState,
    PurgeTenantRequest, SetLegalHoldRequest, Tenant, TenantStatus, UndeleteTenantRequest,
    VerifyApiKeyRequest,
};
use tenantd_e2e::{
    Backend, TestServer, assert_reason, eventually, identity, new_tenant, on_every_store,
};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;

on_every_store!(
    a_purged_tenant_is_a_tombstone_with_everything_it_had_gone,
    a_purge_is_refused_with_its_reasons_and_answered_again_once_started,
);

fn purge(tenant_id: &str, force: bool) -> PurgeTenantRequest {
    PurgeTenantRequest {
        tenant_id: tenant_id.into(),
        etag: String::new(),
        force,
    }
}

async fn get(client: &mut TenantServiceClient<Channel>, tenant_id: &str) -> Tenant {
    client
        .get_tenant(GetTenantRequest {
            tenant_id: tenant_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

async fn delete(client: &mut TenantServiceClient<Channel>, tenant_id: &str) {
    client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: tenant_id.into(),
            etag: String::new(),
        })
        .await
        .unwrap();
}

/// The tenant's purge once it is done (within 30 seconds; it may not have started yet).
async fn finished(client: &mut TenantServiceClient<Channel>, tenant_id: &str) -> Purge {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client
            .get_purge(GetPurgeRequest {
                tenant_id: tenant_id.into(),
            })
            .await
        {
            Ok(response) => response.into_inner().purge,
            // Not started yet (the sweeper starts it).
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => panic!("GetPurge: {status:?}"),
        };
        if let Some(purge) = last.as_ref().filter(|p| p.done) {
            return purge.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not finish within 30 s: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tenant made with a request id (so it has an idempotency record), active, with a
/// second API key; returns its id and that key's secret.
async fn active_with_a_key(
    server: &TestServer,
    tenants: &mut TenantServiceClient<Channel>,
    slug: &str,
) -> (String, String) {
    let created = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(new_tenant(slug)),
            request_id: format!("create-{slug}"),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let id = created.tenant_id.clone();
    eventually("the tenant is active", Duration::from_secs(30), || {
        let mut tenants = tenants.clone();
        let id = id.clone();
        async move { get(&mut tenants, &id).await.status() == TenantStatus::Active }
    })
    .await;
    let mut keys = ApiKeyServiceClient::new(server.admin_channel().await.unwrap());
    let secret = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: id.clone(),
            display_name: "deploy bot".into(),
            scopes: vec!["tenants.read".into()],
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    (id, secret)
}

/// Whether `secret` verifies, for a service.
async fn verifies(server: &TestServer, secret: String) -> bool {
    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        "spiffe://tenantd.local/service/billing",
        "billing",
    )
    .unwrap();
    let mut service = ApiKeyServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    );
    service
        .verify_api_key(VerifyApiKeyRequest { api_key: secret })
        .await
        .unwrap()
        .into_inner()
        .valid
}

/// The purge's events: it started (forced), both keys were revoked, `TenantPurged` last.
async fn assert_purge_events(server: &TestServer, id: &str) {
    let events = server
        .events()
        .await
        .unwrap()
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: id.to_owned(),
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let payloads: Vec<_> = events.iter().filter_map(|e| e.payload.as_ref()).collect();
    assert!(matches!(payloads.last(), Some(Payload::TenantPurged(_))));
    assert!(
        payloads
            .iter()
            .any(|p| matches!(p, Payload::TenantPurgeStarted(s) if s.forced))
    );
    let revoked = payloads
        .iter()
        .filter(|p| matches!(p, Payload::ApiKeyRevoked(_)))
        .count();
    assert_eq!(revoked, 2, "the first key and the second");
}

async fn a_purged_tenant_is_a_tombstone_with_everything_it_had_gone(server: TestServer) {
    let mut tenants = server.tenants().await.unwrap();
    let bystander = server.create_active(new_tenant("bystander")).await.unwrap();
    let (id, secret) = active_with_a_key(&server, &mut tenants, "offboarded").await;
    delete(&mut tenants, &id).await;

    let started = tenants
        .purge_tenant(purge(&id, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        started.tenant.unwrap().status(),
        TenantStatus::Purging,
        "PURGING from the start"
    );
    let run = finished(&mut tenants, &id).await;
    assert!(run.forced);
    assert_eq!(run.requested_by, "admin");
    assert_eq!(run.steps.len(), 8);
    assert_eq!(
        run.steps[6].kind(),
        PurgeStepKind::DataKey,
        "its data key is destroyed before the tombstone"
    );
    assert!(
        run.steps
            .iter()
            .all(|s| s.state() == PurgeStepState::Succeeded && s.attempts == 1),
        "{run:?}"
    );

    let tombstone = get(&mut tenants, &id).await;
    assert_eq!(tombstone.status(), TenantStatus::Purged);
    assert_eq!(tombstone.slug, "offboarded");
    assert_eq!(tombstone.plan_id, "pro");
    assert_eq!(tombstone.contact_email, "", "a tombstone keeps no address");
    assert!(tombstone.labels.is_empty());
    assert_eq!(tombstone.display_name, "offboarded");
    assert!(tombstone.purged_time.is_some());
    assert!(tombstone.delete_time.is_some());
    let status = tenants
        .undelete_tenant(UndeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "TENANT_PURGED");
    let again = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(new_tenant("offboarded")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&again, Code::AlreadyExists, "SLUG_TAKEN");

    assert!(
        !verifies(&server, secret).await,
        "every key of a purged tenant is revoked"
    );
    assert_purge_events(&server, &id).await;

    let bystander_now = get(&mut tenants, &bystander.tenant_id).await;
    assert_eq!(bystander_now.status(), TenantStatus::Active);
    assert_eq!(bystander_now.contact_email, bystander.contact_email);
    if let Some(schema) = server.schema() {
        assert_gone_on_postgres(&schema.url(), &id, &bystander.tenant_id).await;
    }
}

/// Nothing of the purged tenant is left in the control plane's tables but its tombstone
/// row, and the bystander still has everything.
async fn assert_gone_on_postgres(url: &str, purged: &str, bystander: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (purged, bystander) = (
        uuid::Uuid::parse_str(purged).unwrap(),
        uuid::Uuid::parse_str(bystander).unwrap(),
    );
    for (tenant, schemas, records, active, requests, sealed) in
        [(purged, 0, 0, 0, 0, false), (bystander, 1, 2, 1, 0, true)]
    {
        let (schema,): (Option<String>,) =
            sqlx::query_as("SELECT tenant_schema FROM tenants WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
        let (found,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
        )
        .bind(schema.unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(found, schemas, "schemas of {tenant}");
        let (dns,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM dns_records WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(dns, records, "DNS records of {tenant}");
        let (subscriptions,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM billing_subscriptions WHERE tenant_id = $1 AND status = 'ACTIVE'",
        )
        .bind(tenant)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(subscriptions, active, "active subscriptions of {tenant}");
        let (records,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM idempotency_records WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(records, requests, "idempotency records of {tenant}");
        let (has_email, secret): (bool, Option<bool>) = sqlx::query_as(
            "SELECT t.contact_email_sealed IS NOT NULL, \
                    (SELECT k.secret_sealed IS NOT NULL FROM initial_api_keys k \
                     WHERE k.tenant_id = t.tenant_id) \
             FROM tenants t WHERE t.tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(has_email, sealed, "sealed address of {tenant}");
        let (key_kept, destroyed): (bool, bool) = sqlx::query_as(
            "SELECT data_key_sealed IS NOT NULL, data_key_destroyed_at IS NOT NULL \
             FROM tenant_data_keys WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (key_kept, destroyed),
            (sealed, !sealed),
            "data key of {tenant}: destroyed by the purge, its row kept as the record"
        );
        if !sealed {
            assert_ne!(
                secret,
                Some(true),
                "the unclaimed first key's secret is destroyed"
            );
        }
    }
}

async fn a_purge_is_refused_with_its_reasons_and_answered_again_once_started(server: TestServer) {
    let mut tenants = server.tenants().await.unwrap();
    let live = server.create_active(new_tenant("refused")).await.unwrap();
    let id = live.tenant_id.clone();
    let status = tenants.purge_tenant(purge(&id, true)).await.unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "INVALID_TRANSITION");
    let status = tenants
        .get_purge(GetPurgeRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "PURGE_NOT_FOUND");

    delete(&mut tenants, &id).await;
    let status = tenants.purge_tenant(purge(&id, false)).await.unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "PURGE_TIME_NOT_REACHED");
    let status = tenants
        .purge_tenant(PurgeTenantRequest {
            etag: "v1".into(),
            ..purge(&id, true)
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::Aborted, "ETAG_MISMATCH");
    tenants
        .set_legal_hold(SetLegalHoldRequest {
            tenant_id: id.clone(),
            reason: "case 77".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let status = tenants.purge_tenant(purge(&id, true)).await.unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "LEGAL_HOLD");
    tenants
        .release_legal_hold(tenantd_e2e::pb::ReleaseLegalHoldRequest {
            tenant_id: id.clone(),
            reason: "case closed".into(),
            etag: String::new(),
        })
        .await
        .unwrap();

    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        "spiffe://tenantd.local/service/billing",
        "billing",
    )
    .unwrap();
    let mut service = TenantServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    );
    let status = service.purge_tenant(purge(&id, true)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    tenants.purge_tenant(purge(&id, true)).await.unwrap();
    let first = finished(&mut tenants, &id).await;
    let again = tenants
        .purge_tenant(purge(&id, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.tenant.unwrap().status(), TenantStatus::Purged);
    assert_eq!(again.purge.unwrap(), first, "the purge that ran, once");
}

/// On PostgreSQL, with the sweeper every 200 ms: a tenant whose purge time passed is purged
/// without a request; one still within its retention is left alone.
#[tokio::test]
async fn the_sweeper_purges_a_tenant_once_its_purge_time_passed() {
    let server = TestServer::start_with(Backend::Postgres, |mut config| {
        config.tenants.purge_interval = Duration::from_millis(200);
        config
    })
    .await
    .unwrap();
    let mut tenants = server.tenants().await.unwrap();
    let due = server.create_active(new_tenant("expired")).await.unwrap();
    let kept = server.create_active(new_tenant("retained")).await.unwrap();
    delete(&mut tenants, &due.tenant_id).await;
    delete(&mut tenants, &kept.tenant_id).await;
    let pool = sqlx::PgPool::connect(&server.schema().unwrap().url())
        .await
        .unwrap();
    // Its 30 days of retention, over.
    sqlx::query("UPDATE tenants SET purge_at = now() - interval '1 minute' WHERE tenant_id = $1")
        .bind(uuid::Uuid::parse_str(&due.tenant_id).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let run = finished(&mut tenants, &due.tenant_id).await;
    assert_eq!(run.requested_by, "retention");
    assert!(!run.forced);
    assert_eq!(
        get(&mut tenants, &due.tenant_id).await.status(),
        TenantStatus::Purged
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        get(&mut tenants, &kept.tenant_id).await.status(),
        TenantStatus::Deleted,
        "still within its retention"
    );
}

/// The purge's DNS step as stored: (state, attempts), and the holder of the purge's lease.
async fn dns_step(pool: &sqlx::PgPool) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT s->>'state', (s->>'attempts')::int, p.lease_owner \
         FROM tenant_purges p, jsonb_array_elements(p.steps) s WHERE s->>'kind' = 'DNS'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_for_dns(pool: &sqlx::PgPool, attempts: i32) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let step = dns_step(pool).await;
        if let Some((state, n, owner)) = &step
            && state == "RUNNING"
            && *n == attempts
        {
            return owner.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{step:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas of the real binary: the one running the purge's DNS step is killed; the
/// other takes the purge over once the lease expires, the lost attempt counts, every
/// other step ran once, and another tenant keeps everything.
#[tokio::test]
async fn a_purge_whose_replica_is_killed_mid_step_is_finished_by_the_other() {
    use tenantd_adapters::postgres::testing::ScratchSchema;
    use tenantd_e2e::process::{holder_and_other, two_replicas};
    use tenantd_e2e::{TestKeys, admin_channel, create, settle};

    tenantd_server::install_crypto_provider();
    let schema = ScratchSchema::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let keys = TestKeys::generate();
    let replicas = two_replicas(&schema, dir.path(), &keys).await.unwrap();
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let channel = admin_channel(replicas.0.grpc_addr, &certs).await.unwrap();
    let mut tenants = TenantServiceClient::new(channel.clone());
    let mut runs =
        tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient::new(channel);
    let victim = create(&mut tenants, new_tenant("victim")).await.unwrap();
    let bystander = create(&mut tenants, new_tenant("bystander")).await.unwrap();
    for tenant in [&victim, &bystander] {
        settle(&mut runs, &tenant.tenant_id).await.unwrap();
    }
    delete(&mut tenants, &victim.tenant_id).await;

    // A slow DNS step: the test holds the lock its delete needs.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE dns_records IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    tenants
        .purge_tenant(purge(&victim.tenant_id, true))
        .await
        .unwrap();
    let owner = wait_for_dns(&pool, 1).await.unwrap();
    let (victim_replica, survivor) = holder_and_other(replicas, &owner);
    victim_replica.kill().await.unwrap();

    let owner = wait_for_dns(&pool, 2).await.unwrap();
    assert!(
        owner.contains(&format!("/{}/", survivor.pid().unwrap())),
        "the survivor holds the purge: {owner}"
    );
    blocker.rollback().await.unwrap();

    let channel = admin_channel(survivor.grpc_addr, &certs).await.unwrap();
    let mut tenants = TenantServiceClient::new(channel);
    let run = finished(&mut tenants, &victim.tenant_id).await;
    let attempts: Vec<(i32, Option<String>)> = run
        .steps
        .iter()
        .map(|s| (s.attempts, s.last_error.clone().map(|e| e.reason)))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, None),
            (2, Some("WORKER_LOST".to_owned())),
            (1, None),
            (1, None),
            (1, None),
            (1, None),
            (1, None),
            (1, None),
        ],
        "DATABASE, DNS (the lost attempt counts), BILLING, API_KEYS, IDEMPOTENCY, EXPORTS, \
         DATA_KEY, TOMBSTONE"
    );
    assert_eq!(
        get(&mut tenants, &victim.tenant_id).await.status(),
        TenantStatus::Purged
    );
    assert_eq!(
        get(&mut tenants, &bystander.tenant_id).await.status(),
        TenantStatus::Active
    );
    assert_gone_on_postgres(&schema.url(), &victim.tenant_id, &bystander.tenant_id).await;
}
