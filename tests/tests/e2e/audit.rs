//! The audit log end to end: every call, allowed or denied, is recorded with its principal,
//! method, tenant, code and request id, listed by ListAuditRecords; a graceful shutdown
//! loses none.

use std::time::{Duration, Instant};

use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{AuditRecord, GetPlanRequest, GetTenantRequest, ListAuditRecordsRequest};
use tenantd_e2e::{
    Backend, TestServer, assert_reason, create, identity, new_tenant, on_every_store,
};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;

on_every_store!(every_call_allowed_or_denied_is_audited);

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
    let server = TestServer::start(Backend::Postgres).await.unwrap();
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
