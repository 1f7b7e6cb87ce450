//! The audit log end to end: by the default policy every mutation and every denied call is
//! recorded with its principal, method, tenant, code and request id, and successful reads
//! are not; with `--audit-reads all` they are too. Records are listed by
//! ListAuditRecords; a graceful shutdown loses none.

use std::time::{Duration, Instant};

use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    AuditRecord, CreateTenantRequest, GetPlanRequest, GetTenantRequest, ListAuditRecordsRequest,
};
use tenantd_e2e::{
    Backend, TestServer, assert_reason, create, identity, new_tenant, on_every_store,
};
use tenantd_server::Config;
use tenantd_server::audit::ReadAudit;
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;

on_every_store!(mutations_and_denied_calls_are_audited_and_reads_are_not);

/// A server auditing every read too.
async fn auditing_reads(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| Config {
        audit_reads: ReadAudit::All,
        ..config
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn with_audit_reads_all_reads_are_audited_in_memory() {
    every_call_allowed_or_denied_is_audited(auditing_reads(Backend::Memory).await).await;
}

#[tokio::test]
async fn with_audit_reads_all_reads_are_audited_on_postgres() {
    every_call_allowed_or_denied_is_audited(auditing_reads(Backend::Postgres).await).await;
}

/// A tenant creation with request id `id`.
fn creation(slug: &str, id: &str) -> tonic::Request<CreateTenantRequest> {
    let mut request = tonic::Request::new(CreateTenantRequest {
        tenant: Some(new_tenant(slug)),
        request_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

async fn mutations_and_denied_calls_are_audited_and_reads_are_not(server: TestServer) {
    let mut admin = server.tenants().await.unwrap();
    let created = admin
        .create_tenant(creation("audited", "req-create"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let mut read = tonic::Request::new(GetTenantRequest {
        tenant_id: created.tenant_id.clone(),
    });
    read.metadata_mut()
        .insert("x-request-id", "req-read".parse().unwrap());
    admin.get_tenant(read).await.unwrap();
    // A read that fails for its own reason (not a denial) is still a read.
    admin
        .get_tenant(GetTenantRequest {
            tenant_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();

    let me = format!("spiffe://tenantd.local/tenant/{}", created.tenant_id);
    let (cert, key) = devcerts::issue(&server.certs.dir, &me, "tenant-audited").unwrap();
    let mut denied = tonic::Request::new(ListAuditRecordsRequest::default());
    denied
        .metadata_mut()
        .insert("x-request-id", "req-denied".parse().unwrap());
    EventServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    )
    .list_audit_records(denied)
    .await
    .unwrap_err();
    // The queue is written in order: once this last mutation is listed, every call before
    // it that was kept is listed too.
    admin
        .create_tenant(creation("barrier", "req-barrier"))
        .await
        .unwrap();

    let mut events = server.events().await.unwrap();
    let everything = audited(
        &mut events,
        ListAuditRecordsRequest {
            page_size: 500,
            ..ListAuditRecordsRequest::default()
        },
        3,
    )
    .await;
    let ids: Vec<(&str, &str, &str)> = everything
        .iter()
        .map(|r| (r.request_id.as_str(), r.method.as_str(), r.code.as_str()))
        .filter(|(id, _, _)| id.starts_with("req-"))
        .collect();
    assert_eq!(
        ids,
        [
            ("req-barrier", "/tenant.v1.TenantService/CreateTenant", "OK"),
            (
                "req-denied",
                "/tenant.v1.EventService/ListAuditRecords",
                "PERMISSION_DENIED"
            ),
            ("req-create", "/tenant.v1.TenantService/CreateTenant", "OK"),
        ],
        "newest first; the successful and the failed GetTenant are not audited: {everything:?}"
    );
    assert!(
        everything
            .iter()
            .all(|r| r.method != "/tenant.v1.TenantService/GetTenant"),
        "no read audited by default: {everything:?}"
    );
}

/// Lists audit records until `want` of them match `query` (the writer is write-behind);
/// fails the test when they are not there within 10 s.
async fn audited(
    events: &mut EventServiceClient<Channel>,
    query: ListAuditRecordsRequest,
    want: usize,
) -> Vec<AuditRecord> {
    let started = Instant::now();
    loop {
        let records = events
            .list_audit_records(query.clone())
            .await
            .unwrap()
            .into_inner()
            .records;
        if records.len() >= want {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} of {want} audit records within 10 s: {records:?}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn every_call_allowed_or_denied_is_audited(server: TestServer) {
    let mut admin = server.tenants().await.unwrap();
    let mine = create(&mut admin, new_tenant("mine")).await.unwrap();
    let theirs = create(&mut admin, new_tenant("theirs")).await.unwrap();

    let mut traced = tonic::Request::new(GetTenantRequest {
        tenant_id: mine.tenant_id.clone(),
    });
    traced
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    admin.get_tenant(traced).await.unwrap();

    let me = format!("spiffe://tenantd.local/tenant/{}", mine.tenant_id);
    let (cert, key) = devcerts::issue(&server.certs.dir, &me, "tenant-mine").unwrap();
    let mut as_tenant = TenantServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    );
    let denied = as_tenant
        .get_tenant(GetTenantRequest {
            tenant_id: theirs.tenant_id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");

    let mut events = server.events().await.unwrap();
    let by_me = audited(
        &mut events,
        ListAuditRecordsRequest {
            principal: me.clone(),
            ..ListAuditRecordsRequest::default()
        },
        1,
    )
    .await;
    assert_eq!(by_me.len(), 1, "{by_me:?}");
    assert_eq!(by_me[0].method, "/tenant.v1.TenantService/GetTenant");
    assert_eq!(by_me[0].code, "PERMISSION_DENIED");
    assert_eq!(by_me[0].tenant_id, theirs.tenant_id);

    let about_mine = audited(
        &mut events,
        ListAuditRecordsRequest {
            tenant_id: mine.tenant_id.clone(),
            ..ListAuditRecordsRequest::default()
        },
        1,
    )
    .await;
    let get = about_mine
        .iter()
        .find(|r| r.request_id == "req-42")
        .expect("the traced call");
    assert_eq!(
        (get.principal.as_str(), get.code.as_str()),
        ("spiffe://tenantd.local/admin", "OK")
    );

    let everything = audited(
        &mut events,
        ListAuditRecordsRequest {
            page_size: 500,
            ..ListAuditRecordsRequest::default()
        },
        4,
    )
    .await;
    assert!(
        everything.windows(2).all(|w| w[0].audit_id > w[1].audit_id),
        "newest first"
    );
    let text = format!("{everything:?}");
    assert!(
        !text.contains("ops@"),
        "audit records must not carry emails"
    );

    let denied = EventServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    )
    .list_audit_records(ListAuditRecordsRequest::default())
    .await
    .unwrap_err();
    // The audit log is for operators.
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
}

#[tokio::test]
async fn a_graceful_shutdown_loses_no_audit_record() {
    let server = auditing_reads(Backend::Postgres).await;
    let mut plans = PlanServiceClient::new(server.admin_channel().await.unwrap());
    for _ in 0..50 {
        plans
            .get_plan(GetPlanRequest {
                plan_id: "pro".into(),
            })
            .await
            .unwrap();
    }
    drop(plans);
    let schema = server
        .stop()
        .await
        .unwrap()
        .expect("a PostgreSQL server has a schema");
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let (written,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM audit_records WHERE method = '/tenant.v1.PlanService/GetPlan'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(written, 50);
}
