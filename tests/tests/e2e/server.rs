//! The server around the services: mutual TLS refusals, health, reflection, metrics,
//! plans, the event log, not-yet-built RPCs and graceful shutdown.

use std::time::Duration;

use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    GetPlanRequest, GetTenantRequest, ListPlansRequest, ListTenantEventsRequest,
    SuspendTenantRequest,
};
use tenantd_e2e::{
    Backend, TestServer, admin_identity_from_foreign_ca, assert_reason, counter, create,
    new_tenant, on_every_store,
};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;

on_every_store!(
    plans_are_listed_and_read,
    every_change_is_listed_as_an_event_without_the_contact_email,
    health_reports_serving_overall_and_per_service,
);
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Makes one GetTenant call on a channel built with `identity`; the error if any step fails.
async fn call_with(
    server: &TestServer,
    identity: Option<tonic::transport::Identity>,
) -> Result<(), String> {
    let channel = server.channel(identity).await.map_err(|e| e.to_string())?;
    TenantServiceClient::new(channel)
        .get_tenant(GetTenantRequest {
            tenant_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into(),
        })
        .await
        .map(drop)
        .map_err(|status| status.to_string())
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    let refused = call_with(&server, None)
        .await
        .expect_err("an anonymous client got through");
    assert!(refused.contains("CertificateRequired"), "{refused}");
    // The same call with the admin certificate reaches the service (NOT_FOUND from it).
    let admin =
        tenantd_e2e::identity(&server.certs.admin_cert(), &server.certs.admin_key()).unwrap();
    let answered = call_with(&server, Some(admin)).await.unwrap_err();
    assert!(answered.contains("not found"), "{answered}");
}

#[tokio::test]
async fn client_with_a_certificate_from_another_ca_is_refused() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    let foreign = admin_identity_from_foreign_ca().unwrap();
    let refused = call_with(&server, Some(foreign))
        .await
        .expect_err("a foreign CA got through");
    // The foreign CA even has the same name as the real one: only its signature differs.
    assert!(refused.contains("fatal alert"), "{refused}");
}

async fn health_reports_serving_overall_and_per_service(server: TestServer) {
    let mut health = HealthClient::new(server.admin_channel().await.unwrap());
    let mut services = vec!["", "tenant.v1.TenantService", "tenant.v1.PlanService"];
    if server.schema().is_some() {
        services.push("database");
    }
    for service in services {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start(Backend::Memory).await.unwrap();
    let channel = server.admin_channel().await.unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = stream.next().await else {
        panic!("no v1 reflection answer")
    };
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1 reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "tenant.v1.TenantService",
        "tenant.v1.ProvisioningService",
        "tenant.v1.ApiKeyService",
        "tenant.v1.PlanService",
        "tenant.v1.EventService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "tenant.v1.TenantService".into(),
            ),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = stream.next().await else {
        panic!("no v1alpha reflection answer")
    };
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files))
            if !files.file_descriptor_proto.is_empty()
    ));
}

#[tokio::test]
async fn metrics_count_the_calls_made_by_method_and_code() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    let mut client = server.tenants().await.unwrap();
    create(&mut client, new_tenant("acme")).await.unwrap();
    for _ in 0..2 {
        let missing = GetTenantRequest {
            tenant_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into(),
        };
        assert_reason(
            &client.get_tenant(missing).await.unwrap_err(),
            Code::NotFound,
            "TENANT_NOT_FOUND",
        );
    }
    let text = server.metrics_text().await.unwrap();
    let tenant_rpc = |method: &'static str| {
        [
            ("grpc_service", "tenant.v1.TenantService"),
            ("grpc_method", method),
            ("grpc_type", "unary"),
        ]
    };
    assert_eq!(
        counter(&text, "grpc_server_started_total", &tenant_rpc("GetTenant")),
        2
    );
    let mut not_found = tenant_rpc("GetTenant").to_vec();
    not_found.push(("grpc_code", "NotFound"));
    assert_eq!(counter(&text, "grpc_server_handled_total", &not_found), 2);
    let mut created = tenant_rpc("CreateTenant").to_vec();
    created.push(("grpc_code", "OK"));
    assert_eq!(counter(&text, "grpc_server_handled_total", &created), 1);
    assert_eq!(
        counter(
            &text,
            "grpc_server_handling_seconds_count",
            &tenant_rpc("GetTenant")
        ),
        2
    );
    assert!(text.contains("# TYPE grpc_server_handling_seconds histogram"));
}

async fn plans_are_listed_and_read(server: TestServer) {
    let mut plans = server.plans().await.unwrap();
    let listed = plans
        .list_plans(ListPlansRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.plans.iter().map(|p| p.plan_id.as_str()).collect();
    assert_eq!(ids, ["basic", "enterprise", "free", "pro"]);
    let pro = plans
        .get_plan(GetPlanRequest {
            plan_id: "pro".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(pro.quotas.unwrap().max_api_keys, 20);
    let status = plans
        .get_plan(GetPlanRequest {
            plan_id: "gold".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "PLAN_NOT_FOUND");
}

async fn every_change_is_listed_as_an_event_without_the_contact_email(server: TestServer) {
    let mut client = server.tenants().await.unwrap();
    let tenant = server.create_active(new_tenant("acme")).await.unwrap();
    client
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
            reason: "audit".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let mut events = server.events().await.unwrap();
    let listed = events
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: tenant.tenant_id.clone(),
            ..ListTenantEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = listed
        .events
        .iter()
        .map(|e| match e.payload.as_ref().unwrap() {
            Payload::TenantCreated(_) => "created",
            Payload::TenantActivated(_) => "activated",
            Payload::TenantSuspended(_) => "suspended",
            Payload::ProvisioningStepChanged(_) => "step",
            Payload::ApiKeyCreated(_) => "key",
            Payload::WelcomeNotificationRequested(_) => "welcome",
            Payload::TenantSchemaMigrated(m) => {
                assert_eq!(
                    (m.from_version, m.to_version, m.rollout_id.as_str()),
                    (0, 2, "")
                );
                "schema"
            }
            _ => "other",
        })
        .filter(|kind| *kind != "step")
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "schema",
            "key",
            "welcome",
            "activated",
            "suspended"
        ]
    );
    assert!(
        listed
            .events
            .iter()
            .all(|e| e.tenant_id == tenant.tenant_id)
    );
    let debug = format!("{listed:?}");
    assert!(
        !debug.contains("ops@acme.example"),
        "events must not carry the email"
    );
}

#[tokio::test]
async fn shutdown_stops_the_server_and_refuses_new_connections() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    let addr = server.grpc_addr;
    create(&mut server.tenants().await.unwrap(), new_tenant("acme"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("stopped within the grace period")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after stop"
    );
}

#[tokio::test]
async fn metrics_expose_the_database_pool_on_postgres() {
    let server = TestServer::start(Backend::Postgres).await.unwrap();
    create(&mut server.tenants().await.unwrap(), new_tenant("pooled"))
        .await
        .unwrap();
    let text = server.metrics_text().await.unwrap();
    assert_eq!(counter(&text, "db_pool_max_connections", &[]), 10);
    // Which connections are idle at scrape time depends on the background tasks; how many
    // are open does not: at least the one that served the create, at most the maximum.
    let idle = counter(&text, "db_pool_connections", &[("state", "idle")]);
    let in_use = counter(&text, "db_pool_connections", &[("state", "in_use")]);
    assert!((1..=10).contains(&(idle + in_use)), "{text}");
    assert!(text.contains("db_pool_connections{state=\"in_use\"}"));
}
