//! The contract suites on PostgreSQL (a scratch schema per test), and what only this
//! store promises.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sqlx::{Connection as _, PgConnection};

use super::testing::{ScratchSchema, test_database_url};
use super::{PgBilling, PgDns, PgPlanRepository, PgStore, PgTenantDatabases, migrate};
use crate::contract::{ProviderPorts, Stores};
use tenantd_domain::ports::EmailCipher;
use tenantd_domain::tenant_schema::MigrationLimits;

const LIMITS: MigrationLimits = MigrationLimits {
    lock_timeout_ms: 5_000,
    statement_timeout_ms: 30_000,
};
use crate::crypto::KeyRing;

async fn stores() -> Stores {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    Stores {
        tenants: Arc::new(store.clone()),
        purges: Arc::new(store.clone()),
        exports: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        initial_keys: Arc::new(store.clone()),
        api_keys: Arc::new(store.clone()),
        events: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        schemas: Arc::new(store.clone()),
        rollouts: Arc::new(store.clone()),
        retention: Arc::new(store.clone()),
        data_keys: Arc::new(store.clone()),
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
    let cipher: Arc<dyn EmailCipher> = ring.clone();
    let databases = PgTenantDatabases::new(
        pool.clone(),
        Arc::new(crate::tenant_migrations::built_in()),
        Some(cipher),
        LIMITS,
    );
    let on = pool.clone();
    let databases = Arc::new(databases);
    ProviderPorts {
        dumps: databases.clone(),
        databases,
        databases_with: Arc::new(move |set| {
            Arc::new(PgTenantDatabases::new(on.clone(), set, None, LIMITS))
        }),
        schema_prefix: schema.tenant_schema_prefix(),
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
async fn a_sweep_deletes_expired_idempotency_records_and_keeps_the_others() {
    use chrono::Duration;
    use tenantd_domain::ports::{IdempotencyRecord, TenantRepository as _};

    use crate::contract::fixtures::{now, run_for, slug, tenant};

    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    // This store has just swept: creates start none of their own during the test.
    store.last_idempotency_sweep.store(
        now().timestamp() + 3_600,
        std::sync::atomic::Ordering::Relaxed,
    );
    let record = |t: &tenantd_domain::Tenant, id: &str, expires_at| IdempotencyRecord {
        request_id: id.into(),
        fingerprint: "f".into(),
        response: t.clone(),
        expires_at,
    };
    for (name, expires_at) in [
        ("old-1", now() - Duration::hours(1)),
        ("old-2", now() - Duration::seconds(1)),
        ("new", now() + Duration::hours(1)),
    ] {
        let t = tenant(&slug(name), "free", &[]);
        let held = record(&t, &format!("req-{name}"), expires_at);
        store
            .create(&t, &run_for(&t), &[], Some(held))
            .await
            .expect("create");
    }
    assert_eq!(store.sweep_idempotency(now()).await.expect("sweep"), 2);
    let left: Vec<(String,)> = sqlx::query_as("SELECT request_id FROM idempotency_records")
        .fetch_all(&pool)
        .await
        .expect("query");
    assert_eq!(left, [("req-new".to_owned(),)]);
    assert_eq!(store.sweep_idempotency(now()).await.expect("sweep"), 0);
}

#[tokio::test]
async fn a_create_with_a_request_id_starts_a_sweep_in_the_background() {
    use chrono::Duration;
    use tenantd_domain::ports::{IdempotencyRecord, TenantRepository as _};

    use crate::contract::fixtures::{now, run_for, slug, tenant};

    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    let old = tenant(&slug("old"), "free", &[]);
    // An expired record, written while this store's sweeps are held off.
    store.last_idempotency_sweep.store(
        now().timestamp() + 3_600,
        std::sync::atomic::Ordering::Relaxed,
    );
    let expired = IdempotencyRecord {
        request_id: "req-old".into(),
        fingerprint: "f".into(),
        response: old.clone(),
        expires_at: now() - Duration::hours(1),
    };
    store
        .create(&old, &run_for(&old), &[], Some(expired))
        .await
        .expect("create old");
    // A later create, its sweep due: it returns at once and the sweep follows.
    store
        .last_idempotency_sweep
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let new = tenant(&slug("new"), "free", &[]);
    let fresh = IdempotencyRecord {
        request_id: "req-new".into(),
        fingerprint: "f".into(),
        response: new.clone(),
        expires_at: now() + Duration::hours(1),
    };
    store
        .create(&new, &run_for(&new), &[], Some(fresh))
        .await
        .expect("create new");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<(String,)> =
            sqlx::query_as("SELECT request_id FROM idempotency_records ORDER BY request_id")
                .fetch_all(&pool)
                .await
                .expect("query");
        if left == [("req-new".to_owned(),)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired record was never swept: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A store on a scratch schema of its own, with one tenant (slug `prefix-…`) stored.
async fn store_with_tenant(
    prefix: &str,
) -> (ScratchSchema, sqlx::PgPool, PgStore, tenantd_domain::Tenant) {
    use tenantd_domain::ports::TenantRepository as _;

    use crate::contract::fixtures::{run_for, slug, tenant};

    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    let stored = tenant(&slug(prefix), "free", &[]);
    store
        .create(&stored, &run_for(&stored), &[], None)
        .await
        .expect("create");
    (schema, pool, store, stored)
}

#[tokio::test]
async fn a_pool_survives_its_server_ending_every_session_at_the_cost_of_one_call() {
    use tenantd_domain::ports::TenantRepository as _;

    let (_schema, pool, store, kept) = store_with_tenant("kept").await;
    // Four connections open and idle in the pool; their sessions are what a restart ends.
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..4 {
        let mut conn = pool.acquire().await.expect("acquire");
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .expect("pid");
        pids.push(pid);
        held.push(conn);
    }
    drop(held);
    let mut admin = PgConnection::connect(&test_database_url())
        .await
        .expect("admin connection");
    let (ended,): (i64,) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid",
    )
    .bind(&pids)
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    assert_eq!(ended, 4);

    // Sequential calls: the first may land on an ended session (UNAVAILABLE, worth
    // retrying); from then on the connections opened before are recycled, not used.
    let mut failures = 0;
    for _ in 0..20 {
        match store.get(kept.id()).await {
            Ok(found) => assert_eq!(found.map(|t| t.id()), Some(kept.id())),
            Err(tenantd_domain::RepoError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        failures <= 1,
        "{failures} calls failed after the sessions ended"
    );
}

#[tokio::test]
async fn a_transaction_that_fails_is_rolled_back_and_its_connection_kept() {
    let (_schema, pool, store, kept) = store_with_tenant("kept").await;
    store.held().trim_all();
    let failed: Result<(), _> = store
        .in_tx(async |tx| {
            sqlx::query("UPDATE tenants SET display_name = 'changed' WHERE tenant_id = $1")
                .bind(kept.id().as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(super::errors::db)?;
            Err(tenantd_domain::RepoError::VersionConflict)
        })
        .await;
    assert!(matches!(
        failed,
        Err(tenantd_domain::RepoError::VersionConflict)
    ));
    // Rolled back before the connection was kept for the next call.
    assert_eq!(store.held().idle_count(), 1);
    let (name,): (String,) =
        sqlx::query_as("SELECT display_name FROM tenants WHERE tenant_id = $1")
            .bind(kept.id().as_uuid())
            .fetch_one(&pool)
            .await
            .expect("tenant");
    assert_eq!(name, kept.display_name().as_str());
}

#[tokio::test]
async fn a_transaction_cancelled_midway_leaves_no_lock_and_no_kept_connection() {
    let (schema, _pool, store, locked) = store_with_tenant("locked").await;
    let before = store.held().held_count();
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        store.in_tx(async |tx| {
            sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
                .bind(locked.id().as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(super::errors::db)?;
            std::future::pending::<Result<(), tenantd_domain::RepoError>>().await
        }),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the transaction was meant to be cancelled"
    );
    // The connection went back to sqlx (which rolls back and tests it), not to the store.
    assert_eq!(store.held().held_count(), before.saturating_sub(1));
    let mut other = PgConnection::connect(&schema.url())
        .await
        .expect("connection");
    sqlx::query("SET lock_timeout = '3s'")
        .execute(&mut other)
        .await
        .expect("lock timeout");
    sqlx::query("UPDATE tenants SET display_name = 'free again' WHERE tenant_id = $1")
        .bind(locked.id().as_uuid())
        .execute(&mut other)
        .await
        .expect("the cancelled transaction's lock is gone");
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

mod tenant_schemas {
    //! What only PostgreSQL's tenant databases promise: SQL that fails leaves the schema
    //! exactly at its version, limits apply, dedicated tenants get a database of their own,
    //! an unreachable tenant database is worth retrying, and the migration registry and the
    //! adoption of tenants made before placements were recorded.

    use std::sync::Arc;

    use sqlx::PgPool;
    use tenantd_domain::ports::{
        ProvisioningTarget, SchemaQuery, TenantDatabases as _, TenantRepository as _,
    };
    use tenantd_domain::tenant_schema::{MigrationSet, Placement, PlacementRule};

    use super::super::testing::ScratchSchema;
    use super::super::{PgStore, PgTenantDatabases, RegistryError};
    use super::LIMITS;
    use crate::contract::fixtures::{run_for, slug, tenant};
    use crate::crypto::KeyRing;

    fn set(files: &[(&str, &str)]) -> Arc<MigrationSet> {
        Arc::new(
            MigrationSet::parse(
                files
                    .iter()
                    .map(|(n, s)| ((*n).to_owned(), s.as_bytes().to_vec()))
                    .collect(),
            )
            .expect("a valid set"),
        )
    }

    const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer NOT NULL); \
         INSERT INTO orders VALUES (1, 10), (2, -5);";

    async fn target(
        schema: &ScratchSchema,
        pool: &PgPool,
        rule: PlacementRule,
    ) -> ProvisioningTarget {
        let t = tenant(&slug("pg"), "pro", &[]);
        let placement = rule.place(t.id(), &schema.tenant_schema_prefix());
        let t = t.placed(placement.clone());
        PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")))
            .create(&t, &run_for(&t), &[], None)
            .await
            .expect("create");
        ProvisioningTarget {
            tenant_id: t.id(),
            slug: t.slug().clone(),
            display_name: t.display_name().clone(),
            plan_id: t.plan_id().clone(),
            contact_email: t.contact_email().cloned().expect("a live tenant's address"),
            placement,
        }
    }

    async fn tables(pool: &PgPool, placement: &Placement) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
             ORDER BY 1",
        )
        .bind(&placement.schema)
        .fetch_all(pool)
        .await
        .expect("tables")
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_the_schema_exactly_at_its_version() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let target = target(&schema, &pool, PlacementRule::Shared("default".into())).await;
        let v1 = set(&[("0001_orders.sql", ORDERS)]);
        PgTenantDatabases::new(pool.clone(), v1, None, LIMITS)
            .provision(&target)
            .await
            .expect("provision");
        // 0002 succeeds on its own; 0003 fails on this tenant's data (a negative amount):
        // the tenant stays at 1, 0002's table included.
        let v3 = PgTenantDatabases::new(
            pool.clone(),
            set(&[
                ("0001_orders.sql", ORDERS),
                ("0002_refunds.sql", "CREATE TABLE refunds (id bigint);"),
                (
                    "0003_positive.sql",
                    "ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount > 0);",
                ),
            ]),
            None,
            LIMITS,
        );
        let err = v3
            .migrate(&target.placement, 3, LIMITS)
            .await
            .expect_err("the check fails on this tenant");
        assert_eq!(
            (err.reason.as_str(), err.permanent),
            ("MIGRATION_FAILED", true)
        );
        assert!(err.message.contains("0003_positive.sql"), "{}", err.message);
        assert!(
            !err.message.contains("-5"),
            "no row values: {}",
            err.message
        );
        assert_eq!(
            v3.applied(&target.placement).await.expect("applied").len(),
            1
        );
        assert_eq!(
            tables(&pool, &target.placement).await,
            ["orders", "schema_migrations"]
        );
        // Once the data is fixed, the same rollout step applies both.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "UPDATE \"{}\".orders SET amount = 5 WHERE id = 2",
            target.placement.schema
        )))
        .execute(&pool)
        .await
        .expect("fix the data");
        let migrated = v3
            .migrate(&target.placement, 3, LIMITS)
            .await
            .expect("migrate")
            .expect("exists");
        assert_eq!((migrated.from, migrated.to), (1, 3));
    }

    #[tokio::test]
    async fn a_lock_held_elsewhere_times_out_the_migration_which_may_be_retried() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let target = target(&schema, &pool, PlacementRule::Shared("default".into())).await;
        let files = [
            ("0001_orders.sql", ORDERS),
            ("0002_note.sql", "ALTER TABLE orders ADD COLUMN note text;"),
        ];
        PgTenantDatabases::new(pool.clone(), set(&files[..1]), None, LIMITS)
            .provision(&target)
            .await
            .expect("provision");
        let mut holder = pool.begin().await.expect("begin");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE \"{}\".orders IN ACCESS SHARE MODE",
            target.placement.schema
        )))
        .execute(&mut *holder)
        .await
        .expect("lock");
        let short = tenantd_domain::tenant_schema::MigrationLimits {
            lock_timeout_ms: 200,
            statement_timeout_ms: 10_000,
        };
        let databases = PgTenantDatabases::new(pool.clone(), set(&files), None, LIMITS);
        let err = databases
            .migrate(&target.placement, 2, short)
            .await
            .expect_err("the lock is held");
        assert_eq!(
            (err.reason.as_str(), err.permanent),
            ("LOCK_TIMEOUT", false)
        );
        holder.rollback().await.expect("release");
        let migrated = databases
            .migrate(&target.placement, 2, short)
            .await
            .expect("migrate")
            .expect("exists");
        assert_eq!(migrated.to, 2);
    }

    #[tokio::test]
    async fn a_dedicated_tenant_gets_a_database_of_its_own_dropped_on_undo() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let target = target(&schema, &pool, PlacementRule::Dedicated("default".into())).await;
        let own = target.placement.dedicated.clone().expect("dedicated");
        let databases = PgTenantDatabases::new(
            pool.clone(),
            set(&[("0001_orders.sql", ORDERS)]),
            None,
            LIMITS,
        );
        let made = databases.provision(&target).await.expect("provision");
        assert_eq!(made.to, 1);
        let exists = |name: String| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                )
                .bind(name)
                .fetch_one(&pool)
                .await
                .expect("pg_database")
            }
        };
        assert!(exists(own.clone()).await);
        assert!(databases.exists(&target.placement).await.expect("exists"));
        assert!(
            tables(&pool, &target.placement).await.is_empty(),
            "nothing of it in the shared database"
        );
        databases.provision(&target).await.expect("provision again");
        databases
            .deprovision(target.tenant_id, &target.placement)
            .await
            .expect("deprovision");
        assert!(!exists(own).await);
        assert!(!databases.exists(&target.placement).await.expect("exists"));
    }

    #[tokio::test]
    async fn an_unreachable_tenant_database_fails_worth_retrying() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let target = target(&schema, &pool, PlacementRule::Shared("far".into())).await;
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let databases =
            PgTenantDatabases::new(pool, set(&[("0001_orders.sql", ORDERS)]), None, LIMITS)
                .with_database(
                    "far",
                    &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    1,
                    std::time::Duration::from_millis(500),
                )
                .expect("a valid URL");
        for err in [
            databases.provision(&target).await.expect_err("unreachable"),
            databases
                .migrate(&target.placement, 1, LIMITS)
                .await
                .expect_err("unreachable"),
        ] {
            assert_eq!(
                (err.reason.as_str(), err.permanent),
                ("DATABASE_UNAVAILABLE", false)
            );
        }
        let unknown = Placement {
            tenant_database: "nowhere".into(),
            ..target.placement.clone()
        };
        let err = databases
            .exists(&unknown)
            .await
            .expect_err("not configured");
        assert_eq!(
            (err.reason.as_str(), err.permanent),
            ("TENANT_DATABASE_UNKNOWN", true)
        );
    }

    #[tokio::test]
    async fn the_registry_refuses_an_edited_migration_and_accepts_an_older_set() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let store = PgStore::new(pool, Arc::new(KeyRing::generate("test")));
        let two = set(&[("0001_orders.sql", ORDERS), ("0002_x.sql", "SELECT 1;")]);
        store.register_migrations(&two).await.expect("register");
        store.register_migrations(&two).await.expect("again");
        let older = set(&[("0001_orders.sql", ORDERS)]);
        store
            .register_migrations(&older)
            .await
            .expect("an older release");
        let edited = set(&[("0001_orders.sql", "CREATE TABLE orders ();")]);
        let err = store
            .register_migrations(&edited)
            .await
            .expect_err("edited");
        assert!(
            matches!(&err, RegistryError::Drift(d) if d.file == "0001_orders.sql"),
            "{err}"
        );
        assert!(
            err.to_string().contains("add a new migration instead"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn tenants_made_before_placements_are_adopted_with_their_schemas_version() {
        let schema = ScratchSchema::create().await.expect("scratch schema");
        let pool = schema.migrated_pool().await.expect("pool");
        let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
        let prefix = schema.tenant_schema_prefix();
        // An old tenant: no placement, and a schema made the old way (no checksums).
        let old = tenant(&slug("old"), "pro", &[]);
        store
            .create(&old, &run_for(&old), &[], None)
            .await
            .expect("create");
        let name = format!("{prefix}{}", old.id().as_uuid().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA \"{name}\"; CREATE TABLE \"{name}\".schema_migrations \
             (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO \"{name}\".schema_migrations (version, name) VALUES (1, 'a'), (2, 'b');"
        )))
        .execute(&pool)
        .await
        .expect("an old schema");
        let never = tenant(&slug("never"), "pro", &[]);
        store
            .create(&never, &run_for(&never), &[], None)
            .await
            .expect("create");
        let now = chrono::Utc::now();
        assert_eq!(
            store
                .adopt_unplaced("default", &prefix, now)
                .await
                .expect("adopt"),
            2
        );
        assert_eq!(
            store
                .adopt_unplaced("default", &prefix, now)
                .await
                .expect("again"),
            0
        );
        let read = store.get(old.id()).await.expect("get").expect("stored");
        let placement = read.placement().expect("placed");
        assert_eq!(
            (
                placement.tenant_database.as_str(),
                placement.schema.as_str()
            ),
            ("default", name.as_str())
        );
        let schemas = tenantd_domain::ports::TenantSchemaRepository::list(
            &store,
            &SchemaQuery {
                behind_version: None,
                page_size: 10,
                after: None,
            },
        )
        .await
        .expect("list");
        assert_eq!(
            schemas
                .iter()
                .map(|s| (s.tenant_id, s.version))
                .collect::<Vec<_>>(),
            [(old.id(), 2)],
            "only the tenant whose schema exists has a version"
        );
    }
}

