//! Secrets never reach the logs: every flow that handles a contact email, an API key secret
//! or an encryption key runs against a real server on PostgreSQL with every tenantd log
//! event captured at TRACE (dependencies at DEBUG), and no captured line may contain any
//! of them.
//!
//! A test binary of its own: `tracing` caches each callsite's interest for the whole
//! process, and while this capture is the only dispatcher registered, a callsite first
//! reached by another test's thread (which has no subscriber) is cached as never enabled,
//! and its lines never reach this capture (tokio-rs/tracing#2874, #3611). Here no other
//! test runs.

#![expect(clippy::unwrap_used, reason = "a failed unwrap fails the test")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use prost_types::FieldMask;
use tenantd_domain::ApiKeySecret;
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, CreateTenantRequest, GetTenantRequest, ListAuditRecordsRequest,
    ListTenantsRequest, RevokeApiKeyRequest, UpdateTenantRequest, VerifyApiKeyRequest,
};
use tenantd_e2e::{Backend, TestKeys, TestServer, new_tenant, postgres_store_with};
use tenantd_server::config::Store;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_email_api_key_secret_or_encryption_key_appears_in_any_log_line() {
    let logs = Captured::default();
    // This thread's subscriber (the test runtime is single-threaded, so the server's tasks
    // run here too): other tests of the binary keep theirs.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            "debug,tenantd_server=trace,tenantd_application=trace,tenantd_adapters=trace",
        )
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _capture = tracing::subscriber::set_default(subscriber);

    let keys = TestKeys::generate();
    let server = TestServer::start_with(Backend::Postgres, |config| {
        let Store::Postgres { url, .. } = &config.store else {
            unreachable!()
        };
        let store = postgres_store_with(url.expose(), &keys);
        tenantd_server::Config { store, ..config }
    })
    .await
    .unwrap();
    let (tenant_id, emails) = exercise_tenants(&server).await;
    let secret = exercise_api_keys(&server, &tenant_id).await;
    EventServiceClient::new(server.admin_channel().await.unwrap())
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .unwrap();
    server.stop().await.unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("rpc finished"), "the capture works");
    let lower = text.to_lowercase();
    for email in &emails {
        assert!(
            !lower.contains(&email.to_lowercase()),
            "email {email} logged"
        );
    }
    let secret_part = &secret[3 + 32 + 1..];
    assert!(!text.contains(secret_part), "an API key secret was logged");
    for entry in keys.encryption.split(',') {
        let material = entry.split_once(':').unwrap().1;
        assert!(!text.contains(material), "an encryption key was logged");
    }
    assert!(
        !text.contains(&keys.blind_index),
        "the blind-index key was logged"
    );
}

/// Creates, lists by email, updates and rejects tenants; returns the created tenant's id and
/// every email used.
async fn exercise_tenants(server: &TestServer) -> (String, Vec<String>) {
    let mut tenants = server.tenants().await.unwrap();
    let mut emails = vec!["Founder.Secret@Hidden-Corp.example".to_owned()];

    let mut tenant = new_tenant("hidden");
    tenant.contact_email = emails[0].clone();
    let created = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant),
            request_id: "log-test-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    tenants
        .list_tenants(ListTenantsRequest {
            contact_email: emails[0].to_uppercase(),
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap();
    let mut change = created.clone();
    change.contact_email = "Second.Secret@Hidden-Corp.example".into();
    emails.push(change.contact_email.clone());
    tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(change),
            update_mask: Some(FieldMask {
                paths: vec!["contact_email".into()],
            }),
        })
        .await
        .unwrap();
    let mut invalid = new_tenant("rejected");
    invalid.contact_email = "Invalid Secret@@Hidden-Corp".into();
    emails.push(invalid.contact_email.clone());
    assert!(
        tenants
            .create_tenant(CreateTenantRequest {
                tenant: Some(invalid),
                request_id: String::new()
            })
            .await
            .is_err()
    );
    tenants
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap();

    (created.tenant_id, emails)
}

/// Issues, verifies (right and wrong) and revokes an API key; returns its secret.
async fn exercise_api_keys(server: &TestServer, tenant_id: &str) -> String {
    let mut api_keys = ApiKeyServiceClient::new(server.admin_channel().await.unwrap());
    let issued = api_keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: tenant_id.to_owned(),
            display_name: "ci".into(),
            scopes: vec!["tenants.read".into()],
            expire_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    let secret = issued.secret.clone();
    assert!(
        api_keys
            .verify_api_key(VerifyApiKeyRequest {
                api_key: secret.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .valid
    );
    // Same key id, another secret, a valid checksum: reaches the hash comparison.
    let id = ApiKeySecret::parse(&secret).unwrap().id();
    let wrong = ApiKeySecret::new(id, &[0x5a; 20]).expose();
    api_keys
        .verify_api_key(VerifyApiKeyRequest { api_key: wrong })
        .await
        .unwrap();
    api_keys
        .revoke_api_key(RevokeApiKeyRequest {
            tenant_id: tenant_id.to_owned(),
            key_id: issued.api_key.unwrap().key_id,
        })
        .await
        .unwrap();
    secret
}
