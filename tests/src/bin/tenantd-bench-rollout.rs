//! `tenantd-bench-rollout`: a rollout of one migration to N tenant schemas (default 1,000)
//! through a real tenantd server on PostgreSQL, started in-process over mTLS, against the
//! same DDL applied serially through psql in the same run. The migration adds a column with
//! a default, an index, and backfills the seeded rows. Prints tenants/s, the p50/p99 of a
//! tenant (from the rollout's recorded times), the ratio to psql, and how long a rollout
//! with every tenant at the target takes; fails when the rollout is slower than 1.2x the
//! serial psql time or the no-op rollout takes 2 s or more. `make bench-rollout` runs it in
//! release mode.
//!
//! Usage: `tenantd-bench-rollout [--tenants N] [--max-parallel P] [--workers W]`

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use sqlx::PgPool;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_application::{ProvisioningSettings, RateLimitSettings};
use tenantd_e2e::pb::{GetRolloutRequest, RolloutState, StartRolloutRequest};
use tenantd_e2e::{TestKeys, TestServer, create, new_tenant, with_schema_args};
use tenantd_server::config::Config;

/// The floor of the comparison: the rollout within this factor of serial psql.
const MAX_RATIO: f64 = 1.2;
/// The floor of a rollout with nothing to do.
const MAX_NO_OP: Duration = Duration::from_secs(2);

const ORDERS: &str = "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer NOT NULL, \
     placed_at timestamptz NOT NULL DEFAULT now());";
const SEED: &str =
    "INSERT INTO orders (id, amount) SELECT n, n * 10 FROM generate_series(1, 20) AS n;";
/// The migration rolled out: a column with a default, an index, a backfill.
const STATUS: &str = "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'open';\n\
     CREATE INDEX orders_status ON orders (status);\n\
     UPDATE orders SET status = 'settled' WHERE amount >= 100;";

struct Options {
    tenants: usize,
    max_parallel: i32,
    workers: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        tenants: 1_000,
        max_parallel: 4,
        workers: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number: usize = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--tenants" => options.tenants = number,
            "--max-parallel" => options.max_parallel = i32::try_from(number)?,
            "--workers" => options.workers = number,
            other => bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        options.tenants > 0 && options.max_parallel > 0 && options.workers > 0,
        "every count must be positive"
    );
    Ok(options)
}

/// A server on `schema` with the migrations of `dir`: provisioning and rate limits out of
/// the way, rollout workers as many as the rollout may use.
async fn server(
    schema: ScratchSchema,
    keys: &TestKeys,
    dir: &std::path::Path,
    options: &Options,
) -> anyhow::Result<TestServer> {
    let dir = dir.display().to_string();
    let per_replica = options.max_parallel.to_string();
    let workers = options.workers;
    TestServer::start_on_schema_with(schema, keys, move |config| {
        let config = with_schema_args(
            config,
            &[
                "--tenant-migrations-dir",
                &dir,
                "--rollout-workers",
                &per_replica,
                "--rollout-poll-interval-ms",
                "20",
            ],
        )
        .expect("valid settings");
        Config {
            provisioning: ProvisioningSettings {
                workers,
                ..config.provisioning
            },
            rate_limits: RateLimitSettings {
                admin_per_second: 0,
                service_per_second: 0,
            },
            ..config
        }
    })
    .await
}

