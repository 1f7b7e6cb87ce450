//! The real `tenantd` binary on PostgreSQL: durability across SIGKILL, and several replicas
//! starting together on an empty database.

use tenantd_adapters::postgres::MIGRATOR;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::pb::StepState::{Pending, Running, Succeeded};
use tenantd_e2e::pb::event_service_client::EventServiceClient;
use tenantd_e2e::pb::tenant_event::Payload;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{GetTenantRequest, ListTenantEventsRequest};
use tenantd_e2e::process::{TenantdProcess, binary, holder_and_other, two_replicas};
use tenantd_e2e::spawn::cleared;
use tenantd_e2e::{TestKeys, admin_channel, create, new_tenant};
use tenantd_server::devcerts::{self, DevCerts};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn certs() -> (tempfile::TempDir, DevCerts) {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    (dir, certs)
}

#[tokio::test]
async fn a_tenant_acknowledged_before_sigkill_is_there_after_restart_with_its_events() {
    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();

    let first = TenantdProcess::start(&schema, dir.path(), &keys)
        .await
        .unwrap();
    let channel = admin_channel(first.grpc_addr, &certs).await.unwrap();
    let created = create(
        &mut TenantServiceClient::new(channel),
        new_tenant("durable"),
    )
    .await
    .unwrap();
    first.kill().await.unwrap();

    let second = TenantdProcess::start(&schema, dir.path(), &keys)
        .await
        .unwrap();
    let channel = admin_channel(second.grpc_addr, &certs).await.unwrap();
    let read = TenantServiceClient::new(channel.clone())
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    // Its run may have moved on since (the second process resumes it).
    assert_eq!(
        (&read.tenant_id, &read.slug, &read.create_time),
        (&created.tenant_id, &created.slug, &created.create_time)
    );
    let events = EventServiceClient::new(channel)
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: created.tenant_id.clone(),
            ..ListTenantEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        matches!(events.first().and_then(|e| e.payload.as_ref()), Some(Payload::TenantCreated(c)) if c.slug == "durable"),
        "{events:?}"
    );
}

#[tokio::test]
async fn three_replicas_started_together_on_an_empty_database_all_become_healthy() {
    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();
    let (a, b, c) = tokio::join!(
        TenantdProcess::start(&schema, dir.path(), &keys),
        TenantdProcess::start(&schema, dir.path(), &keys),
        TenantdProcess::start(&schema, dir.path(), &keys),
    );
    for replica in [a.unwrap(), b.unwrap(), c.unwrap()] {
        let mut health = HealthClient::new(admin_channel(replica.grpc_addr, &certs).await.unwrap());
        for service in ["", "database"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{service:?}");
        }
    }
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let (applied, succeeded): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE success) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
    let expected = i64::try_from(MIGRATOR.iter().count()).unwrap();
    assert_eq!((applied, succeeded), (expected, expected));
}

#[tokio::test]
async fn migrate_subcommand_applies_the_migrations_and_exits() {
    let schema = ScratchSchema::create().await.unwrap();
    let output = cleared(binary().unwrap())
        .arg("migrate")
        .envs(TestKeys::generate().env())
        .env("TENANTD_DATABASE_URL", schema.url())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_name IN ('tenants', 'plans', 'idempotency_records', 'tenant_events')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 4);
}