/// A dump reads a partitioned table's rows once (through the table, not its partitions)
/// and keeps an identifier that is no file name as it is in the DDL.
#[tokio::test]
async fn a_dump_reads_a_partitioned_table_once_and_odd_names_as_they_are() {
    use tenantd_domain::ports::{ProvisioningTarget, TenantDatabases as _, TenantSchemaDumps as _};
    use tenantd_domain::tenant_schema::{MigrationSet, PlacementRule};
    use tenantd_domain::{ContactEmail, DisplayName, PlanId, Slug, TenantId};

    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let sql = "CREATE TABLE events (id integer NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);\n\
               CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');\n\
               INSERT INTO events VALUES (1, '2026-05-01'), (2, '2026-06-01');\n\
               CREATE TABLE \"odd/..name\" (x integer);\n\
               INSERT INTO \"odd/..name\" VALUES (7);";
    let set = MigrationSet::parse(vec![(
        "0001_events.sql".to_owned(),
        sql.as_bytes().to_vec(),
    )])
    .expect("a valid set");
    let databases = PgTenantDatabases::new(pool, Arc::new(set), None, LIMITS);
    let tenant = TenantId::from_uuid(uuid::Uuid::now_v7()).expect("v7");
    let target = ProvisioningTarget {
        tenant_id: tenant,
        slug: Slug::parse("dumped").expect("slug"),
        display_name: DisplayName::parse("Dumped").expect("name"),
        plan_id: PlanId::new("pro"),
        contact_email: ContactEmail::parse("ops@dumped.example").expect("email"),
        placement: PlacementRule::Shared("default".into())
            .place(tenant, &schema.tenant_schema_prefix()),
    };
    databases.provision(&target).await.expect("provision");
    let mut collected = crate::contract::fixtures::Collected::default();
    databases
        .dump(tenant, &target.placement, &mut collected)
        .await
        .expect("dump");
    let tables = collected.0;
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["events", "odd/..name", "schema_migrations"]);
    let events = String::from_utf8(tables[0].2.clone()).expect("text");
    assert_eq!(events, "id,at\n1,2026-05-01\n2,2026-06-01\n");
    assert!(
        tables[0].1.contains("\"id\" integer NOT NULL"),
        "{}",
        tables[0].1
    );
    assert_eq!(
        String::from_utf8(tables[1].2.clone()).expect("text"),
        "x\n7\n"
    );
    assert!(tables[1].1.starts_with("CREATE TABLE \"odd/..name\""));
}

