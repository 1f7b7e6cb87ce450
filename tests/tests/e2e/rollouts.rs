//! Tenant schemas on real PostgreSQL: the application's own migrations, placement on
//! tenant databases, and rollouts over gRPC — a canary wave, a migration that fails on
//! some tenants' data, a tenant database that is unreachable, two rollouts at once, and
//! migration files that are refused at start. (A replica killed mid-rollout is in
//! `processes.rs`.)

use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use sqlx::PgPool;
use tenantd_adapters::postgres::testing::{ScratchSchema, test_database_url};
use tenantd_e2e::pb::migration_service_client::MigrationServiceClient;
use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::{
    CanarySelector, ErrorBudget, GetRolloutRequest, GetTenantRequest, ListTenantEventsRequest,
    ListTenantSchemasRequest, ResumeRolloutRequest, Rollout, RolloutState, RolloutTenantState,
    StartRolloutRequest, TenantSchema, WatchRolloutRequest, Wave, canary_selector,
};
use tenantd_e2e::proxy::FaultProxy;
use tenantd_e2e::{
    TestKeys, TestServer, assert_reason, counter, eventually, new_tenant, with_schema_args,
};
use tonic::Code;
use tonic::transport::Channel;

/// The application's first two migrations: a table of orders with seeded rows.
const V1: (&str, &str) = (
    "0001_orders.sql",
    "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer NOT NULL);",
);
const V2: (&str, &str) = (
    "0002_seed.sql",
    "INSERT INTO orders (id, amount) VALUES (1, 10), (2, 20);",
);
/// Added later: a column with a default, an index and a backfill of the seeded rows.
const V3: (&str, &str) = (
    "0003_status.sql",
    "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'open';\n\
     CREATE INDEX orders_status ON orders (status);\n\
     UPDATE orders SET status = 'settled' WHERE amount >= 20;",
);

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
}

fn dir_arg(dir: &tempfile::TempDir) -> String {
    dir.path().display().to_string()
}

/// A server on `schema` with the migrations of `dir` and the further `args`.
async fn server(
    schema: ScratchSchema,
    keys: &TestKeys,
    dir: &tempfile::TempDir,
    args: &[&str],
) -> anyhow::Result<TestServer> {
    let dir = dir_arg(dir);
    let mut all = vec![
        "--tenant-migrations-dir",
        dir.as_str(),
        "--rollout-poll-interval-ms",
        "50",
    ];
    all.extend_from_slice(args);
    let config_args: Vec<String> = all.iter().map(|a| (*a).to_owned()).collect();
    TestServer::start_on_schema_with(schema, keys, move |config| {
        let args: Vec<&str> = config_args.iter().map(String::as_str).collect();
        with_schema_args(config, &args).expect("valid schema settings")
    })
    .await
}

