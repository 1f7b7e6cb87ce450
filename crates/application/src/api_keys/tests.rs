//! ApiKeyService rules on mocked ports.

use std::sync::{Arc, Mutex};

use chrono::TimeZone as _;
use tenantd_domain::plan::seeded_plans;
use tenantd_domain::ports::{
    MockApiKeyRepository, MockClock, MockIdGenerator, MockPlanRepository, MockSecretGenerator,
    MockTenantRepository,
};
use tenantd_domain::{
    ContactEmail, DisplayName, Labels, NewTenant, PlanId, Reason, Slug, Tenant, TenantConfig,
};
use uuid::Uuid;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tenant(status: TenantStatus) -> Tenant {
    let new = NewTenant {
        slug: Slug::parse("acme").unwrap(),
        display_name: DisplayName::parse("Acme").unwrap(),
        plan_id: PlanId::new("free"),
        contact_email: ContactEmail::parse("ops@acme.example").unwrap(),
        labels: Labels::default(),
        config: TenantConfig::default(),
    };
    let mut t = Tenant::create(TenantId::from_uuid(Uuid::now_v7()).unwrap(), new, now());
    if status != TenantStatus::Provisioning {
        t.activate(now()).unwrap();
    }
    match status {
        TenantStatus::Suspended => t.suspend("x".into(), now()).unwrap(),
        TenantStatus::Deleted => t.delete(Duration::days(1), now()).unwrap(),
        _ => {}
    }
    t
}

fn service(keys: MockApiKeyRepository, tenant: &Tenant) -> ApiKeyService {
    let stored = tenant.clone();
    let mut tenants = MockTenantRepository::new();
    tenants
        .expect_get()
        .returning(move |_| Ok(Some(stored.clone())));
    let mut plans = MockPlanRepository::new();
    plans
        .expect_get()
        .returning(|id| Ok(seeded_plans().into_iter().find(|p| &p.id == id)));
    let mut clock = MockClock::new();
    clock.expect_now().returning(now);
    let mut ids = MockIdGenerator::new();
    ids.expect_new_v7().returning(Uuid::now_v7);
    let mut secrets = MockSecretGenerator::new();
    secrets.expect_api_key_secret().returning(|| [42; 20]);
    ApiKeyService::new(
        Arc::new(keys),
        Arc::new(tenants),
        Arc::new(plans),
        Arc::new(clock),
        Arc::new(ids),
        Arc::new(secrets),
    )
}

fn cmd(tenant: &Tenant) -> CreateApiKey {
    CreateApiKey {
        tenant_id: tenant.id().to_string(),
        display_name: "ci deploys".into(),
        scopes: vec!["tenants.read".into()],
        expires_at: None,
    }
}

#[tokio::test]
async fn create_stores_only_the_hash_with_the_plan_quota_and_returns_the_secret_once() {
    let t = tenant(TenantStatus::Active);
    let stored = Arc::new(Mutex::new(None));
    let sink = stored.clone();
    let mut keys = MockApiKeyRepository::new();
    keys.expect_create().times(1).returning(move |key, events, max, _| {
        assert_eq!(max, 2, "the free plan's max_api_keys");
        assert!(matches!(&events[0].kind, EventKind::ApiKeyCreated { key_id, .. } if *key_id == key.id.to_string()));
        *sink.lock().unwrap() = Some(key.clone());
        Ok(())
    });
    let (key, secret) = service(keys, &t).create(cmd(&t)).await.unwrap();
    let stored = stored.lock().unwrap().clone().unwrap();
    assert_eq!(stored, key);
    assert_eq!(stored.secret_hash, hash(&secret));
    assert_ne!(
        stored.secret_hash.to_vec(),
        secret.secret().as_bytes().to_vec()
    );
    assert!(secret.expose().starts_with(&format!("tk_{}_", key.id)));
}

