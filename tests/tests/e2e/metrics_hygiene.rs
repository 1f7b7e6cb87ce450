//! `/metrics` after the flows that handle tenant data (create and provision, update, an API
//! key made and verified, a bad request, suspend, delete, export, purge): no contact email,
//! secret, display name, slug, label, reason text or tenant id shows anywhere in it, and
//! every label value is a short token from a bounded vocabulary (never free text, never an
//! id), so the cardinality of every series stays fixed whatever clients send.

use std::collections::BTreeSet;
use std::time::Duration;

use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, CreateTenantRequest, DeleteTenantRequest, ExportTenantRequest,
    PurgeTenantRequest, SuspendTenantRequest, UpdateTenantRequest, VerifyApiKeyRequest,
};
use tenantd_e2e::{Backend, TestServer, eventually, new_tenant};
use tonic::transport::Channel;

/// Every label of every sample in a Prometheus text exposition, as (label, value).
fn labels(exposition: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((inside, _)) = rest.rsplit_once('}') else {
            panic!("unterminated labels in {line}");
        };
        let mut rest = inside;
        while let Some((name, after)) = rest.split_once("=\"") {
            let end = after
                .find('"')
                .unwrap_or_else(|| panic!("unterminated value in {line}"));
            found.insert((
                name.trim_start_matches(',').to_owned(),
                after[..end].to_owned(),
            ));
            rest = &after[end + 1..];
        }
    }
    found
}

/// A value of a bounded vocabulary: a short token of letters, digits and `_ . : / -`, not
/// a UUID.
fn is_bounded_token(value: &str) -> bool {
    let uuid_like = value.len() == 36 && value.bytes().filter(|b| *b == b'-').count() == 4;
    value.len() <= 64
        && !uuid_like
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-+".contains(&b))
}

async fn exercise(server: &TestServer, tenants: &mut TenantServiceClient<Channel>) -> Vec<String> {
    let mut tenant = new_tenant("leaky-acme");
    tenant.display_name = "Zq Quiet Display Name".into();
    tenant.contact_email = "zq.ops@leaky-acme.example".into();
    tenant.labels = [("owner".to_owned(), "zq-owner-value".to_owned())].into();
    let created = server.create_active(tenant).await.unwrap();
    let id = created.tenant_id.clone();

    let mut keys = ApiKeyServiceClient::new(server.admin_channel().await.unwrap());
    let key = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: id.clone(),
            display_name: "zq key name".into(),
            scopes: vec!["tenants.read".into()],
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    for api_key in [key.secret.clone(), format!("{}x", key.secret)] {
        keys.verify_api_key(VerifyApiKeyRequest { api_key })
            .await
            .unwrap();
    }
    let mut change = created.clone();
    change.display_name = "Zq Renamed".into();
    tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap();
    // A refused request whose fields carry text.
    let mut bad = new_tenant("Zq Not A Slug");
    bad.contact_email = "zq-not-an-email".into();
    tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(bad),
            request_id: "zq-request-id".into(),
        })
        .await
        .unwrap_err();
    tenants
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: id.clone(),
            reason: "zq suspension reason".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    tenants
        .delete_tenant(DeleteTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    tenants
        .export_tenant(ExportTenantRequest {
            tenant_id: id.clone(),
        })
        .await
        .unwrap();
    tenants
        .purge_tenant(PurgeTenantRequest {
            tenant_id: id.clone(),
            etag: String::new(),
            force: true,
        })
        .await
        .unwrap();
    vec![
        id,
        key.secret,
        key.api_key.unwrap().key_id,
        "leaky-acme".into(),
        "Zq".into(),
        "zq".into(),
    ]
}

#[tokio::test]
async fn metrics_carry_no_tenant_data_and_only_bounded_label_values() {
    let server = TestServer::start(Backend::Postgres).await.unwrap();
    let mut tenants = server.tenants().await.unwrap();
    let secrets = exercise(&server, &mut tenants).await;
    // The purge and the export ran (their metrics moved) before the scrape that counts.
    eventually("the purge finished", Duration::from_secs(20), || async {
        let metrics = server.metrics_text().await.unwrap();
        tenantd_e2e::counter(&metrics, "purges_finished_total", &[]) == 1
    })
    .await;

    let metrics = server.metrics_text().await.unwrap();
    for secret in &secrets {
        assert!(
            !metrics.contains(secret.as_str()),
            "{secret:?} appears in /metrics"
        );
    }
    assert!(!metrics.contains('@'), "an address in /metrics");
    let labels = labels(&metrics);
    assert!(labels.len() > 50, "few labels parsed: {labels:?}");
    let unbounded: Vec<_> = labels
        .iter()
        .filter(|(_, value)| !is_bounded_token(value))
        .collect();
    assert!(
        unbounded.is_empty(),
        "label values outside a bounded vocabulary: {unbounded:?}"
    );
}

#[test]
fn the_label_parser_and_the_vocabulary_check_see_what_they_must() {
    let labels = labels(
        "# HELP x y\nx{a=\"1\",grpc_method=\"GetTenant\"} 3\ny 1\nz{le=\"+Inf\"} 2\nw{t=\"0190c0de-0000-7000-8000-000000000000\"} 1\n",
    );
    let expected: BTreeSet<(String, String)> = [
        ("a", "1"),
        ("grpc_method", "GetTenant"),
        ("le", "+Inf"),
        ("t", "0190c0de-0000-7000-8000-000000000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(labels, expected);
    assert!(is_bounded_token("GetTenant") && is_bounded_token("+Inf"));
    assert!(!is_bounded_token("0190c0de-0000-7000-8000-000000000000"));
    assert!(!is_bounded_token("ops@acme.example") && !is_bounded_token("two words"));
}