#[tokio::test]
async fn a_bad_or_unreachable_database_stops_startup_with_one_line_and_no_password() {
    let (dir, _certs) = certs();
    for url in [
        "postgres://app:hunter2@127.0.0.1:1/tenantd",
        "postgres://app:hunter2@[::1/tenantd",
    ] {
        let output = cleared(binary().unwrap())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--dev-certs-dir")
            .arg(dir.path())
            .envs(TestKeys::generate().env())
            .env("TENANTD_DATABASE_URL", url)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{url} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("tenantd: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("database-url"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

/// The DNS step's (state, attempts) and the holder of the run's lease.
async fn dns_step(pool: &sqlx::PgPool) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT s.state, s.attempts, r.lease_owner FROM provisioning_steps s \
         JOIN provisioning_runs r USING (run_id) WHERE s.kind = 'DNS'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_for_dns(
    pool: &sqlx::PgPool,
    ready: impl Fn(&str, i32) -> bool,
) -> (String, i32, Option<String>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(step) = dns_step(pool).await
            && ready(&step.0, step.1)
        {
            return step;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            dns_step(pool).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_run_whose_replica_is_killed_mid_step_is_finished_by_the_other_once_the_lease_expires() {
    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();
    let replicas = two_replicas(&schema, dir.path(), &keys).await.unwrap();
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();

    // A slow DNS step: the test holds the lock its insert needs.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE dns_records IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let channel = admin_channel(replicas.0.grpc_addr, &certs).await.unwrap();
    let created = create(
        &mut TenantServiceClient::new(channel),
        new_tenant("phoenix"),
    )
    .await
    .unwrap();
    let (_, attempts, owner) = wait_for_dns(&pool, |state, _| state == "RUNNING").await;
    assert_eq!(attempts, 1);
    // Kill whichever replica holds the run.
    let (victim, survivor) = holder_and_other(replicas, &owner.unwrap());
    victim.kill().await.unwrap();
    let killed_at = chrono::Utc::now();

    // The survivor takes the run over once the lease expires: the lost attempt counts,
    // and its own attempt waits on the same lock.
    let (_, attempts, owner) = wait_for_dns(&pool, |state, n| state == "RUNNING" && n == 2).await;
    assert_eq!(attempts, 2);
    assert!(
        owner
            .unwrap()
            .contains(&format!("/{}/", survivor.pid().unwrap())),
        "the survivor holds the run"
    );
    blocker.rollback().await.unwrap();

    let channel = admin_channel(survivor.grpc_addr, &certs).await.unwrap();
    let run = tenantd_e2e::settle(
        &mut tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient::new(
            channel.clone(),
        ),
        &created.tenant_id,
    )
    .await
    .unwrap();
    assert_eq!(run.state(), tenantd_e2e::pb::RunState::Succeeded);
    let dns = &run.steps[1];
    assert_eq!(dns.attempts, 2);

    // The second attempt started only after the first replica was gone and its lease had
    // expired; never two attempts at once.
    let events = EventServiceClient::new(channel)
        .list_tenant_events(ListTenantEventsRequest {
            tenant_id: created.tenant_id.clone(),
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let dns_changes: Vec<_> = events
        .iter()
        .filter_map(|e| match e.payload.as_ref()? {
            Payload::ProvisioningStepChanged(c) if c.step() == tenantd_e2e::pb::StepKind::Dns => {
                Some((
                    c.state(),
                    c.attempt,
                    c.error.clone().map(|e| e.reason),
                    e.occur_time,
                ))
            }
            _ => None,
        })
        .collect();
    let shape: Vec<_> = dns_changes
        .iter()
        .map(|(s, n, reason, _)| (*s, *n, reason.clone()))
        .collect();
    assert_eq!(
        shape,
        [
            (Running, 1, None),
            (Pending, 1, Some("WORKER_LOST".to_owned())),
            (Running, 2, None),
            (Succeeded, 2, None),
        ]
    );
    let second_start = dns_changes[2].3.unwrap();
    assert!(
        second_start.seconds * 1000 + i64::from(second_start.nanos / 1_000_000)
            >= killed_at.timestamp_millis() + 1000,
        "the takeover waited for the lease"
    );

    assert_made_once(&pool, &schema).await;
}

/// Nothing of the tenant's was made twice: two DNS records, one key, one subscription,
/// one schema.
async fn assert_made_once(pool: &sqlx::PgPool, schema: &ScratchSchema) {
    let (names,): (i64,) = sqlx::query_as("SELECT count(*) FROM dns_records")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(names, 2);
    let (keys_made,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(keys_made, 1);
    let (subscriptions,): (i64,) = sqlx::query_as("SELECT count(*) FROM billing_subscriptions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(subscriptions, 1);
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(schema.tenant_schema_prefix())
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(schemas, 1);
}

/// Settings of the rollout replicas: a short lease, quick polls, the migrations of `dir`.
fn rollout_env(dir: &str) -> [(&str, &str); 5] {
    [
        ("TENANTD_TENANT_MIGRATIONS_DIR", dir),
        ("TENANTD_ROLLOUT_LEASE_MS", "1000"),
        ("TENANTD_ROLLOUT_POLL_INTERVAL_MS", "100"),
        ("TENANTD_PROVISIONING_POLL_INTERVAL_MS", "100"),
        ("TENANTD_DATABASE_STATEMENT_TIMEOUT_MS", "30000"),
    ]
}

#[tokio::test]
async fn a_replica_killed_mid_rollout_is_taken_over_and_every_tenant_is_migrated_once() {
    use sqlx::Connection as _;
    use tenantd_e2e::pb::migration_service_client::MigrationServiceClient;
    use tenantd_e2e::pb::{GetRolloutRequest, RolloutState, StartRolloutRequest};

    let schema = ScratchSchema::create().await.unwrap();
    let (dir, certs) = certs();
    let keys = TestKeys::generate();
    let migrations = tempfile::tempdir().unwrap();
    let path = migrations.path().display().to_string();
    std::fs::write(
        migrations.path().join("0001_orders.sql"),
        "CREATE TABLE orders (id bigint PRIMARY KEY);",
    )
    .unwrap();
    let env = rollout_env(&path);
    let first = TenantdProcess::start_with(&schema, dir.path(), &keys, &env)
        .await
        .unwrap();
    let tenants = active_tenants(&first, &certs, 6).await;
    first.kill().await.unwrap();

    // Each tenant's migration leaves a mark: two marks would be a migration applied twice.
    // It first waits at a gate of its own schema; the test holds the last tenant's gate, so
    // that tenant's migration cannot finish before its replica is killed, however loaded
    // the machine.
    std::fs::write(
        migrations.path().join("0002_marks.sql"),
        "SELECT pg_advisory_xact_lock_shared(hashtext('tenantd-e2e.gate'), hashtext(current_schema()));\n\
         CREATE TABLE marks (at timestamptz NOT NULL DEFAULT now());\n\
         INSERT INTO marks DEFAULT VALUES;",
    )
    .unwrap();
    let victim_tenant: uuid::Uuid = tenants.last().unwrap().parse().unwrap();
    let victim_schema = format!(
        "{}{}",
        schema.tenant_schema_prefix(),
        victim_tenant.simple()
    );
    let mut gate = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('tenantd-e2e.gate'), hashtext($1))")
        .bind(&victim_schema)
        .execute(&mut gate)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        TenantdProcess::start_with(&schema, dir.path(), &keys, &env),
        TenantdProcess::start_with(&schema, dir.path(), &keys, &env),
    );
    let mut replicas = vec![a.unwrap(), b.unwrap()];
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let channel = admin_channel(replicas[0].grpc_addr, &certs).await.unwrap();
    let rollout = MigrationServiceClient::new(channel)
        .start_rollout(StartRolloutRequest {
            max_parallel: 2,
            max_parallel_per_replica: 1,
            ..StartRolloutRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();

    // Once another tenant is done and the gated one is being migrated, kill its replica and
    // open the gate.
    kill_the_replica_migrating(&pool, victim_tenant, &mut replicas).await;
    gate.close().await.unwrap();
    let survivor = replicas.pop().unwrap();
    let mut client =
        MigrationServiceClient::new(admin_channel(survivor.grpc_addr, &certs).await.unwrap());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    let ended = loop {
        let read = client
            .get_rollout(GetRolloutRequest {
                rollout_id: rollout.rollout_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .rollout
            .unwrap();
        if read.state() != RolloutState::Running {
            break read;
        }
        assert!(tokio::time::Instant::now() < deadline, "no end: {read:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ended.state(), RolloutState::Succeeded, "{ended:?}");
    assert_eq!(ended.tenants.unwrap().succeeded, 6);

    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM tenant_schema_rollout_tenants WHERE tenant_id = $1",
    )
    .bind(victim_tenant)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 2, "the killed replica's tenant was taken over");
    assert_migrated_once(&pool, &schema.tenant_schema_prefix(), &tenants).await;
}

/// Waits until a tenant of the rollout is done and `tenant` is being migrated, then kills
/// (and removes) the replica migrating it.
async fn kill_the_replica_migrating(
    pool: &sqlx::PgPool,
    tenant: uuid::Uuid,
    replicas: &mut Vec<TenantdProcess>,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    let owner = loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenant_schema_rollout_tenants WHERE state = 'SUCCEEDED'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let owner: Option<Option<String>> = sqlx::query_scalar(
            "SELECT lease_owner FROM tenant_schema_rollout_tenants \
             WHERE tenant_id = $1 AND state = 'RUNNING'",
        )
        .bind(tenant)
        .fetch_optional(pool)
        .await
        .unwrap();
        if done >= 1
            && let Some(Some(owner)) = owner
        {
            break owner;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tenant} was never migrated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let pid: u32 = owner.split('/').nth(1).unwrap().parse().unwrap();
    let index = replicas
        .iter()
        .position(|r| r.pid() == Some(pid))
        .unwrap_or_else(|| panic!("{owner} is not one of the replicas"));
    replicas.remove(index).kill().await.unwrap();
}

/// Creates `n` tenants through `replica` and waits until each is provisioned.
async fn active_tenants(replica: &TenantdProcess, certs: &DevCerts, n: usize) -> Vec<String> {
    let channel = admin_channel(replica.grpc_addr, certs).await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..n {
        let created = create(
            &mut TenantServiceClient::new(channel.clone()),
            new_tenant(&format!("phoenix-{i}")),
        )
        .await
        .unwrap();
        tenantd_e2e::settle(
            &mut tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient::new(
                channel.clone(),
            ),
            &created.tenant_id,
        )
        .await
        .unwrap();
        tenants.push(created.tenant_id);
    }
    tenants
}

/// Every tenant schema records version 2 once and holds one mark.
async fn assert_migrated_once(pool: &sqlx::PgPool, prefix: &str, tenants: &[String]) {
    for tenant in tenants {
        let id: uuid::Uuid = tenant.parse().unwrap();
        let name = format!("{prefix}{}", id.simple());
        let (versions, marks): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM \"{name}\".schema_migrations WHERE version = 2), \
                    (SELECT count(*) FROM \"{name}\".marks)"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!((versions, marks), (1, 1), "tenant {tenant}");
    }
}
