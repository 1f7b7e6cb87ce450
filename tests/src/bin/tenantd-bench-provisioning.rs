//! `tenantd-bench-provisioning`: provisions N tenants (default 1,000) through a real
//! tenantd server on PostgreSQL, started in-process over mTLS, and prints tenants/s from
//! the first CreateTenant to the last ACTIVE, the p50/p99 of each step and of whole runs
//! (from the steps' recorded times), and, for comparison, the same tenant-schema DDL run
//! straight through psql in the same database. `make bench-provisioning` runs it in release
//! mode.
//!
//! Usage: `tenantd-bench-provisioning [--tenants N] [--workers W] [--concurrency C]`

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use sqlx::PgPool;
use tenantd_adapters::tenant_migrations;
use tenantd_application::{ProvisioningSettings, RateLimitSettings};
use tenantd_e2e::{Backend, TestServer, create, new_tenant};
use tenantd_server::config::Config;

/// Provisioning through tenantd should take at most this many times the psql DDL.
const TARGET_RATIO: f64 = 1.3;

struct Options {
    tenants: usize,
    workers: usize,
    concurrency: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        tenants: 1_000,
        workers: 8,
        concurrency: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number: usize = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--tenants" => options.tenants = number,
            "--workers" => options.workers = number,
            "--concurrency" => options.concurrency = number,
            other => bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        options.tenants > 0 && options.workers > 0 && options.concurrency > 0,
        "every count must be positive"
    );
    Ok(options)
}

/// Rows of (name, p50 seconds, p99 seconds, count) that `sql` computes.
async fn percentiles(pool: &PgPool, sql: &str) -> anyhow::Result<Vec<(String, f64, f64, i64)>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?)
}

/// The same DDL as the DATABASE step, one transaction per schema, straight through psql:
/// the floor the step's cost compares to. Prints one line; returns how long it took.
async fn psql_baseline(prefix: &str, count: usize) -> anyhow::Result<Duration> {
    let mut script = String::new();
    for i in 0..count {
        let name = format!("{prefix}psql_{i}");
        writeln!(
            script,
            "BEGIN;\nCREATE SCHEMA \"{name}\";\nSET LOCAL search_path TO \"{name}\";"
        )?;
        for (_, sql) in tenant_migrations::BUILT_IN {
            script.push_str(sql);
            script.push('\n');
        }
        script.push_str("COMMIT;\n");
    }
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), script)?;
    let psql_started = Instant::now();
    let output = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(tenantd_adapters::postgres::testing::test_database_url())
        .arg("-f")
        .arg(file.path())
        .output()
        .await
        .context("psql is missing (apt-get install postgresql-client)")?;
    let psql = psql_started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let each = psql.as_secs_f64() * 1e3 / count as f64;
    println!(
        "psql, same schema DDL: {count} schemas in {:.1} s, {each:.2} ms each (no seeding, no control-plane bookkeeping)",
        psql.as_secs_f64()
    );
    Ok(psql)
}

/// Prints p50/p99 of each step's duration and of whole runs, from the recorded times.
async fn step_percentiles(pool: &PgPool) -> anyhow::Result<()> {
    println!(
        "{:<22} {:>8} {:>10} {:>10}",
        "step", "count", "p50 ms", "p99 ms"
    );
    let steps = percentiles(
        pool,
        "SELECT kind, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)), \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)), \
             count(*) \
         FROM provisioning_steps GROUP BY kind, position ORDER BY position",
    )
    .await?;
    let runs = percentiles(
        pool,
        "SELECT 'run (create -> ACTIVE)', \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)), \
             count(*) \
         FROM provisioning_runs",
    )
    .await?;
    for (name, p50, p99, count) in steps.iter().chain(&runs) {
        println!(
            "{name:<22} {count:>8} {:>10.2} {:>10.2}",
            p50 * 1e3,
            p99 * 1e3
        );
    }

    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let workers = options.workers;
    let server = TestServer::start_with(Backend::Postgres, move |config| Config {
        provisioning: ProvisioningSettings {
            workers,
            ..config.provisioning
        },
        rate_limits: RateLimitSettings {
            admin_per_second: 0,
            service_per_second: 0,
        },
        ..config
    })
    .await?;
    let schema = server.schema().context("a PostgreSQL server")?;
    let prefix = schema.tenant_schema_prefix();
    let pool = PgPool::connect(&schema.url()).await?;
    println!(
        "tenantd-bench-provisioning: {} tenants on PostgreSQL, {} workers, {} concurrent creates, over mTLS",
        options.tenants, options.workers, options.concurrency
    );

    let started = Instant::now();
    let client = server.tenants().await?;
    let answers = futures::stream::iter(0..options.tenants)
        .map(|i| {
            let mut client = client.clone();
            async move { create(&mut client, new_tenant(&format!("prov-{i}"))).await }
        })
        .buffer_unordered(options.concurrency)
        .collect::<Vec<_>>()
        .await;
    let created = answers.into_iter().collect::<Result<Vec<_>, _>>()?.len();
    let accepted = started.elapsed();
    let expected = i64::try_from(created)?;
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'SUCCEEDED'), \
                    count(*) FILTER (WHERE state IN ('FAILED', 'CANCELLED')) \
             FROM provisioning_runs",
        )
        .fetch_one(&pool)
        .await?;
        anyhow::ensure!(failed == 0, "{failed} runs failed");
        if done == expected {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(30),
            "only {done} of {expected} runs finished in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let rate = created as f64 / elapsed.as_secs_f64();
    println!(
        "{created} tenants ACTIVE in {:.1} s ({:.1} s to accept every CreateTenant): {rate:.1} tenants/s",
        elapsed.as_secs_f64(),
        accepted.as_secs_f64()
    );

    step_percentiles(&pool).await?;
    let psql = psql_baseline(&prefix, created).await?;
    let ratio = elapsed.as_secs_f64() / psql.as_secs_f64();
    println!(
        "ratio to psql: {ratio:.2}x (target <= {TARGET_RATIO}x){}",
        if ratio <= TARGET_RATIO {
            ""
        } else {
            "  MISSED"
        }
    );
    drop(client);
    pool.close().await;
    server.stop().await?;
    Ok(())
}
