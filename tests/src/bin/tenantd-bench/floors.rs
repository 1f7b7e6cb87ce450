//! The floors that are not gRPC: pgbench of the statements tenantd issues (and of a plain
//! select by primary key), and `redis-benchmark` GET. Each runs on the load core, for the
//! same duration as a load phase.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use sqlx::PgPool;

use crate::procs::{LOAD_CORE, Layout, output, require};
use crate::report::Measured;

/// Rows of the select-by-primary-key table.
const KV_ROWS: u32 = 100_000;

/// What one pgbench run runs.
#[derive(Debug)]
pub struct Pgbench<'a> {
    /// Names its files.
    pub name: &'a str,
    /// The transaction script.
    pub script: &'a str,
    /// Connections.
    pub clients: u32,
    /// How long.
    pub seconds: u32,
    /// Variables (`-D name=value`).
    pub defines: &'a [(&'a str, String)],
}

/// A pgbench run of `script` with `clients` connections for `seconds`, prepared statements
/// (as sqlx sends them), one thread; latencies from its per-transaction log.
///
/// # Errors
/// When pgbench is missing or fails.
pub async fn pgbench(
    layout: Layout,
    url: &str,
    dir: &Path,
    run: &Pgbench<'_>,
) -> anyhow::Result<Measured> {
    let Pgbench {
        name,
        script,
        clients,
        seconds,
        defines,
    } = run;
    let pgbench = require("pgbench", "postgresql-client")?;
    let file = dir.join(format!("{name}.sql"));
    std::fs::write(&file, script)?;
    let logs = dir.join(format!("pgbench-{name}"));
    std::fs::create_dir_all(&logs)?;
    let mut command = layout.command(&pgbench, LOAD_CORE);
    command
        .current_dir(&logs)
        .args(["-n", "-M", "prepared", "-j", "1", "-l"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&file);
    for (key, value) in *defines {
        command.arg("-D").arg(format!("{key}={value}"));
    }
    command.arg(url);
    let stdout = output(command, &format!("pgbench {name}")).await?;
    let tps = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        })
        .with_context(|| format!("no tps in pgbench's output:\n{stdout}"))?;
    // Per-transaction log lines: client_id transaction_no latency_us script_no epoch us.
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.saturating_record(us.max(1));
            }
        }
    }
    anyhow::ensure!(
        !latencies.is_empty(),
        "pgbench {name} logged no transaction"
    );
    Ok(Measured::from_histogram(tps, &latencies))
}

/// Makes the select-by-primary-key table in the bench's schema.
///
/// # Errors
/// Database failures.
pub async fn create_kv(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE bench_kv (id integer PRIMARY KEY, v text NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO bench_kv SELECT n, md5(n::text) FROM generate_series(1, $1) AS n")
        .bind(i32::try_from(KV_ROWS)?)
        .execute(pool)
        .await?;
    sqlx::query("ANALYZE bench_kv").execute(pool).await?;
    Ok(())
}

/// The select-by-primary-key script.
pub fn kv_script() -> String {
    format!("\\set id random(1, {KV_ROWS})\nSELECT v FROM bench_kv WHERE id = :id;\n")
}

/// The 3-insert transaction CreateTenant's floor runs: a copy of one seeded tenant's row,
/// of its run and of its event into tables made `LIKE` tenantd's (same columns, defaults,
/// constraints and indexes; no foreign keys), with fresh keys and slug.
///
/// # Errors
/// Database failures.
pub async fn create_insert_tables(pool: &PgPool) -> anyhow::Result<String> {
    let mut script = String::from("BEGIN;\n");
    for (table, key) in [
        ("tenants", "tenant_id"),
        ("provisioning_runs", "tenant_id"),
        ("tenant_events", "tenant_id"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE bench_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
        )))
        .execute(pool)
        .await?;
        let columns: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT c.column_name::text, c.data_type::text, \
                    EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                              ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                            WHERE i.indrelid = (quote_ident(c.table_name))::regclass \
                              AND i.indisunique AND a.attname = c.column_name) \
             FROM information_schema.columns c \
             WHERE c.table_schema = current_schema() AND c.table_name = $1 \
             ORDER BY c.ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        // Unique columns get fresh values: uuids a random one, text an md5, anything else
        // (a sequence) its default.
        let (names, values): (Vec<&str>, Vec<String>) = columns
            .iter()
            .filter_map(|(name, kind, unique)| match (kind.as_str(), *unique) {
                (_, false) => Some((name.as_str(), name.clone())),
                ("uuid", true) => Some((name.as_str(), "gen_random_uuid()".to_owned())),
                ("text" | "character varying", true) => {
                    Some((name.as_str(), "md5(random()::text)".to_owned()))
                }
                _ => None,
            })
            .unzip();
        writeln!(
            script,
            "INSERT INTO bench_{table} ({}) SELECT {} FROM {table} WHERE {key} = :tid LIMIT 1;",
            names.join(", "),
            values.join(", ")
        )?;
    }
    script.push_str("COMMIT;\n");
    Ok(script)
}

/// `redis-benchmark` GET with `clients` connections, on the load core.
///
/// # Errors
/// When it is missing or fails.
pub async fn redis_get(layout: Layout, url: &str, clients: u32) -> anyhow::Result<Measured> {
    let tool = require("redis-benchmark", "redis-tools")?;
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("{url} is not a redis:// URL"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "6379"));
    let mut command = layout.command(&tool, LOAD_CORE);
    command
        .args(["-h", host, "-p", port, "-t", "get", "-n", "300000", "--csv"])
        .arg("-c")
        .arg(clients.to_string());
    let stdout = output(command, "redis-benchmark").await?;
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .context("redis-benchmark printed nothing")?
        .split(',')
        .map(|f| f.trim_matches('"').to_owned())
        .collect();
    let row: Vec<String> = lines
        .next()
        .context("redis-benchmark printed no result")?
        .split(',')
        .map(|f| f.trim_matches('"').to_owned())
        .collect();
    let field = |name: &str| -> anyhow::Result<f64> {
        let at = header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no {name} in redis-benchmark's CSV: {header:?}"))?;
        Ok(row.get(at).context("short CSV row")?.parse()?)
    };
    Ok(Measured {
        rps: field("rps")?,
        p50_ms: field("p50_latency_ms")?,
        p90_ms: None,
        p99_ms: field("p99_latency_ms")?,
        p999_ms: None,
    })
}