#[tokio::test]
async fn create_at_the_quota_is_resource_exhausted() {
    let t = tenant(TenantStatus::Active);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_create()
        .returning(|_, _, _, _| Err(RepoError::LimitReached));
    let err = service(keys, &t).create(cmd(&t)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ResourceExhausted {
                reason: Reason::ApiKeyQuotaExceeded,
                limit: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn create_validates_fields_and_refuses_deleted_tenants() {
    let t = tenant(TenantStatus::Active);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_create().never();
    let svc = service(keys, &t);
    let bad = CreateApiKey {
        display_name: String::new(),
        scopes: vec!["Bad Scope".into()],
        expires_at: Some(now() - Duration::seconds(1)),
        ..cmd(&t)
    };
    let Err(Error::InvalidArgument { violations, .. }) = svc.create(bad).await else {
        panic!("invalid fields accepted");
    };
    let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["display_name", "scopes", "expire_time"]);

    let gone = tenant(TenantStatus::Deleted);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_create().never();
    let err = service(keys, &gone).create(cmd(&gone)).await.unwrap_err();
    assert!(matches!(
        err,
        Error::FailedPrecondition {
            reason: Reason::TenantDeleted,
            ..
        }
    ));
}

fn stored_key(t: &Tenant, secret: &ApiKeySecret) -> ApiKey {
    ApiKey {
        id: secret.id(),
        tenant_id: t.id(),
        display_name: "k".into(),
        scopes: vec!["tenants.read".into()],
        secret_hash: hash(secret),
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

#[tokio::test]
async fn verify_refuses_malformed_keys_without_a_lookup() {
    let t = tenant(TenantStatus::Active);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_get().never();
    let svc = service(keys, &t);
    for bad in ["", "tk_", "tk_abc_def", "not even close"] {
        assert_eq!(svc.verify(bad).await.unwrap(), None, "{bad}");
    }
}

#[tokio::test]
async fn verify_accepts_the_right_secret_only_and_reports_tenant_activity() {
    let t = tenant(TenantStatus::Suspended);
    let secret = ApiKeySecret::new(ApiKeyId(Uuid::now_v7()), &[1; 20]);
    let other = ApiKeySecret::new(secret.id(), &[2; 20]);
    let key = stored_key(&t, &secret);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_get().returning(move |_| Ok(Some(key.clone())));
    keys.expect_touch().times(1).returning(|_, _| Ok(()));
    let svc = service(keys, &t);
    let ok = svc.verify(&secret.expose()).await.unwrap().unwrap();
    assert_eq!(ok.key.tenant_id, t.id());
    assert!(
        !ok.tenant_active,
        "a suspended tenant's key verifies but says so"
    );
    assert_eq!(
        svc.verify(&other.expose()).await.unwrap(),
        None,
        "same id, other secret"
    );
    assert!(svc.verify(&secret.expose()).await.unwrap().is_some());
}

#[tokio::test]
async fn verify_refuses_revoked_and_expired_keys() {
    let t = tenant(TenantStatus::Active);
    for change in [
        |k: &mut ApiKey| k.revoked_at = Some(now() - Duration::seconds(1)),
        |k: &mut ApiKey| k.expires_at = Some(now()),
    ] {
        let secret = ApiKeySecret::new(ApiKeyId(Uuid::now_v7()), &[3; 20]);
        let mut key = stored_key(&t, &secret);
        change(&mut key);
        let mut keys = MockApiKeyRepository::new();
        keys.expect_get().returning(move |_| Ok(Some(key.clone())));
        keys.expect_touch().never();
        assert_eq!(
            service(keys, &t).verify(&secret.expose()).await.unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn revoke_of_another_tenants_key_is_not_found() {
    let t = tenant(TenantStatus::Active);
    let secret = ApiKeySecret::new(ApiKeyId(Uuid::now_v7()), &[4; 20]);
    let key = stored_key(&t, &secret);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_get().returning(move |_| Ok(Some(key.clone())));
    keys.expect_revoke().never();
    let someone_else = Uuid::now_v7().to_string();
    let err = service(keys, &t)
        .revoke(&someone_else, &secret.id().to_string())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::NotFound {
            resource: "api key",
            ..
        }
    ));
}

#[test]
fn hash_comparison_accepts_only_the_exact_hash() {
    let stored = [0xab; 32];
    assert!(hashes_match(&stored, &stored));
    for position in [0, 15, 31] {
        let mut guess = stored;
        guess[position] ^= 1;
        assert!(
            !hashes_match(&guess, &stored),
            "one bit off at byte {position}"
        );
    }
}

#[tokio::test]
async fn a_deleted_tenants_keys_do_not_verify() {
    let t = tenant(TenantStatus::Deleted);
    let secret = ApiKeySecret::new(ApiKeyId(Uuid::now_v7()), &[5; 20]);
    let key = stored_key(&t, &secret);
    let mut keys = MockApiKeyRepository::new();
    keys.expect_get().returning(move |_| Ok(Some(key.clone())));
    keys.expect_touch().never();
    assert_eq!(
        service(keys, &t).verify(&secret.expose()).await.unwrap(),
        None
    );
}
