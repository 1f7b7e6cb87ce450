//! Legal hold end to end on both stores: set and release by an admin with a reason (the
//! tenant shows its hold, events record both), a service may not, a release without a hold
//! and an empty reason are refused with their reasons, and a deleted tenant's purge time
//! moves out by the time it was held.

use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    DeleteTenantRequest, GetTenantRequest, ListTenantEventsRequest, ReleaseLegalHoldRequest,
    SetLegalHoldRequest,
};
use tenantd_e2e::{TestServer, assert_reason, identity, new_tenant, on_every_store};
use tenantd_server::devcerts;
use tonic::Code;

on_every_store!(
    an_admin_sets_and_releases_a_legal_hold_with_its_reasons,
    a_hold_on_a_deleted_tenant_moves_its_purge_time_out_when_released,
);

fn hold(tenant_id: &str, reason: &str) -> SetLegalHoldRequest {
    SetLegalHoldRequest {
        tenant_id: tenant_id.into(),
        reason: reason.into(),
        etag: String::new(),
    }
}

fn release(tenant_id: &str, reason: &str) -> ReleaseLegalHoldRequest {
    ReleaseLegalHoldRequest {
        tenant_id: tenant_id.into(),
        reason: reason.into(),
        etag: String::new(),
    }
}

async fn an_admin_sets_and_releases_a_legal_hold_with_its_reasons(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = server.create_active(new_tenant("held")).await.unwrap();
    let id = created.tenant_id.clone();

    let status = client.set_legal_hold(hold(&id, "  ")).await.unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
    let status = client
        .release_legal_hold(release(&id, "case closed"))
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "NO_LEGAL_HOLD");

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
    let status = service
        .set_legal_hold(hold(&id, "case 2026-114"))
        .await
        .unwrap_err();
    assert_reason(&status, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");

    let held = client
        .set_legal_hold(SetLegalHoldRequest {
            etag: created.etag.clone(),
            ..hold(&id, "case 2026-114")
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let legal_hold = held.legal_hold.clone().expect("held");
    assert_eq!(legal_hold.reason, "case 2026-114");
    assert!(legal_hold.set_time.is_some());
    let read = client
        .get_tenant(GetTenantRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(read.legal_hold, held.legal_hold);
    // The etag moved on: the old one is stale.
    let status = client
        .release_legal_hold(ReleaseLegalHoldRequest {
            etag: created.etag,
            ..release(&id, "case closed")
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::Aborted, "ETAG_MISMATCH");

    let released = client
        .release_legal_hold(release(&id, "case closed"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(released.legal_hold, None);

    let events = server
        .events()
        .await
        .unwrap()
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: id.clone(),
            page_size: 100,
            ..ListTenantEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let holds: Vec<Payload> = events
        .into_iter()
        .filter_map(|e| e.payload)
        .filter(|p| {
            matches!(
                p,
                Payload::TenantLegalHoldSet(_) | Payload::TenantLegalHoldReleased(_)
            )
        })
        .collect();
    assert_eq!(holds.len(), 2, "{holds:?}");
    assert!(matches!(&holds[0], Payload::TenantLegalHoldSet(set) if set.reason == "case 2026-114"));
    assert!(
        matches!(&holds[1], Payload::TenantLegalHoldReleased(r) if r.reason == "case closed" && r.purge_time.is_none())
    );
}

async fn a_hold_on_a_deleted_tenant_moves_its_purge_time_out_when_released(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = server
        .create_active(new_tenant("held-deleted"))
        .await
        .unwrap();
    let id = created.tenant_id.clone();
    let deleted = client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let purge = deleted.purge_time.expect("purge time");
    client
        .set_legal_hold(hold(&id, "litigation"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let released = client
        .release_legal_hold(release(&id, "settled"))
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let moved = released.purge_time.expect("purge time");
    let held_for = moved.seconds - purge.seconds;
    assert!(
        (1..=60).contains(&held_for),
        "the purge time moved by the time held, not {held_for} s"
    );
}
