//! ApiKeyService end to end on both stores: the secret shown once, verification by another
//! service, revocation and expiry taking effect on the next verify, and the plan quota
//! holding under concurrent creates.

use std::time::{Duration, SystemTime};

use futures::future::join_all;
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest, SuspendTenantRequest,
    VerifyApiKeyRequest, VerifyApiKeyResponse,
};
use tenantd_e2e::{TestServer, assert_reason, identity, new_tenant, on_every_store};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

on_every_store!(
    a_created_key_is_shown_once_and_verifies_for_other_services,
    a_revoked_key_fails_the_very_next_verification,
    an_expired_key_no_longer_verifies,
    the_plan_quota_holds_under_twenty_concurrent_creates,
    a_tenant_manages_its_own_keys_only,
);

async fn keys_as(
    server: &TestServer,
    spiffe_path: &str,
    name: &str,
) -> ApiKeyServiceClient<Channel> {
    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        &format!("spiffe://tenantd.local/{spiffe_path}"),
        name,
    )
    .unwrap();
    ApiKeyServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    )
}

async fn admin_keys(server: &TestServer) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(server.admin_channel().await.unwrap())
}

fn new_key(tenant_id: &str) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        tenant_id: tenant_id.into(),
        display_name: "deploy bot".into(),
        scopes: vec!["tenants.read".into()],
        expire_time: None,
    }
}

async fn verify(client: &mut ApiKeyServiceClient<Channel>, key: &str) -> VerifyApiKeyResponse {
    client
        .verify_api_key(VerifyApiKeyRequest {
            api_key: key.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn a_created_key_is_shown_once_and_verifies_for_other_services(server: TestServer) {
    let tenant = server.create_active(new_tenant("acme")).await.unwrap();
    let mut admin = admin_keys(&server).await;
    let created = admin
        .create_api_key(new_key(&tenant.tenant_id))
        .await
        .unwrap()
        .into_inner();
    let key = created.api_key.unwrap();
    assert!(
        created.secret.starts_with(&format!("tk_{}_", key.key_id)),
        "{}",
        created.secret
    );

    let listed = admin
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.tenant_id.clone(),
            ..ListApiKeysRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The first admin key, made by provisioning, comes first.
    assert_eq!(listed.api_keys.len(), 2, "{listed:?}");
    assert_eq!(listed.api_keys[0].scopes, ["tenant.admin"]);
    assert_eq!(listed.api_keys[1], key);
    assert!(
        !format!("{listed:?}").contains(&created.secret[40..]),
        "a listing shows no secret"
    );

    let mut billing = keys_as(&server, "service/billing", "service-billing").await;
    let verified = verify(&mut billing, &created.secret).await;
    assert!(verified.valid);
    assert_eq!(
        (verified.tenant_id.as_str(), verified.key_id.as_str()),
        (tenant.tenant_id.as_str(), key.key_id.as_str())
    );
    assert_eq!(verified.scopes, ["tenants.read"]);
    assert!(verified.tenant_active);

    server
        .tenants()
        .await
        .unwrap()
        .suspend_tenant(SuspendTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
            reason: "unpaid".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let verified = verify(&mut billing, &created.secret).await;
    assert!(verified.valid && !verified.tenant_active, "{verified:?}");

    for bad in [
        "",
        "tk_nope",
        &created.secret.replace("tk_", "tx_"),
        &created.secret[..created.secret.len() - 1],
    ] {
        assert!(!verify(&mut billing, bad).await.valid, "{bad}");
    }
}

async fn a_revoked_key_fails_the_very_next_verification(server: TestServer) {
    let tenant = server.create_active(new_tenant("acme")).await.unwrap();
    let mut admin = admin_keys(&server).await;
    let created = admin
        .create_api_key(new_key(&tenant.tenant_id))
        .await
        .unwrap()
        .into_inner();
    assert!(verify(&mut admin, &created.secret).await.valid);
    let key_id = created.api_key.unwrap().key_id;
    let revoked = admin
        .revoke_api_key(RevokeApiKeyRequest {
            tenant_id: tenant.tenant_id.clone(),
            key_id: key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    assert!(!verify(&mut admin, &created.secret).await.valid);
    let active = admin
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant.tenant_id.clone(),
            ..ListApiKeysRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        active.api_keys.iter().all(|k| k.key_id != key_id),
        "revoked keys are hidden unless show_inactive"
    );
}

async fn an_expired_key_no_longer_verifies(server: TestServer) {
    let tenant = server.create_active(new_tenant("acme")).await.unwrap();
    let mut admin = admin_keys(&server).await;
    let mut past = new_key(&tenant.tenant_id);
    past.expire_time = Some(prost_types::Timestamp::from(
        SystemTime::now() - Duration::from_mins(1),
    ));
    assert_reason(
        &admin.create_api_key(past).await.unwrap_err(),
        Code::InvalidArgument,
        "FIELD_INVALID",
    );

    let mut soon = new_key(&tenant.tenant_id);
    soon.expire_time = Some(prost_types::Timestamp::from(
        SystemTime::now() + Duration::from_millis(800),
    ));
    let created = admin.create_api_key(soon).await.unwrap().into_inner();
    assert!(verify(&mut admin, &created.secret).await.valid);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!verify(&mut admin, &created.secret).await.valid);
}

async fn the_plan_quota_holds_under_twenty_concurrent_creates(server: TestServer) {
    let mut free = new_tenant("frugal");
    free.plan_id = "free".into();
    let tenant = server.create_active(free).await.unwrap();
    let admin = admin_keys(&server).await;
    let calls = (0..20).map(|_| {
        let mut client = admin.clone();
        let request = new_key(&tenant.tenant_id);
        async move { client.create_api_key(request).await }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_reason(refused, Code::ResourceExhausted, "API_KEY_QUOTA_EXCEEDED");
        let limit = refused.get_details_error_info().unwrap().metadata["limit"].clone();
        assert_eq!(limit, "2", "the free plan's quota");
    }
    assert_eq!(
        (ok, exhausted),
        (1, 19),
        "the free plan allows 2 active keys, and the first admin key is one"
    );
}

async fn a_tenant_manages_its_own_keys_only(server: TestServer) {
    let mine = server.create_active(new_tenant("mine")).await.unwrap();
    let theirs = server.create_active(new_tenant("theirs")).await.unwrap();
    let mut me = keys_as(
        &server,
        &format!("tenant/{}", mine.tenant_id),
        "tenant-mine",
    )
    .await;
    let created = me
        .create_api_key(new_key(&mine.tenant_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.api_key.unwrap().tenant_id, mine.tenant_id);
    let denied = me
        .create_api_key(new_key(&theirs.tenant_id))
        .await
        .unwrap_err();
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    let denied = me
        .list_api_keys(ListApiKeysRequest {
            tenant_id: theirs.tenant_id.clone(),
            ..ListApiKeysRequest::default()
        })
        .await
        .unwrap_err();
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    let denied = me
        .verify_api_key(VerifyApiKeyRequest {
            api_key: created.secret,
        })
        .await
        .unwrap_err();
    // Verification is for services.
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
}
