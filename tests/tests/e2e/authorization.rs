//! Identity-based authorization end to end: the role comes from the client certificate's
//! SPIFFE id only, on both stores. The full policy table is tested in the application crate.

use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    GetTenantRequest, ListPlansRequest, ListTenantsRequest, SuspendTenantRequest,
};
use tenantd_e2e::{TestServer, assert_reason, create, identity, new_tenant, on_every_store};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;

on_every_store!(
    a_tenant_certificate_reads_its_own_tenant_and_nothing_else,
    a_service_certificate_reads_but_cannot_change,
    a_certificate_without_a_tenantd_identity_is_denied_everything,
);

async fn channel_as(server: &TestServer, spiffe_path: &str, name: &str) -> Channel {
    let spiffe_id = format!("spiffe://{spiffe_path}");
    let (cert, key) = devcerts::issue(&server.certs.dir, &spiffe_id, name).unwrap();
    server
        .channel(Some(identity(&cert, &key).unwrap()))
        .await
        .unwrap()
}

fn get(tenant_id: &str) -> GetTenantRequest {
    GetTenantRequest {
        tenant_id: tenant_id.into(),
    }
}

async fn a_tenant_certificate_reads_its_own_tenant_and_nothing_else(server: TestServer) {
    let mine = server.create_active(new_tenant("mine")).await.unwrap();
    let theirs = server.create_active(new_tenant("theirs")).await.unwrap();
    let channel = channel_as(
        &server,
        &format!("tenantd.local/tenant/{}", mine.tenant_id),
        "tenant-mine",
    )
    .await;
    let mut me = TenantServiceClient::new(channel.clone());

    let read = me
        .get_tenant(get(&mine.tenant_id))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(read, mine);

    let existing = me.get_tenant(get(&theirs.tenant_id)).await.unwrap_err();
    let missing = me
        .get_tenant(get("019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"))
        .await
        .unwrap_err();
    assert_reason(&existing, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    assert_reason(&missing, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    assert_eq!(
        existing.message(),
        missing.message(),
        "the answer must not reveal existence"
    );

    let mut spoofed = tonic::Request::new(get(&theirs.tenant_id));
    spoofed
        .metadata_mut()
        .insert("x-tenant-id", theirs.tenant_id.parse().unwrap());
    assert_reason(
        &me.get_tenant(spoofed).await.unwrap_err(),
        Code::PermissionDenied,
        "OPERATION_NOT_PERMITTED",
    );

    let listed = me
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap_err();
    assert_reason(&listed, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    let suspend = SuspendTenantRequest {
        tenant_id: mine.tenant_id.clone(),
        ..SuspendTenantRequest::default()
    };
    assert_reason(
        &me.suspend_tenant(suspend).await.unwrap_err(),
        Code::PermissionDenied,
        "OPERATION_NOT_PERMITTED",
    );
    assert_reason(
        &create(&mut me, new_tenant("rogue")).await.unwrap_err(),
        Code::PermissionDenied,
        "OPERATION_NOT_PERMITTED",
    );

    let plans = PlanServiceClient::new(channel)
        .list_plans(ListPlansRequest::default())
        .await;
    assert!(
        plans.is_ok(),
        "the plan catalogue is readable by every identity"
    );
}

async fn a_service_certificate_reads_but_cannot_change(server: TestServer) {
    let mut admin = server.tenants().await.unwrap();
    let tenant = create(&mut admin, new_tenant("acme")).await.unwrap();
    let mut service = TenantServiceClient::new(
        channel_as(&server, "tenantd.local/service/billing", "service-billing").await,
    );

    assert!(service.get_tenant(get(&tenant.tenant_id)).await.is_ok());
    let listed = service
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tenants.len(), 1);
    assert_reason(
        &create(&mut service, new_tenant("other")).await.unwrap_err(),
        Code::PermissionDenied,
        "OPERATION_NOT_PERMITTED",
    );
    let suspend = SuspendTenantRequest {
        tenant_id: tenant.tenant_id.clone(),
        ..SuspendTenantRequest::default()
    };
    assert_reason(
        &service.suspend_tenant(suspend).await.unwrap_err(),
        Code::PermissionDenied,
        "OPERATION_NOT_PERMITTED",
    );
}

async fn a_certificate_without_a_tenantd_identity_is_denied_everything(server: TestServer) {
    for (path, name) in [
        ("elsewhere.local/admin", "foreign-domain"),
        ("tenantd.local/root", "unknown-role"),
    ] {
        let channel = channel_as(&server, path, name).await;
        let status = PlanServiceClient::new(channel.clone())
            .list_plans(ListPlansRequest::default())
            .await
            .unwrap_err();
        assert_reason(&status, Code::PermissionDenied, "IDENTITY_MISSING");
        let status = TenantServiceClient::new(channel)
            .list_tenants(ListTenantsRequest::default())
            .await
            .unwrap_err();
        assert_reason(&status, Code::PermissionDenied, "IDENTITY_MISSING");
    }
}
