//! Contract of [`ApiKeyRepository`](tenantd_domain::ports::ApiKeyRepository).

use chrono::Duration;
use futures::future::join_all;
use tenantd_domain::{ApiKey, ApiKeyId, EventKind, Reason, RepoError, Tenant};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{event, now, run_for, slug, tenant};

async fn stored_tenant(stores: &Stores) -> Tenant {
    let t = tenant(&slug("keys"), "free", &[]);
    stores
        .tenants
        .create(&t, &run_for(&t), &[], None)
        .await
        .expect("create tenant");
    t
}

fn key(t: &Tenant) -> ApiKey {
    ApiKey {
        id: ApiKeyId(Uuid::now_v7()),
        tenant_id: t.id(),
        display_name: "deploys".into(),
        scopes: vec!["tenants.read".into(), "keys:write".into()],
        secret_hash: [9; 32],
        created_at: now(),
        expires_at: Some(now() + Duration::days(90)),
        revoked_at: None,
        last_used_at: None,
    }
}

/// A stored key reads back equal; a tenant's list holds its keys only, in id order.
pub async fn api_key_round_trips_and_lists_by_tenant(stores: Stores) {
    let (a, b) = (stored_tenant(&stores).await, stored_tenant(&stores).await);
    let (k1, k2, other) = (key(&a), key(&a), key(&b));
    for k in [&k1, &k2, &other] {
        stores
            .api_keys
            .create(k, &[], 10, now())
            .await
            .expect("create key");
    }
    assert_eq!(
        stores.api_keys.get(k1.id).await.expect("get"),
        Some(k1.clone())
    );
    let listed = stores
        .api_keys
        .list(a.id(), None, 10, None)
        .await
        .expect("list");
    assert_eq!(listed, vec![k1.clone(), k2.clone()]);
    let after = stores
        .api_keys
        .list(a.id(), Some(k1.id), 10, None)
        .await
        .expect("list");
    assert_eq!(after, vec![k2]);
    assert_eq!(
        stores
            .api_keys
            .get(ApiKeyId(Uuid::now_v7()))
            .await
            .expect("get"),
        None
    );
}

/// The quota counts keys that are neither revoked nor expired.
pub async fn api_key_quota_counts_only_active_keys(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let mut expired = key(&t);
    expired.expires_at = Some(now() - Duration::seconds(1));
    expired.created_at = now() - Duration::days(1);
    stores
        .api_keys
        .create(&expired, &[], 5, now() - Duration::days(1))
        .await
        .expect("expired");
    let revoked = key(&t);
    stores
        .api_keys
        .create(&revoked, &[], 5, now())
        .await
        .expect("revoked");
    stores
        .api_keys
        .revoke(revoked.id, now(), &[])
        .await
        .expect("revoke");
    stores
        .api_keys
        .create(&key(&t), &[], 1, now())
        .await
        .expect("first active key fits");
    let err = stores
        .api_keys
        .create(&key(&t), &[], 1, now())
        .await
        .expect_err("quota");
    assert_eq!(err, RepoError::LimitReached);
    let active = stores
        .api_keys
        .list(t.id(), None, 10, Some(now()))
        .await
        .expect("list");
    assert_eq!(active.len(), 1);
}

/// Twenty creates racing against a quota of three: exactly three succeed.
pub async fn concurrent_api_key_creates_never_exceed_the_quota(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let attempts = (0..20).map(|_| {
        let (repo, k) = (stores.api_keys.clone(), key(&t));
        async move { repo.create(&k, &[], 3, now()).await }
    });
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || *r == Err(RepoError::LimitReached))
    );
}

/// Revocation and last use are stored; revocation writes its event.
pub async fn api_key_revoke_and_touch_are_recorded(stores: Stores) {
    let t = stored_tenant(&stores).await;
    let k = key(&t);
    stores
        .api_keys
        .create(&k, &[], 5, now())
        .await
        .expect("create");
    let used = now() + Duration::seconds(5);
    stores.api_keys.touch(k.id, used).await.expect("touch");
    let revoked_at = now() + Duration::seconds(10);
    let revoked = event(
        &t,
        EventKind::ApiKeyRevoked {
            key_id: k.id.to_string(),
        },
    );
    let stored_at = stores
        .api_keys
        .revoke(k.id, revoked_at, std::slice::from_ref(&revoked))
        .await
        .expect("revoke");
    assert_eq!(stored_at, revoked_at);
    let again = stores
        .api_keys
        .revoke(k.id, revoked_at + Duration::seconds(5), &[])
        .await
        .expect("revoke again");
    assert_eq!(again, revoked_at, "a second revoke reports the first time");
    let got = stores
        .api_keys
        .get(k.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.last_used_at, Some(used));
    assert_eq!(got.revoked_at, Some(revoked_at));
    let events = stores
        .events
        .list(Some(t.id()), None, 10)
        .await
        .expect("events");
    assert_eq!(events, vec![revoked]);
    let missing = stores
        .api_keys
        .revoke(ApiKeyId(Uuid::now_v7()), now(), &[])
        .await;
    assert_eq!(missing, Err(RepoError::NotFound));
}

/// A key for a tenant that does not exist, or is deleted, is refused.
pub async fn api_key_for_unknown_tenant_is_not_found(stores: Stores) {
    let ghost = tenant(&slug("ghost"), "free", &[]);
    let err = stores
        .api_keys
        .create(&key(&ghost), &[], 5, now())
        .await
        .expect_err("ghost");
    assert_eq!(err, RepoError::NotFound);
    let mut gone = stored_tenant(&stores).await;
    gone.delete(Duration::days(1), now()).expect("delete");
    stores
        .tenants
        .update(&gone, 1, &[])
        .await
        .expect("store delete");
    let err = stores
        .api_keys
        .create(&key(&gone), &[], 5, now())
        .await
        .expect_err("deleted");
    assert!(
        matches!(err, RepoError::Precondition(Reason::TenantDeleted, _)),
        "{err:?}"
    );
}
