//! Races between clients: unique slugs, request-id idempotency and etags hold under
//! concurrent calls, on the in-memory store and on PostgreSQL.

use futures::future::join_all;
use prost_types::FieldMask;
use tenantd_e2e::pb::{CreateTenantRequest, ListTenantsRequest, UpdateTenantRequest};
use tenantd_e2e::{TestServer, assert_reason, create, new_tenant, on_every_store};
use tonic::Code;
use tonic_types::StatusExt as _;

on_every_store!(
    twenty_concurrent_creates_of_one_slug_make_exactly_one_tenant,
    twenty_concurrent_creates_with_one_request_id_make_one_tenant_and_identical_answers,
    two_concurrent_updates_with_the_same_etag_let_exactly_one_win,
);

async fn slugs_listed(server: &TestServer, prefix: &str) -> Vec<String> {
    let mut client = server.tenants().await.unwrap();
    client
        .list_tenants(ListTenantsRequest {
            slug_prefix: prefix.into(),
            page_size: 100,
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tenants
        .into_iter()
        .map(|t| t.slug)
        .collect()
}

async fn twenty_concurrent_creates_of_one_slug_make_exactly_one_tenant(server: TestServer) {
    let client = server.tenants().await.unwrap();
    let calls = (0..20).map(|i| {
        let mut client = client.clone();
        let mut tenant = new_tenant("contested");
        tenant.display_name = format!("Contender {i}");
        async move { create(&mut client, tenant).await }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists))
        .count();
    assert_eq!((ok, taken), (1, 19), "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_reason(refused, Code::AlreadyExists, "SLUG_TAKEN");
    }
    assert_eq!(slugs_listed(&server, "contested").await, ["contested"]);
}

async fn twenty_concurrent_creates_with_one_request_id_make_one_tenant_and_identical_answers(
    server: TestServer,
) {
    let client = server.tenants().await.unwrap();
    let request = CreateTenantRequest {
        tenant: Some(new_tenant("twin")),
        request_id: "retry-storm-1".into(),
    };
    let calls = (0..20).map(|_| {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            client
                .create_tenant(request)
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "answers differ");
    assert_eq!(slugs_listed(&server, "twin").await, ["twin"]);
}

async fn two_concurrent_updates_with_the_same_etag_let_exactly_one_win(server: TestServer) {
    let client = server.tenants().await.unwrap();
    let tenant = server.create_active(new_tenant("etag-race")).await.unwrap();
    let calls = ["First Writer", "Second Writer"].map(|name| {
        let mut client = client.clone();
        let mut change = tenant.clone();
        change.display_name = name.into();
        async move {
            client
                .update_tenant(UpdateTenantRequest {
                    tenant: Some(change),
                    update_mask: Some(FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                })
                .await
        }
    });
    let results = join_all(calls).await;
    let codes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok))
        .collect();
    assert!(
        codes == [Code::Ok, Code::Aborted] || codes == [Code::Aborted, Code::Ok],
        "{codes:?}"
    );
    // The loser read the tenant either after the winner's commit (its etag is stale) or
    // before it (its write lost the race).
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    let reason = lost.get_details_error_info().unwrap().reason;
    assert!(
        ["ETAG_MISMATCH", "CONCURRENT_MODIFICATION"].contains(&reason.as_str()),
        "{lost:?}"
    );
}
