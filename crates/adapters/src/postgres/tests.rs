//! The contract suites on PostgreSQL (a scratch schema per test), and what only this
//! store promises.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sqlx::{Connection as _, PgConnection};

use super::testing::{ScratchSchema, test_database_url};
use super::{PgBilling, PgDns, PgPlanRepository, PgStore, PgTenantDatabases, migrate};
use crate::contract::{ProviderPorts, Stores};
use crate::crypto::KeyRing;

async fn stores() -> Stores {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    Stores {
        tenants: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        events: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        plans: Arc::new(PgPlanRepository::new(pool)),
        guard: Some(Arc::new(schema)),
    }
}

crate::repository_contract_tests!(stores);

async fn providers() -> ProviderPorts {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let ring = Arc::new(KeyRing::generate("test"));
    let ingress = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    ProviderPorts {
        databases: Arc::new(
            PgTenantDatabases::new(pool.clone(), ring.clone(), &schema.tenant_schema_prefix())
                .expect("a valid prefix"),
        ),
        dns: Arc::new(PgDns::new(pool.clone(), "tenants.example.test", ingress)),
        dns_base_domain: "tenants.example.test".into(),
        dns_ingress: ingress,
        billing: Arc::new(PgBilling::new(pool.clone())),
        tenants: Arc::new(PgStore::new(pool, ring)),
        guard: Some(Arc::new(schema)),
    }
}

mod providers {
    crate::provider_contract_tests!(super::providers);
}

#[tokio::test]
async fn scratch_schema_is_dropped_with_its_guard() {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let name = schema.name().to_owned();
    drop(schema);
    let mut conn = PgConnection::connect(&test_database_url())
        .await
        .expect("connect");
    let left: Option<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await
            .expect("query");
    assert!(left.is_none(), "schema {name} survived its guard");
}

#[tokio::test]
async fn creates_with_a_request_id_sweep_expired_idempotency_records() {
    use chrono::Duration;
    use tenantd_domain::ports::{IdempotencyRecord, TenantRepository as _};

    use crate::contract::fixtures::{now, run_for, slug, tenant};

    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    let record = |t: &tenantd_domain::Tenant, id: &str, expires_at| IdempotencyRecord {
        request_id: id.into(),
        fingerprint: "f".into(),
        response: t.clone(),
        expires_at,
    };
    let old = tenant(&slug("old"), "free", &[]);
    let expired = record(&old, "req-old", now() - Duration::hours(1));
    store
        .create(&old, &run_for(&old), &[], Some(expired))
        .await
        .expect("create old");
    let new = tenant(&slug("new"), "free", &[]);
    let fresh = record(&new, "req-new", now() + Duration::hours(1));
    store
        .create(&new, &run_for(&new), &[], Some(fresh))
        .await
        .expect("create new");
    let left: Vec<(String,)> = sqlx::query_as("SELECT request_id FROM idempotency_records")
        .fetch_all(&pool)
        .await
        .expect("query");
    assert_eq!(left, [("req-new".to_owned(),)]);
}

#[tokio::test]
async fn migrations_are_recorded_once_per_schema() {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    migrate(&pool).await.expect("second run is a no-op");
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        applied,
        i64::try_from(crate::postgres::MIGRATOR.iter().count()).unwrap()
    );
}