/// The columns that say how `tenant`'s contact email is sealed: (key id, envelope version,
/// envelope), and its data key's (envelope, wrapping key id, destroyed).
async fn sealing(
    pool: &sqlx::PgPool,
    tenant: tenantd_domain::TenantId,
) -> (
    (String, i32, Vec<u8>),
    (Option<Vec<u8>>, Option<String>, bool),
) {
    let email = sqlx::query_as(
        "SELECT contact_email_key_id, get_byte(contact_email_sealed, 0), contact_email_sealed \
         FROM tenants WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(pool)
    .await
    .expect("tenant row");
    let key = sqlx::query_as(
        "SELECT data_key_sealed, data_key_id, data_key_destroyed_at IS NOT NULL \
         FROM tenant_data_keys WHERE tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_one(pool)
    .await
    .expect("data key row");
    (email, key)
}

#[tokio::test]
async fn a_contact_email_is_sealed_with_its_tenants_data_key_and_shredded_with_it() {
    use tenantd_domain::ports::{DataKeyRepository, SealedEmail, TenantRepository};
    use tenantd_domain::{ContactEmail, RepoError, TenantChange};

    let (_schema, pool, store, stored) = store_with_tenant("shred").await;
    let id = stored.id();
    let ((key_id, version, created_envelope), (wrapped, wrapped_by, destroyed)) =
        sealing(&pool, id).await;
    assert_eq!(key_id, SealedEmail::DATA_KEY);
    assert_eq!(version, 2, "a data-key envelope");
    assert_eq!(wrapped_by.as_deref(), Some("test"));
    assert!(!destroyed);
    let read = TenantRepository::get(&store, id)
        .await
        .expect("get")
        .expect("the tenant");
    assert_eq!(read.contact_email(), stored.contact_email());

    let mut changed = read.clone();
    let email = ContactEmail::parse("Billing@shred.example").expect("valid email");
    changed
        .update(
            TenantChange {
                contact_email: Some(email.clone()),
                ..TenantChange::default()
            },
            read.updated_at(),
        )
        .expect("change");
    TenantRepository::update(&store, &changed, read.version(), &[])
        .await
        .expect("update");
    let ((key_id, version, envelope), (rewritten, ..)) = sealing(&pool, id).await;
    assert_eq!((key_id.as_str(), version), (SealedEmail::DATA_KEY, 2));
    assert_ne!(envelope, created_envelope);
    assert_eq!(
        rewritten, wrapped,
        "the same data key seals the new address"
    );
    let read = TenantRepository::get(&store, id)
        .await
        .expect("get")
        .expect("the tenant");
    assert_eq!(read.contact_email(), Some(&email));

    assert!(
        DataKeyRepository::destroy(&store, id)
            .await
            .expect("destroy")
    );
    let ((_, _, kept), (gone, gone_by, destroyed)) = sealing(&pool, id).await;
    assert_eq!((gone, gone_by, destroyed), (None, None, true));
    assert!(
        matches!(
            TenantRepository::get(&store, id).await,
            Err(RepoError::Internal(_))
        ),
        "a tenant not being purged whose key is gone is an alert"
    );
    sqlx::query("UPDATE tenants SET status = 'PURGING' WHERE tenant_id = $1")
        .bind(id.as_uuid())
        .execute(&pool)
        .await
        .expect("purging");
    let read = TenantRepository::get(&store, id)
        .await
        .expect("get")
        .expect("the tenant");
    assert_eq!(read.contact_email(), None, "shredded: nothing opens it");
    let ring = store.cipher();
    for key in [None, Some(&ring.new_data_key(id))] {
        assert!(
            ring.open_with_key(id, key, &kept).is_err(),
            "the kept ciphertext opens with no key there is"
        );
    }
}

#[tokio::test]
async fn a_contact_email_sealed_before_data_keys_still_opens_and_its_next_write_uses_one() {
    use tenantd_domain::ports::{SealedEmail, TenantRepository};

    let (_schema, pool, store, stored) = store_with_tenant("legacy").await;
    let id = stored.id();
    let legacy = store
        .cipher()
        .seal(id, stored.contact_email().expect("an email"));
    sqlx::query("DELETE FROM tenant_data_keys WHERE tenant_id = $1")
        .bind(id.as_uuid())
        .execute(&pool)
        .await
        .expect("no key");
    sqlx::query(
        "UPDATE tenants SET contact_email_sealed = $2, contact_email_key_id = $3 \
         WHERE tenant_id = $1",
    )
    .bind(id.as_uuid())
    .bind(&legacy.envelope)
    .bind(&legacy.key_id)
    .execute(&pool)
    .await
    .expect("a ring envelope");
    let read = TenantRepository::get(&store, id)
        .await
        .expect("get")
        .expect("the tenant");
    assert_eq!(read.contact_email(), stored.contact_email());

    let mut renamed = read.clone();
    renamed
        .update(
            tenantd_domain::TenantChange {
                display_name: Some(
                    tenantd_domain::DisplayName::parse("Legacy Inc").expect("valid name"),
                ),
                ..tenantd_domain::TenantChange::default()
            },
            read.updated_at(),
        )
        .expect("rename");
    TenantRepository::update(&store, &renamed, read.version(), &[])
        .await
        .expect("update");
    let ((key_id, version, _), (wrapped, _, destroyed)) = sealing(&pool, id).await;
    assert_eq!((key_id.as_str(), version), (SealedEmail::DATA_KEY, 2));
    assert!(
        wrapped.is_some() && !destroyed,
        "a data key was made for it"
    );
    let read = TenantRepository::get(&store, id)
        .await
        .expect("get")
        .expect("the tenant");
    assert_eq!(read.contact_email(), stored.contact_email());
}

#[tokio::test]
async fn a_purge_stored_before_the_data_key_step_reads_with_it_to_run() {
    use chrono::Duration;
    use tenantd_domain::ports::{PurgeRepository, TenantRepository};
    use tenantd_domain::purge::{Purge, PurgeStepKind, PurgeStepState};

    use crate::contract::fixtures::now;

    let (_schema, pool, store, mut t) = store_with_tenant("old-purge").await;
    let version = t.version();
    t.delete(Duration::days(30), now() - Duration::days(40))
        .expect("delete");
    TenantRepository::update(&store, &t, version, &[])
        .await
        .expect("deleted");
    let version = t.version();
    t.begin_purge(true, now()).expect("purgeable");
    let purge = Purge::new(t.id(), true, "admin".into(), now());
    PurgeRepository::start(&store, &t, version, &purge, &[])
        .await
        .expect("start");
    let without = |finished: bool| {
        format!(
            "UPDATE tenant_purges SET steps = (SELECT jsonb_agg(s ORDER BY n) \
             FROM jsonb_array_elements(steps) WITH ORDINALITY AS e(s, n) \
             WHERE s->>'kind' <> 'DATA_KEY'), finished_at = {} WHERE tenant_id = $1",
            if finished { "now()" } else { "NULL" }
        )
    };
    for finished in [false, true] {
        sqlx::query(sqlx::AssertSqlSafe(without(finished)))
            .bind(t.id().as_uuid())
            .execute(&pool)
            .await
            .expect("a purge of the release before");
        let read = PurgeRepository::get(&store, t.id())
            .await
            .expect("get")
            .expect("the purge");
        let kinds: Vec<_> = read.steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, PurgeStepKind::ORDER);
        let step = read.step(PurgeStepKind::DataKey);
        let expected = if finished {
            PurgeStepState::Succeeded
        } else {
            PurgeStepState::Pending
        };
        assert_eq!(
            (step.state, step.attempts),
            (expected, 0),
            "finished: {finished}"
        );
    }
}

#[tokio::test]
async fn an_outbox_event_of_an_unknown_type_holds_back_its_tenant_only() {
    use std::time::Duration;

    use tenantd_domain::ports::{BatchOutcome, Outbox as _, TenantRepository as _};

    use crate::contract::fixtures::{created, run_for, slug, tenant};

    let (_schema, pool, store, a) = store_with_tenant("undecodable").await;
    // After the tenant's own events: one of a type this version does not know (as a newer
    // replica would write it), then a known one.
    let unknown = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO tenant_events (event_id, tenant_id, event_type, payload, occurred_at) \
         VALUES ($1, $2, 'tenant.v9.TenantTeleported', '{\"type\": \"tenant_teleported\"}', now())",
    )
    .bind(unknown)
    .bind(a.id().as_uuid())
    .execute(&pool)
    .await
    .expect("insert");
    let later = created(&a);
    let b = tenant(&slug("decodable"), "free", &[]);
    let b_created = created(&b);
    store
        .create(&b, &run_for(&b), std::slice::from_ref(&b_created), None)
        .await
        .expect("create b");
    sqlx::query(
        "INSERT INTO tenant_events (event_id, tenant_id, event_type, payload, occurred_at) \
         VALUES ($1, $2, $3, $4, now())",
    )
    .bind(later.id.0)
    .bind(a.id().as_uuid())
    .bind(later.kind.type_name())
    .bind(sqlx::types::Json(&later.kind))
    .execute(&pool)
    .await
    .expect("insert");

    let batch = store
        .claim(100, Duration::from_secs(30))
        .await
        .expect("the claim works");
    let claimed: Vec<_> = batch.events().iter().map(|e| e.id.0).collect();
    assert!(
        claimed.contains(&b_created.id.0),
        "the other tenant's event is relayed"
    );
    assert!(
        !claimed.contains(&unknown),
        "the undecodable event is claimed"
    );
    assert!(
        !claimed.contains(&later.id.0),
        "a later event of its tenant overtook it"
    );
    assert!(
        batch.undecodable().is_empty(),
        "another version's event is held, not counted against"
    );
    let published: Vec<_> = batch.events().iter().map(|e| e.id).collect();
    batch
        .finish(&BatchOutcome::published(&published))
        .await
        .expect("finish");
    // Still there, still unpublished, for a replica that knows it.
    let left: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM tenant_events WHERE published_at IS NULL ORDER BY event_id",
    )
    .fetch_all(&pool)
    .await
    .expect("select");
    assert_eq!(left, vec![unknown, later.id.0]);
}

