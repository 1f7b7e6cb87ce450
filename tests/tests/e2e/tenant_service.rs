//! TenantService end to end: every RPC over mutual TLS against the real server, with the
//! documented error codes, on the in-memory store and on PostgreSQL.

use prost_types::FieldMask;
use tenantd_e2e::pb::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest,
    ResumeTenantRequest, RunState, SuspendTenantRequest, TenantStatus, UndeleteTenantRequest,
    UpdateTenantRequest,
};
use tenantd_e2e::{
    TestServer, assert_reason, create, new_tenant, on_every_store, settle, violated_fields,
};
use tonic::Code;

on_every_store!(
    nul_characters_and_odd_filters_are_invalid_argument_not_internal,
    create_tenant_returns_a_provisioning_tenant_that_becomes_active,
    create_tenant_with_invalid_slug_returns_invalid_argument_naming_the_field,
    create_tenant_with_reserved_slug_unknown_plan_or_no_tenant_is_invalid_argument,
    create_tenant_with_taken_slug_returns_already_exists,
    create_tenant_retried_with_the_same_request_id_returns_the_original,
    get_tenant_with_unknown_id_returns_not_found_and_malformed_id_invalid_argument,
    list_tenants_pages_in_creation_order_and_filters,
    update_tenant_changes_only_masked_fields_and_checks_the_etag,
    delete_tenant_is_soft_and_undelete_restores_it,
    suspend_and_resume_follow_the_lifecycle,
);

async fn create_tenant_returns_a_provisioning_tenant_that_becomes_active(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = create(&mut client, new_tenant("acme")).await.unwrap();
    assert_eq!(created.slug, "acme");
    assert_eq!(created.status(), TenantStatus::Provisioning);
    let summary = created
        .provisioning
        .clone()
        .expect("a provisioning summary");
    assert_eq!(summary.state(), RunState::Running);
    assert_eq!(summary.total_steps, 5);
    assert!(summary.completed_steps < 5);
    assert_eq!(created.contact_email, "ops@acme.example");
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some());
    uuid_v7(&created.tenant_id);

    let got = client
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(got.tenant_id, created.tenant_id);
    assert_eq!(got.create_time, created.create_time);

    let run = settle(
        &mut server.provisioning().await.unwrap(),
        &created.tenant_id,
    )
    .await
    .unwrap();
    assert_eq!(run.state(), RunState::Succeeded);
    let active = client
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(active.status(), TenantStatus::Active);
    let summary = active.provisioning.unwrap();
    assert_eq!(
        (summary.state(), summary.completed_steps),
        (RunState::Succeeded, 5)
    );
    assert_eq!(summary.run_id, run.run_id);
}

fn uuid_v7(text: &str) {
    let bytes: Vec<char> = text.chars().collect();
    assert_eq!(bytes.len(), 36, "{text}");
    assert_eq!(bytes[14], '7', "not a v7 UUID: {text}");
}

async fn create_tenant_with_invalid_slug_returns_invalid_argument_naming_the_field(
    server: TestServer,
) {
    let mut client = server.tenants().await.unwrap();
    let mut tenant = new_tenant("acme");
    tenant.slug = "Not A Slug".into();
    tenant.contact_email = "nope".into();
    let status = create(&mut client, tenant).await.unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(
        violated_fields(&status),
        ["tenant.slug", "tenant.contact_email"]
    );
    assert!(
        !status.message().contains("nope"),
        "the email must not be echoed"
    );
}

