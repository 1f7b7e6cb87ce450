//! Contract of [`DataKeyRepository`](tenantd_domain::ports::DataKeyRepository): one key per
//! existing tenant, the first stored wins (a store may make it with the tenant, as
//! PostgreSQL's does, or on first use), a destroyed key is never made again, and a rotation
//! replaces each key of an older ring key once.

use tenantd_domain::ports::WrappedDataKey;
use tenantd_domain::{Reason, RepoError, Tenant, TenantId};
use uuid::Uuid;

use super::Stores;
use super::fixtures::{created, run_for, slug, tenant};

fn key(byte: u8, key_id: &str) -> WrappedDataKey {
    WrappedDataKey {
        envelope: vec![byte; 61],
        key_id: key_id.to_owned(),
    }
}

async fn stored_tenant(stores: &Stores, prefix: &str) -> Tenant {
    let t = tenant(&slug(prefix), "free", &[]);
    stores
        .tenants
        .create(&t, &run_for(&t), &[created(&t)], None)
        .await
        .expect("create");
    t
}

/// A stored tenant whose data key is `wanted` (set through a rotation's replace when the
/// store made one of its own).
async fn tenant_with_key(stores: &Stores, prefix: &str, wanted: &WrappedDataKey) -> Tenant {
    let t = stored_tenant(stores, prefix).await;
    let current = stores
        .data_keys
        .get_or_create(t.id(), wanted.clone())
        .await
        .expect("data keys");
    if &current != wanted {
        assert!(
            stores
                .data_keys
                .replace(t.id(), &current, wanted)
                .await
                .expect("data keys")
        );
    }
    t
}

/// Contract: the first key stored for a tenant is its key for good; later (or concurrent)
/// fresh keys are dropped; an unknown tenant gets none.
pub async fn a_data_key_is_made_once_per_existing_tenant(stores: Stores) {
    let t = stored_tenant(&stores, "dek-once").await;
    let made_with_it = stores.data_keys.get(t.id()).await.expect("data keys");
    let racers = (1..=8u8).map(|n| stores.data_keys.get_or_create(t.id(), key(n, "k1")));
    let got: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("get_or_create"))
        .collect();
    assert!(
        got.iter().all(|k| k == &got[0]),
        "racers got different keys"
    );
    if let Some(made) = made_with_it {
        assert_eq!(got[0], made, "the key made with the tenant is its key");
    }
    assert_eq!(
        stores.data_keys.get(t.id()).await.expect("data keys"),
        Some(got[0].clone())
    );
    let again = stores
        .data_keys
        .get_or_create(t.id(), key(99, "k2"))
        .await
        .expect("data keys");
    assert_eq!(again, got[0]);

    let other = stored_tenant(&stores, "dek-other").await;
    let theirs = stores
        .data_keys
        .get_or_create(other.id(), key(42, "k1"))
        .await
        .expect("data keys");
    assert_ne!(theirs, got[0], "each tenant has its own");
    assert_eq!(
        stores.data_keys.get(t.id()).await.expect("data keys"),
        Some(got[0].clone())
    );

    let unknown = TenantId::from_uuid(Uuid::now_v7()).expect("data keys");
    assert_eq!(
        stores.data_keys.get_or_create(unknown, key(1, "k1")).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(
        stores.data_keys.get(unknown).await.expect("data keys"),
        None
    );
}

/// Contract: destroying a key removes it (once); it is never made again, and another
/// tenant's key is untouched.
pub async fn a_destroyed_data_key_is_gone_for_good(stores: Stores) {
    let (t, other) = (
        tenant_with_key(&stores, "dek-gone", &key(1, "k1")).await,
        tenant_with_key(&stores, "dek-kept", &key(2, "k1")).await,
    );
    assert!(stores.data_keys.destroy(t.id()).await.expect("data keys"));
    assert!(
        !stores.data_keys.destroy(t.id()).await.expect("data keys"),
        "destroyed twice"
    );
    assert_eq!(stores.data_keys.get(t.id()).await.expect("data keys"), None);
    match stores.data_keys.get_or_create(t.id(), key(3, "k1")).await {
        Err(RepoError::Precondition(Reason::TenantPurged, _)) => {}
        other => panic!("a destroyed key was made again: {other:?}"),
    }
    assert_eq!(stores.data_keys.get(t.id()).await.expect("data keys"), None);
    assert!(
        !stores
            .data_keys
            .replace(t.id(), &key(1, "k1"), &key(4, "k2"))
            .await
            .expect("data keys"),
        "a destroyed key was replaced"
    );
    assert_eq!(
        stores.data_keys.get(other.id()).await.expect("data keys"),
        Some(key(2, "k1"))
    );
    // No tenant, nothing to destroy.
    let unknown = TenantId::from_uuid(Uuid::now_v7()).expect("data keys");
    assert!(!stores.data_keys.destroy(unknown).await.expect("data keys"));
}

/// Contract: keys wrapped by another ring key than the primary are listed in tenant order,
/// up to the limit; each is replaced only while it is still the listed one.
pub async fn data_keys_of_older_ring_keys_are_listed_and_replaced_once(stores: Stores) {
    let mut tenants = Vec::new();
    for (n, ring_key) in ["old", "new", "old", "older"].into_iter().enumerate() {
        let byte = u8::try_from(n).expect("data keys");
        let t = tenant_with_key(&stores, "dek-rot", &key(byte, ring_key)).await;
        tenants.push((t.id(), key(byte, ring_key)));
    }
    let destroyed = tenant_with_key(&stores, "dek-rot", &key(9, "old")).await;
    stores
        .data_keys
        .destroy(destroyed.id())
        .await
        .expect("data keys");

    let mut stale: Vec<_> = tenants
        .iter()
        .filter(|(_, k)| k.key_id != "new")
        .cloned()
        .collect();
    stale.sort_by_key(|(t, _)| *t);
    assert_eq!(
        stores
            .data_keys
            .wrapped_by_other("new", 10)
            .await
            .expect("data keys"),
        stale
    );
    assert_eq!(
        stores
            .data_keys
            .wrapped_by_other("new", 2)
            .await
            .expect("data keys"),
        stale[..2]
    );

    let (first, old) = &stale[0];
    let rewrapped = key(77, "new");
    assert!(
        stores
            .data_keys
            .replace(*first, old, &rewrapped)
            .await
            .expect("data keys")
    );
    assert!(
        !stores
            .data_keys
            .replace(*first, old, &key(78, "new"))
            .await
            .expect("data keys"),
        "replaced from a key it no longer holds"
    );
    assert_eq!(
        stores.data_keys.get(*first).await.expect("data keys"),
        Some(rewrapped)
    );
    assert_eq!(
        stores
            .data_keys
            .wrapped_by_other("new", 10)
            .await
            .expect("data keys"),
        stale[1..]
    );
}
