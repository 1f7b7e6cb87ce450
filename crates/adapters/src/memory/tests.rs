//! The contract suites on the in-memory adapters, and what only they promise.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tenantd_domain::ports::TenantRepository;

use super::{
    LocalRateLimiter, MemoryBilling, MemoryDns, MemoryPlanRepository, MemoryStore,
    MemoryTenantDatabases,
};
use crate::contract::fixtures::{run_for, tenant};
use crate::contract::{Limiter, ProviderPorts, Stores};
use crate::crypto::KeyRing;

fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::generate("test"))
}

fn stores_of(store: &MemoryStore) -> Stores {
    Stores {
        tenants: Arc::new(store.clone()),
        purges: Arc::new(store.clone()),
        exports: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        events: Arc::new(store.clone()),
        schemas: Arc::new(store.clone()),
        rollouts: Arc::new(store.clone()),
        retention: Arc::new(store.clone()),
        data_keys: Arc::new(store.clone()),
        plans: Arc::new(MemoryPlanRepository::default()),
        guard: None,
    }
}

async fn stores() -> Stores {
    stores_of(&MemoryStore::with_cipher(ring()))
}

async fn plain_stores() -> Stores {
    stores_of(&MemoryStore::new())
}

async fn providers() -> ProviderPorts {
    let ingress = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let databases = MemoryTenantDatabases::default();
    let same = databases.clone();
    ProviderPorts {
        dumps: Arc::new(databases.clone()),
        databases: Arc::new(databases),
        databases_with: Arc::new(move |set| Arc::new(same.with_set(set))),
        schema_prefix: "t_".into(),
        dns: Arc::new(MemoryDns::new("tenants.example.test", ingress)),
        dns_base_domain: "tenants.example.test".into(),
        dns_ingress: ingress,
        billing: Arc::new(MemoryBilling::default()),
        tenants: Arc::new(MemoryStore::new()),
        guard: None,
    }
}

async fn limiter() -> Limiter {
    Limiter {
        limiter: Arc::new(LocalRateLimiter::default()),
        guard: None,
    }
}

crate::repository_contract_tests!(stores);

mod without_cipher {
    crate::repository_contract_tests!(super::plain_stores);
}

mod providers {
    crate::provider_contract_tests!(super::providers);
}

mod rate_limits {
    crate::rate_limiter_contract_tests!(super::limiter);
}

#[tokio::test]
async fn a_sealing_store_holds_no_plaintext_email() {
    let store = MemoryStore::with_cipher(ring());
    let tenant = tenant("sealed-acme", "pro", &[]);
    let run = run_for(&tenant);
    TenantRepository::create(&store, &tenant, &run, &[], None)
        .await
        .expect("create");
    {
        let state = store.lock();
        let held = &state.tenants[&tenant.id()];
        assert_eq!(
            held.tenant.contact_email(),
            None,
            "the address is kept only sealed"
        );
        let envelope = &held.sealed.as_ref().expect("sealed").envelope;
        assert!(
            !envelope
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"sealed-acme".get(..5).unwrap_or_default()))
        );
    }
    let read = TenantRepository::get(&store, tenant.id())
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(read, tenant.with_provisioning(Some(run.summary())));
}