async fn create_tenant_with_reserved_slug_unknown_plan_or_no_tenant_is_invalid_argument(
    server: TestServer,
) {
    let mut client = server.tenants().await.unwrap();
    let mut reserved = new_tenant("admin");
    reserved.slug = "admin".into();
    let mut unknown_plan = new_tenant("acme");
    unknown_plan.plan_id = "platinum".into();
    for (tenant, field, reason) in [
        (reserved, "tenant.slug", "FIELD_INVALID"),
        (unknown_plan, "tenant.plan_id", "PLAN_NOT_FOUND"),
    ] {
        let status = create(&mut client, tenant).await.unwrap_err();
        assert_reason(&status, Code::InvalidArgument, reason);
        assert_eq!(violated_fields(&status)[0], field);
    }
    let status = client
        .create_tenant(CreateTenantRequest {
            tenant: None,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
}

async fn create_tenant_with_taken_slug_returns_already_exists(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    create(&mut client, new_tenant("acme")).await.unwrap();
    let status = create(&mut client, new_tenant("acme")).await.unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "SLUG_TAKEN");
}

async fn create_tenant_retried_with_the_same_request_id_returns_the_original(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let request = CreateTenantRequest {
        tenant: Some(new_tenant("acme")),
        request_id: "7c6f1d0e-retry".into(),
    };
    let first = client
        .create_tenant(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client
        .create_tenant(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);

    let mut other_body = request;
    other_body.tenant = Some(new_tenant("other"));
    let status = client.create_tenant(other_body).await.unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_eq!(violated_fields(&status)[0], "request_id");
}

async fn get_tenant_with_unknown_id_returns_not_found_and_malformed_id_invalid_argument(
    server: TestServer,
) {
    let mut client = server.tenants().await.unwrap();
    let unknown = "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";
    let status = client
        .get_tenant(GetTenantRequest {
            tenant_id: unknown.into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "TENANT_NOT_FOUND");
    let status = client
        .get_tenant(GetTenantRequest {
            tenant_id: "../../etc/passwd".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
}

async fn list_tenants_pages_in_creation_order_and_filters(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let mut slugs = Vec::new();
    for i in 0..5 {
        let mut tenant = new_tenant(&format!("shop-{i}"));
        if i % 2 == 0 {
            tenant.plan_id = "free".into();
        }
        slugs.push(create(&mut client, tenant).await.unwrap().slug);
    }
    create(&mut client, new_tenant("other")).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tenants(ListTenantsRequest {
                page_size: 2,
                page_token: token.clone(),
                slug_prefix: "shop-".into(),
                ..ListTenantsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tenants.len() <= 2);
        seen.extend(page.tenants.into_iter().map(|t| t.slug));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, slugs);

    let free = client
        .list_tenants(ListTenantsRequest {
            plan_id: "free".into(),
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let free: Vec<_> = free.tenants.into_iter().map(|t| t.slug).collect();
    assert_eq!(free, ["shop-0", "shop-2", "shop-4"]);

    let by_email = client
        .list_tenants(ListTenantsRequest {
            contact_email: "OPS@other.example".into(),
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_email.tenants.len(), 1);
    assert_eq!(by_email.tenants[0].slug, "other");

    let status = client
        .list_tenants(ListTenantsRequest {
            page_token: "garbage!".into(),
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    let status = client
        .list_tenants(ListTenantsRequest {
            status: 42,
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
}

async fn update_tenant_changes_only_masked_fields_and_checks_the_etag(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = server.create_active(new_tenant("acme")).await.unwrap();

    let mut change = created.clone();
    change.display_name = "Acme Holdings".into();
    change.plan_id = "free".into(); // not in the mask: must stay "pro"
    let updated = client
        .update_tenant(UpdateTenantRequest {
            tenant: Some(change.clone()),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(updated.display_name, "Acme Holdings");
    assert_eq!(updated.plan_id, "pro");
    assert_ne!(updated.etag, created.etag);

    // The same change based on the old etag is stale.
    let status = client
        .update_tenant(UpdateTenantRequest {
            tenant: Some(change.clone()),
            update_mask: Some(FieldMask {
                paths: vec!["plan_id".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::Aborted, "ETAG_MISMATCH");

    for path in ["slug", "no_such_field"] {
        let mut current = updated.clone();
        current.etag = String::new();
        let status = client
            .update_tenant(UpdateTenantRequest {
                tenant: Some(current),
                update_mask: Some(FieldMask {
                    paths: vec![path.into()],
                }),
            })
            .await
            .unwrap_err();
        assert_reason(&status, Code::InvalidArgument, "UPDATE_MASK_INVALID");
        assert_eq!(violated_fields(&status)[0], "update_mask", "{path}");
    }
}

async fn delete_tenant_is_soft_and_undelete_restores_it(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = server.create_active(new_tenant("acme")).await.unwrap();
    let id = created.tenant_id.clone();

    let deleted = client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: id.clone(),
            etag: created.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(deleted.status(), TenantStatus::Deleted);
    let (delete, purge) = (deleted.delete_time.unwrap(), deleted.purge_time.unwrap());
    assert_eq!(purge.seconds - delete.seconds, 30 * 86_400);

    let listed = client
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tenants.is_empty(),
        "deleted tenants are hidden by default"
    );
    let listed = client
        .list_tenants(ListTenantsRequest {
            show_deleted: true,
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tenants.len(), 1);

    let status = client
        .delete_tenant(DeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "INVALID_TRANSITION");
    let slug_taken = create(&mut client, new_tenant("acme")).await.unwrap_err();
    // A deleted tenant keeps its slug.
    assert_reason(&slug_taken, Code::AlreadyExists, "SLUG_TAKEN");

    let restored = client
        .undelete_tenant(UndeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(restored.status(), TenantStatus::Active);
    assert!(restored.delete_time.is_none());
}

async fn suspend_and_resume_follow_the_lifecycle(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let created = server.create_active(new_tenant("acme")).await.unwrap();
    let id = created.tenant_id.clone();

    let status = client
        .resume_tenant(ResumeTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    // An ACTIVE tenant cannot be resumed.
    assert_reason(&status, Code::FailedPrecondition, "INVALID_TRANSITION");

    let suspended = client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id.clone(),
            reason: "invoice overdue".into(),
            etag: created.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(suspended.status(), TenantStatus::Suspended);
    assert_eq!(suspended.status_reason, "invoice overdue");

    let status = client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id.clone(),
            reason: String::new(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "INVALID_TRANSITION");

    let resumed = client
        .resume_tenant(ResumeTenantRequest {
            tenant_id: id.clone(),
            etag: suspended.etag,
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(resumed.status(), TenantStatus::Active);
    assert_eq!(resumed.status_reason, "");

    let status = client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id,
            reason: "x".into(),
            etag: created.etag,
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::Aborted, "ETAG_MISMATCH");
}

async fn nul_characters_and_odd_filters_are_invalid_argument_not_internal(server: TestServer) {
    use tenantd_e2e::pb::GetPlanRequest;
    use tenantd_e2e::pb::plan_service_client::PlanServiceClient;

    let mut client = server.tenants().await.unwrap();
    let mut tenant = new_tenant("nul");
    let mut config = prost_types::Struct::default();
    config.fields.insert(
        "k".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("a\u{0}b".into())),
        },
    );
    tenant.config = Some(config);
    let status = create(&mut client, tenant).await.unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["tenant.config"]);

    for request in [
        ListTenantsRequest {
            plan_id: "p\u{0}".into(),
            ..ListTenantsRequest::default()
        },
        ListTenantsRequest {
            slug_prefix: "s\u{0}".into(),
            ..ListTenantsRequest::default()
        },
        ListTenantsRequest {
            labels: [("env".into(), "\u{0}".into())].into(),
            ..ListTenantsRequest::default()
        },
    ] {
        let status = client.list_tenants(request).await.unwrap_err();
        assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
    }
    let status = PlanServiceClient::new(server.admin_channel().await.unwrap())
        .get_plan(GetPlanRequest {
            plan_id: "pro\u{0}".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "FIELD_INVALID");
}