async fn schemas(client: &mut MigrationServiceClient<Channel>, behind: i32) -> Vec<TenantSchema> {
    client
        .list_tenant_schemas(ListTenantSchemasRequest {
            behind_version: behind,
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .schemas
}

/// Watches the rollout to its end; returns every state it went through and the last view.
async fn watch_to_end(
    client: &mut MigrationServiceClient<Channel>,
    rollout_id: &str,
) -> (Vec<RolloutState>, Rollout) {
    let mut stream = client
        .watch_rollout(WatchRolloutRequest {
            rollout_id: rollout_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut states = Vec::new();
    let mut last = None;
    let watched = tokio::time::timeout(Duration::from_mins(1), async {
        while let Some(item) = stream.next().await {
            let rollout = item.unwrap().rollout.unwrap();
            if states.last() != Some(&rollout.state()) {
                states.push(rollout.state());
            }
            last = Some(rollout);
        }
    })
    .await;
    assert!(
        watched.is_ok(),
        "the rollout did not end within 60 s: {states:?}"
    );
    (states, last.unwrap())
}

/// Watches the rollout until it is in `state`.
async fn wait_for(
    client: &mut MigrationServiceClient<Channel>,
    rollout_id: &str,
    state: RolloutState,
) -> Rollout {
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    loop {
        let rollout = client
            .get_rollout(GetRolloutRequest {
                rollout_id: rollout_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .rollout
            .unwrap();
        if rollout.state() == state {
            return rollout;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout {rollout_id} is {:?}, not {state:?}: {rollout:?}",
            rollout.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The versions a tenant schema records, as PostgreSQL has them.
async fn recorded(pool: &PgPool, database_schema: &str) -> Vec<(i32, String, bool)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, name, checksum IS NOT NULL FROM \"{database_schema}\".schema_migrations \
         ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The user part and the (loopback) server address of a `postgres://user@host:port/db` URL.
fn user_and_address(url: &str) -> (String, std::net::SocketAddr) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (user, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let address = host
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("a loopback address");
    (user.to_owned(), address)
}

/// The tenants a rollout's `TenantSchemaMigrated` events name (each from 2 to 3), and the
/// states its `RolloutStateChanged` events announce, in order.
async fn rollout_events(server: &TestServer, rollout_id: &str) -> (Vec<String>, Vec<i32>) {
    let events = server
        .events()
        .await
        .unwrap()
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: String::new(),
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let migrated = events
        .iter()
        .filter_map(|e| match e.payload.as_ref()? {
            Payload::TenantSchemaMigrated(m) if m.rollout_id == rollout_id => {
                assert_eq!((m.from_version, m.to_version), (2, 3));
                Some(e.tenant_id.clone())
            }
            _ => None,
        })
        .collect();
    let states = events
        .iter()
        .filter_map(|e| match e.payload.as_ref()? {
            Payload::RolloutStateChanged(s) if e.rollout_id == rollout_id => {
                assert!(e.tenant_id.is_empty(), "a rollout's own event");
                Some(s.state)
            }
            _ => None,
        })
        .collect();
    (migrated, states)
}

/// Starts a rollout migrating one tenant at a time that pauses at its second failure.
async fn one_at_a_time_with_one_failure_allowed(
    client: &mut MigrationServiceClient<Channel>,
) -> Rollout {
    client
        .start_rollout(StartRolloutRequest {
            max_parallel: 1,
            error_budget: Some(ErrorBudget {
                count: 1,
                ratio: 0.0,
            }),
            ..StartRolloutRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap()
}

/// Asserts `schema` is at version 2: two recorded migrations and no `orders_positive`.
async fn assert_at_version_two(db: &PgPool, schema: &str) {
    assert_eq!(recorded(db, schema).await.len(), 2);
    let constraints: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = $1 AND c.conname = 'orders_positive'",
    )
    .bind(schema)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(constraints, 0);
}

/// Every tenant's schema records three migrations and has the backfilled `status`.
async fn assert_backfilled(db: &PgPool, tenants: &[tenantd_e2e::pb::Tenant]) {
    for tenant in tenants {
        let schema = &tenant.placement.as_ref().unwrap().schema;
        assert_eq!(recorded(db, schema).await.len(), 3);
        let statuses: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, status FROM \"{schema}\".orders ORDER BY id"
        )))
        .fetch_all(db)
        .await
        .unwrap();
        assert_eq!(statuses, [(1, "open".into()), (2, "settled".into())]);
    }
}

async fn pool(schema: &ScratchSchema) -> PgPool {
    PgPool::connect(&schema.url()).await.unwrap()
}

#[tokio::test]
async fn a_rollout_with_a_canary_wave_brings_every_tenant_schema_to_the_new_migration() {
    let schema = ScratchSchema::create().await.unwrap();
    let db = pool(&schema).await;
    let keys = TestKeys::generate();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[V1, V2]);
    let first = server(schema, &keys, &dir, &[]).await.unwrap();
    let mut created = Vec::new();
    for i in 0..4 {
        let mut tenant = new_tenant(&format!("roll-{i}"));
        if i == 2 {
            tenant.labels.insert("ring".into(), "canary".into());
        }
        created.push(first.create_active(tenant).await.unwrap());
    }
    let placement = created[0]
        .placement
        .clone()
        .expect("GetTenant says where its data is");
    assert_eq!(placement.tenant_database, "default");
    assert!(placement.dedicated_database.is_empty());
    assert_eq!(
        recorded(&db, &placement.schema).await,
        [(1, "orders".into(), true), (2, "seed".into(), true)]
    );
    let schema = first.stop().await.unwrap().unwrap();

    // A replica with a newer set migrates nothing by itself: it serves, and counts those behind.
    write(dir.path(), &[V3]);
    let second = server(schema, &keys, &dir, &[]).await.unwrap();
    let mut client = second.migrations().await.unwrap();
    let behind = schemas(&mut client, 3).await;
    assert_eq!(behind.len(), 4);
    assert!(behind.iter().all(|s| s.version == 2));
    let metrics = second.metrics_text().await.unwrap();
    assert_eq!(counter(&metrics, "tenant_schemas_behind", &[]), 4);

    let started = client
        .start_rollout(StartRolloutRequest {
            canary: Some(CanarySelector {
                selector: Some(canary_selector::Selector::Labels(
                    tenantd_e2e::pb::LabelSelector {
                        match_labels: [("ring".to_owned(), "canary".to_owned())].into(),
                    },
                )),
            }),
            max_parallel: 2,
            ..StartRolloutRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    let spec = started.spec.clone().unwrap();
    assert_eq!(
        (spec.target_version, spec.max_parallel),
        (3, 2),
        "the newest by default"
    );
    assert_eq!(started.canary.as_ref().unwrap().total, 1);
    assert_eq!(started.tenants.as_ref().unwrap().total, 4);
    let (states, ended) = watch_to_end(&mut client, &started.rollout_id).await;
    assert_eq!(states.last(), Some(&RolloutState::Succeeded), "{states:?}");
    assert_eq!(ended.tenants.as_ref().unwrap().succeeded, 4);
    assert!(ended.failures.is_empty());

    // The canary was migrated before any other tenant started.
    let (migrated, rollout_states) = rollout_events(&second, &started.rollout_id).await;
    assert_eq!(migrated.len(), 4);
    assert_eq!(migrated[0], created[2].tenant_id, "the canary first");
    assert_eq!(
        rollout_states,
        [RolloutState::Running as i32, RolloutState::Succeeded as i32]
    );

    // Every schema has the new column, index and backfill, recorded once with its checksum.
    assert_backfilled(&db, &created).await;
    assert!(schemas(&mut client, 3).await.is_empty());
    let metrics = second.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "tenant_schema_migrations_total",
            &[("result", "succeeded")]
        ),
        4
    );
    // The gauge follows shortly after the rollout's last change.
    eventually(
        "no tenant schema behind",
        Duration::from_secs(5),
        || async {
            counter(
                &second.metrics_text().await.unwrap(),
                "tenant_schemas_behind",
                &[],
            ) == 0
        },
    )
    .await;

    // A tenant created now is made at the newest version.
    let late = second.create_active(new_tenant("roll-late")).await.unwrap();
    let all = schemas(&mut client, 0).await;
    let late_schema = all.iter().find(|s| s.tenant_id == late.tenant_id).unwrap();
    assert_eq!(late_schema.version, 3);
}

#[tokio::test]
async fn a_migration_failing_on_some_tenants_data_leaves_them_at_their_version_and_the_budget_pauses()
 {
    let schema = ScratchSchema::create().await.unwrap();
    let db = pool(&schema).await;
    let keys = TestKeys::generate();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[V1, V2]);
    let server = server(schema, &keys, &dir, &[]).await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(
            server
                .create_active(new_tenant(&format!("data-{i}")))
                .await
                .unwrap(),
        );
    }
    // Two tenants hold data the new constraint refuses.
    for tenant in [&tenants[1], &tenants[3]] {
        let schema = &tenant.placement.as_ref().unwrap().schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{schema}\".orders VALUES (3, -7)"
        )))
        .execute(&db)
        .await
        .unwrap();
    }
    // The replica is started again with the new migration (the set is read at start).
    let schema = server.stop().await.unwrap().unwrap();
    write(
        dir.path(),
        &[(
            "0003_positive.sql",
            "ALTER TABLE orders ADD CONSTRAINT orders_positive CHECK (amount > 0);",
        )],
    );
    let server = self::server(schema, &keys, &dir, &[]).await.unwrap();
    let mut client = server.migrations().await.unwrap();
    let started = one_at_a_time_with_one_failure_allowed(&mut client).await;
    let paused = wait_for(&mut client, &started.rollout_id, RolloutState::Paused).await;
    assert_eq!(
        paused.reason.as_ref().unwrap().reason,
        "ERROR_BUDGET_EXHAUSTED"
    );
    let counts = paused.tenants.unwrap();
    assert_eq!((counts.succeeded, counts.failed, counts.pending), (2, 2, 1));
    let failed: Vec<&str> = paused
        .failures
        .iter()
        .map(|f| f.tenant_id.as_str())
        .collect();
    assert_eq!(
        failed,
        [tenants[1].tenant_id.as_str(), tenants[3].tenant_id.as_str()]
    );
    for failure in &paused.failures {
        assert_eq!(failure.state(), RolloutTenantState::Failed);
        assert_eq!(failure.wave(), Wave::Rest);
        let error = failure.error.as_ref().unwrap();
        assert_eq!(error.reason, "MIGRATION_FAILED");
        assert!(
            error.message.contains("0003_positive.sql"),
            "{}",
            error.message
        );
        assert!(failure.permanent);
    }
    // Exactly at their previous version: no constraint, two recorded versions.
    for tenant in [&tenants[1], &tenants[3]] {
        assert_at_version_two(&db, &tenant.placement.as_ref().unwrap().schema).await;
    }
    assert_eq!(
        recorded(&db, &tenants[0].placement.as_ref().unwrap().schema)
            .await
            .len(),
        3
    );
    let listed = schemas(&mut client, 3).await;
    let with_errors: Vec<_> = listed
        .iter()
        .filter(|s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.reason == "MIGRATION_FAILED")
        })
        .collect();
    assert_eq!(with_errors.len(), 2);
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "tenant_schema_rollout_tenants",
            &[("state", "FAILED")]
        ),
        2
    );
}