/// A stored event of a known type whose payload does not decode (a corrupted row) is held
/// for an hour (a newer replica may read it), then claimed as undecodable with its failed
/// attempts, so the relay can dead-letter it; its tenant's later event waits behind it
/// until then.
#[tokio::test]
async fn an_outbox_event_of_a_known_type_that_does_not_decode_is_claimed_as_undecodable() {
    use std::time::Duration;

    use tenantd_domain::ports::{BatchOutcome, FailedDelivery, Outbox as _};

    use crate::contract::fixtures::created;

    // The tenant is stored without events: the two below are its only ones.
    let (_schema, pool, store, a) = store_with_tenant("corrupt").await;
    let (corrupt, later) = (created(&a), created(&a));
    for (event, payload) in [
        (
            &corrupt,
            serde_json::json!({"type": "tenant_created", "slug": 7}),
        ),
        (&later, serde_json::to_value(&later.kind).expect("json")),
    ] {
        sqlx::query(
            "INSERT INTO tenant_events \
                 (event_id, tenant_id, event_type, payload, occurred_at, delivery_attempts) \
             VALUES ($1, $2, 'tenant.v1.TenantCreated', $3, now(), 4)",
        )
        .bind(event.id.0)
        .bind(a.id().as_uuid())
        .bind(sqlx::types::Json(payload))
        .execute(&pool)
        .await
        .expect("insert");
    }
    let fresh = store
        .claim(100, Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(
        fresh.events().is_empty() && fresh.undecodable().is_empty(),
        "within the grace a newer replica may publish it: held, its later event behind it"
    );
    fresh
        .finish(&BatchOutcome::default())
        .await
        .expect("finish");
    sqlx::query(
        "UPDATE tenant_events SET created_at = now() - interval '2 hours' WHERE event_id = $1",
    )
    .bind(corrupt.id.0)
    .execute(&pool)
    .await
    .expect("age it");
    let batch = store
        .claim(100, Duration::from_secs(30))
        .await
        .expect("claim");
    assert!(batch.events().is_empty(), "the later event waits behind it");
    assert_eq!(batch.undecodable().len(), 1);
    assert_eq!(batch.undecodable()[0].event_id, corrupt.id);
    assert_eq!(batch.attempts(corrupt.id), 4);
    let error = batch.undecodable()[0].error.clone();
    batch
        .finish(&BatchOutcome {
            dead_lettered: vec![FailedDelivery {
                event_id: corrupt.id,
                error,
            }],
            ..BatchOutcome::default()
        })
        .await
        .expect("finish");
    let next = store
        .claim(100, Duration::from_secs(30))
        .await
        .expect("claim");
    let ids: Vec<_> = next.events().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![later.id], "its tenant goes on without it");
    let dead = store.dead_letters(None, None, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].delivery_attempts, dead[0].event_type.as_str()),
        (5, "tenant.v1.TenantCreated")
    );
    assert!(
        dead[0].last_error.contains("does not decode"),
        "{}",
        dead[0].last_error
    );
}

#[tokio::test]
async fn a_database_missing_a_migration_of_this_build_is_not_migrated() {
    let schema = ScratchSchema::create().await.expect("scratch schema");
    let pool = schema.migrated_pool().await.expect("migrated pool");
    let store = PgStore::new(pool.clone(), Arc::new(KeyRing::generate("test")));
    store.migrated().await.expect("every migration applied");
    let newest = super::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .expect("delete");
    let err = store.migrated().await.expect_err("one is missing");
    assert_eq!(
        err.to_string(),
        tenantd_domain::RepoError::Internal(format!(
            "1 migrations not applied (the newest: {newest})"
        ))
        .to_string()
    );
}