/// Provisions `n` tenants and waits until every one is ACTIVE.
async fn provision(server: &TestServer, pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let client = server.tenants().await?;
    let answers = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = client.clone();
            async move { create(&mut client, new_tenant(&format!("roll-{i}"))).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    answers.into_iter().collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM provisioning_runs WHERE state = 'SUCCEEDED'")
                .fetch_one(pool)
                .await?;
        if usize::try_from(done)? == n {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(30),
            "only {done} of {n} tenants provisioned in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a rollout to the newest version and waits for its end: its id and how long.
async fn roll_out(server: &TestServer, max_parallel: i32) -> anyhow::Result<(String, Duration)> {
    let mut client = server.migrations().await?;
    let started = Instant::now();
    let rollout = client
        .start_rollout(StartRolloutRequest {
            max_parallel,
            max_parallel_per_replica: max_parallel,
            ..StartRolloutRequest::default()
        })
        .await?
        .into_inner()
        .rollout
        .context("no rollout")?;
    loop {
        let read = client
            .get_rollout(GetRolloutRequest {
                rollout_id: rollout.rollout_id.clone(),
            })
            .await?
            .into_inner()
            .rollout
            .context("no rollout")?;
        match read.state() {
            RolloutState::Succeeded => return Ok((rollout.rollout_id, started.elapsed())),
            RolloutState::Running => {}
            other => bail!("the rollout ended {other:?}: {read:?}"),
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(30),
            "the rollout did not end in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same migration through psql, one transaction per schema, serially, on copies of
/// the schemas at version 2 made beforehand: how long the migration part took.
async fn psql_serial(pool: &PgPool, prefix: &str, n: usize) -> anyhow::Result<Duration> {
    let mut setup = String::new();
    let mut script = String::new();
    for i in 0..n {
        let name = format!("{prefix}psql_{i}");
        writeln!(
            setup,
            "CREATE SCHEMA \"{name}\"; SET search_path TO \"{name}\"; {ORDERS} {SEED} \
             CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now(), checksum bytea);"
        )?;
        writeln!(
            script,
            "BEGIN;\nSET LOCAL search_path TO \"{name}\";\n{STATUS}\n\
             INSERT INTO schema_migrations (version, name) VALUES (3, 'status');\nCOMMIT;"
        )?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(pool)
        .await?;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), script)?;
    let url = tenantd_adapters::postgres::testing::test_database_url();
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(file.path())
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .status()
        .context("psql (apt-get install postgresql-client)")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.success(), "psql failed");
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let schema = ScratchSchema::create().await.map_err(anyhow::Error::msg)?;
    let prefix = schema.tenant_schema_prefix();
    let pool = PgPool::connect(&schema.url()).await?;
    let keys = TestKeys::generate();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("0001_orders.sql"), ORDERS)?;
    std::fs::write(dir.path().join("0002_seed.sql"), SEED)?;
    println!(
        "tenantd-bench-rollout: {} tenant schemas on PostgreSQL, max_parallel {}, over mTLS",
        options.tenants, options.max_parallel
    );
    let first = server(schema, &keys, dir.path(), &options).await?;
    let setup = Instant::now();
    provision(&first, &pool, options.tenants).await?;
    println!(
        "setup: {} tenants provisioned at version 2 in {:.1} s",
        options.tenants,
        setup.elapsed().as_secs_f64()
    );
    let schema = first.stop().await?.context("a PostgreSQL server")?;
    std::fs::write(dir.path().join("0003_status.sql"), STATUS)?;
    let second = server(schema, &keys, dir.path(), &options).await?;

    let (rollout_id, took) = roll_out(&second, options.max_parallel).await?;
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) \
         FROM tenant_schema_rollout_tenants WHERE rollout_id = $1::uuid",
    )
    .bind(&rollout_id)
    .fetch_one(&pool)
    .await?;
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_schemas WHERE version = 3")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        usize::try_from(migrated)? == options.tenants,
        "{migrated} of {} schemas at version 3",
        options.tenants
    );
    let (_, no_op) = roll_out(&second, options.max_parallel).await?;
    let psql = psql_serial(&pool, &prefix, options.tenants).await?;

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let rate = options.tenants as f64 / took.as_secs_f64();
    let ratio = took.as_secs_f64() / psql.as_secs_f64();
    println!(
        "{:<28} {:>10} {:>12} {:>10} {:>10}",
        "", "seconds", "tenants/s", "p50 ms", "p99 ms"
    );
    println!(
        "{:<28} {:>10.2} {:>12.1} {:>10.2} {:>10.2}",
        "rollout (tenantd)",
        took.as_secs_f64(),
        rate,
        p50 * 1e3,
        p99 * 1e3
    );
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let psql_rate = options.tenants as f64 / psql.as_secs_f64();
    println!(
        "{:<28} {:>10.2} {:>12.1} {:>10} {:>10}",
        "same DDL, serial psql",
        psql.as_secs_f64(),
        psql_rate,
        "-",
        "-"
    );
    println!("ratio rollout / psql: {ratio:.2} (floor {MAX_RATIO})");
    println!(
        "no-op rollout (every tenant at the target): {:.0} ms (floor {} ms)",
        no_op.as_secs_f64() * 1e3,
        MAX_NO_OP.as_millis()
    );
    pool.close().await;
    second.stop().await?;
    anyhow::ensure!(
        ratio <= MAX_RATIO,
        "the rollout took {ratio:.2}x the serial psql time (floor {MAX_RATIO}x)"
    );
    anyhow::ensure!(
        no_op < MAX_NO_OP,
        "a no-op rollout took {no_op:?} (floor {MAX_NO_OP:?})"
    );
    Ok(())
}