#[tokio::test]
async fn an_unreachable_tenant_database_fails_its_tenants_only_and_they_are_retried_after_resume() {
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    // A second tenant database on the same server, reached through a proxy the test cuts.
    let far_name = format!("{}far", schema.tenant_schema_prefix());
    let admin = PgPool::connect(&test_database_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{far_name}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    let (user, upstream) = user_and_address(&test_database_url());
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let far = format!(
        "far=postgres://{user}@127.0.0.1:{}/{far_name}",
        proxy.addr().port()
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[V1, V2]);
    let args = [
        "--tenant-database",
        far.as_str(),
        "--plan-placement",
        "enterprise=far",
    ];
    let server = self::server(schema, &keys, &dir, &args).await.unwrap();
    let plan = |slug: &str, plan: &str| {
        let mut tenant = new_tenant(slug);
        tenant.plan_id = plan.into();
        tenant
    };
    let near_1 = server.create_active(plan("near-1", "pro")).await.unwrap();
    let far_1 = server
        .create_active(plan("far-1", "enterprise"))
        .await
        .unwrap();
    let near_2 = server.create_active(plan("near-2", "pro")).await.unwrap();
    let far_2 = server
        .create_active(plan("far-2", "enterprise"))
        .await
        .unwrap();
    assert_eq!(far_1.placement.as_ref().unwrap().tenant_database, "far");
    let schema = server.stop().await.unwrap().unwrap();
    write(dir.path(), &[V3]);
    let server = self::server(schema, &keys, &dir, &args).await.unwrap();
    let mut client = server.migrations().await.unwrap();

    proxy.cut();
    let started = one_at_a_time_with_one_failure_allowed(&mut client).await;
    let paused = wait_for(&mut client, &started.rollout_id, RolloutState::Paused).await;
    let failed: Vec<&str> = paused
        .failures
        .iter()
        .map(|f| f.tenant_id.as_str())
        .collect();
    assert_eq!(failed, [far_1.tenant_id.as_str(), far_2.tenant_id.as_str()]);
    assert!(
        paused.failures.iter().all(|f| {
            f.error.as_ref().unwrap().reason == "DATABASE_UNAVAILABLE" && !f.permanent
        })
    );
    // The other tenants went on.
    let at_three: Vec<String> = schemas(&mut client, 0)
        .await
        .into_iter()
        .filter(|s| s.version == 3)
        .map(|s| s.tenant_id)
        .collect();
    assert_eq!(
        at_three,
        [near_1.tenant_id.clone(), near_2.tenant_id.clone()]
    );
    // The server itself kept serving.
    server
        .tenants()
        .await
        .unwrap()
        .get_tenant(GetTenantRequest {
            tenant_id: far_1.tenant_id.clone(),
        })
        .await
        .unwrap();

    proxy.restore();
    let resumed = client
        .resume_rollout(ResumeRolloutRequest {
            rollout_id: started.rollout_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(resumed.state(), RolloutState::Running);
    assert_eq!(resumed.tenants.as_ref().unwrap().pending, 2, "queued again");
    let (_, ended) = watch_to_end(&mut client, &started.rollout_id).await;
    assert_eq!(ended.state(), RolloutState::Succeeded);
    assert!(schemas(&mut client, 3).await.is_empty());
    drop(server);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{far_name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_second_rollout_while_one_runs_is_refused() {
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[V1]);
    let server = server(schema, &keys, &dir, &[]).await.unwrap();
    for i in 0..2 {
        server
            .create_active(new_tenant(&format!("twice-{i}")))
            .await
            .unwrap();
    }
    let schema = server.stop().await.unwrap().unwrap();
    write(dir.path(), &[("0002_slow.sql", "SELECT pg_sleep(1);")]);
    let server = self::server(schema, &keys, &dir, &[]).await.unwrap();
    let mut client = server.migrations().await.unwrap();
    let request = StartRolloutRequest {
        max_parallel: 1,
        ..StartRolloutRequest::default()
    };
    let first = client
        .start_rollout(request.clone())
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    let refused = client.start_rollout(request).await.unwrap_err();
    assert_reason(&refused, Code::FailedPrecondition, "ROLLOUT_IN_PROGRESS");
    assert!(
        refused.message().contains(&first.rollout_id),
        "{}",
        refused.message()
    );
    let resumed = client
        .resume_rollout(ResumeRolloutRequest {
            rollout_id: first.rollout_id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&resumed, Code::FailedPrecondition, "ROLLOUT_STATE_INVALID");
    let missing = client
        .get_rollout(GetRolloutRequest {
            rollout_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_reason(&missing, Code::NotFound, "ROLLOUT_NOT_FOUND");
    let beyond = client
        .start_rollout(StartRolloutRequest {
            target_version: 9,
            ..StartRolloutRequest::default()
        })
        .await
        .unwrap_err();
    assert_reason(&beyond, Code::InvalidArgument, "FIELD_INVALID");
    let (_, ended) = watch_to_end(&mut client, &first.rollout_id).await;
    assert_eq!(ended.state(), RolloutState::Succeeded);
}

#[tokio::test]
async fn migration_files_edited_after_they_were_applied_stop_the_start_naming_the_file() {
    let schema = ScratchSchema::create().await.unwrap();
    let keys = TestKeys::generate();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[V1, V2]);
    let server = server(schema, &keys, &dir, &[]).await.unwrap();
    server.create_active(new_tenant("edited")).await.unwrap();
    let schema = server.stop().await.unwrap().unwrap();
    write(
        dir.path(),
        &[(
            "0002_seed.sql",
            "INSERT INTO orders (id, amount) VALUES (1, 99);",
        )],
    );
    let err = self::server(schema, &keys, &dir, &[]).await.unwrap_err();
    let line = format!("{err:#}");
    assert!(
        line.contains("0002_seed.sql changed after it was applied"),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");
}

#[tokio::test]
async fn only_an_admin_may_steer_rollouts() {
    let server = TestServer::start(tenantd_e2e::Backend::Memory)
        .await
        .unwrap();
    let tenant = server.create_active(new_tenant("nosy")).await.unwrap();
    let (cert, key) = tenantd_server::devcerts::issue(
        &server.certs.dir,
        &format!("spiffe://tenantd.local/tenant/{}", tenant.tenant_id),
        "nosy",
    )
    .unwrap();
    let channel = server
        .channel(Some(tenantd_e2e::identity(&cert, &key).unwrap()))
        .await
        .unwrap();
    let denied = MigrationServiceClient::new(channel)
        .list_tenant_schemas(ListTenantSchemasRequest::default())
        .await
        .unwrap_err();
    assert_reason(&denied, Code::PermissionDenied, "OPERATION_NOT_PERMITTED");
    // The admin sees the schema the embedded store made, at the built-in set's version.
    let listed = schemas(&mut server.migrations().await.unwrap(), 0).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 2);
}
