//! `tenantd-bench`: the hot RPCs of a real tenantd process measured against their floors,
//! in one run. `make bench` runs it in release mode.
//!
//! The server and the load are separate processes: tenantd (the release binary beside
//! this one, from a cleared environment, in its production shape: audit on with its default
//! policy, rate limits on with limits far above the offered load, logs at info into a file)
//! and `tenantd-bench load`, a closed-loop generator with N HTTP/2 connections x M calls in
//! flight, a warm-up, then a timed phase. With `--pin` (`BENCH_PIN=1`) servers run on core 0
//! and every client (the load, pgbench, redis-benchmark) on core 1.
//!
//! The floors, measured in the same run on the same layout: a bare tonic unary call over
//! mTLS with tenantd's TLS setup (`tenantd-bench echo`), pgbench of a select by primary key
//! (with as many clients as tenantd's pool), of tenantd's own GetTenant statement and of a
//! 3-insert transaction like CreateTenant's, and `redis-benchmark` GET. The configurations:
//! in memory; PostgreSQL without a cache; PostgreSQL with the Redis cache (reads are cache
//! hits after the warm-up). It prints one table (each scenario's ratio to its floor and the
//! target for it) and tenantd's RSS idle and under load, and writes the JSON beside it
//! (`--out`, default `target/bench`). A failed call fails the run; a missed target fails it
//! only with `--enforce` (`BENCH_ENFORCE=1`).
//!
//! Subcommands: `load` (the generator), `echo` (the gRPC floor's server).

mod echo;
mod floors;
mod load;
mod procs;
mod report;
mod soak;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use futures::{StreamExt as _, TryStreamExt as _};
use sqlx::PgPool;
use tenantd_adapters::postgres::testing::{ScratchSchema, get_tenant_statement};
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, ListTenantsRequest, TenantStatus, WatchProvisioningRequest,
};
use tenantd_e2e::{TestKeys, admin_channel, create, new_tenant};
use tenantd_server::devcerts::{self, DevCerts};

use crate::load::Scenario;
use crate::procs::{LOAD_CORE, Layout, SERVER_CORE, Server, sibling};
use crate::report::{Measured, Report, Row, Target};

#[derive(Debug, clap::Parser)]
#[command(
    name = "tenantd-bench",
    about = "tenantd's hot RPCs against their floors"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// The load generator (prints one JSON object).
    Load(load::LoadArgs),
    /// The bare tonic mTLS server of the gRPC floor.
    Echo(echo::EchoArgs),
    /// A long steady load on PostgreSQL and Redis, with bounds on resident memory.
    Soak(soak::SoakArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// HTTP/2 connections of the load.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Seconds of warm-up before each phase.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Seconds each phase measures (at least 2).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=3600))]
    duration: u32,
    /// Tenants created before the phases (GetTenant reads them round robin).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// API keys created (one per tenant, VerifyApiKey verifies them round robin).
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Pin servers to core 0 and clients to core 1.
    #[arg(long, env = "BENCH_PIN", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pin: bool,
    /// Fail when a scenario misses its target ratio.
    #[arg(long, env = "BENCH_ENFORCE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    enforce: bool,
    /// The Redis of the cached configuration.
    #[arg(long, env = "BENCH_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The configurations to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "memory,postgres,redis")]
    only: Vec<String>,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// tenantd's pool size (its default), which the select-by-key floor uses as its clients.
const POOL: u32 = 10;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The load generator and the echo server are pinned to one core: one worker thread.
        Some(Sub::Load(args)) => runtime(1)?.block_on(load::run(args)),
        Some(Sub::Echo(args)) => runtime(1)?.block_on(echo::run(args)),
        Some(Sub::Soak(args)) => runtime(2)?.block_on(soak::run(args)),
        None => runtime(2)?.block_on(run(cli.run)),
    }
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

/// Everything a phase needs to start the load generator.
struct Bench {
    args: RunArgs,
    layout: Layout,
    me: PathBuf,
    certs: DevCerts,
    dir: PathBuf,
}

impl Bench {
    /// One load phase against `server`: the generator's result, the server's CPU use during
    /// the measured window, and its peak RSS seen meanwhile.
    async fn phase(
        &self,
        server: &Server,
        scenario: Scenario,
        inputs: Option<&Path>,
    ) -> anyhow::Result<(Measured, Cpu, f64)> {
        let mut command = self.layout.command(&self.me, LOAD_CORE);
        command
            .arg("load")
            .arg("--target")
            .arg(server.addr.to_string())
            .arg("--certs-dir")
            .arg(&self.certs.dir)
            .arg("--scenario")
            .arg(format!("{scenario:?}").to_lowercase())
            .arg("--connections")
            .arg(self.args.connections.to_string())
            .arg("--in-flight")
            .arg(self.args.in_flight.to_string())
            .arg("--warmup")
            .arg(self.args.warmup.to_string())
            .arg("--duration")
            .arg(self.args.duration.to_string());
        if let Some(inputs) = inputs {
            command.arg("--inputs").arg(inputs);
        }
        let load = tokio::spawn(procs::output(command, "the load generator"));
        // Sample the server while the load runs: CPU over the measured window (give the
        // generator 300 ms to connect), the highest RSS.
        let mut peak = server.rss_mib()?;
        let window = Duration::from_secs(self.args.duration.into())
            .saturating_sub(Duration::from_millis(400));
        tokio::time::sleep(
            Duration::from_secs(self.args.warmup.into()) + Duration::from_millis(500),
        )
        .await;
        let (cpu_from, stores_from, from) =
            (server.cpu()?, procs::cpu_of_named(STORES), Instant::now());
        while from.elapsed() < window {
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak = peak.max(server.rss_mib()?);
        }
        let seconds = from.elapsed().as_secs_f64();
        let cpu = Cpu {
            server: server.cpu()?.saturating_sub(cpu_from).as_secs_f64() / seconds * 100.0,
            stores: procs::cpu_of_named(STORES)
                .saturating_sub(stores_from)
                .as_secs_f64()
                / seconds
                * 100.0,
        };
        let stdout = load.await??;
        let result: serde_json::Value =
            serde_json::from_str(stdout.trim()).context("the load generator's output")?;
        if let Some(errors) = result["errors"].as_object()
            && !errors.is_empty()
        {
            bail!(
                "{scenario:?}: calls failed: {errors:?} (server log: {})",
                server.log.display()
            );
        }
        Ok((Measured::from_load(&result)?, cpu, peak))
    }

    /// tenantd, as the bench runs it, with `env` (its settings) added.
    async fn tenantd(&self, name: &str, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let mut command = self.layout.command(sibling("tenantd")?, SERVER_CORE);
        command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "--log", "info"])
            // Far above the offered load: the limiter runs, never refuses.
            .args(["--rate-limit-admin-rps", "100000000"])
            .args(["--rate-limit-service-rps", "100000000"])
            .arg("--dev-certs-dir")
            .arg(&self.certs.dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Server::start(
            command,
            self.dir.join(format!("tenantd-{name}.log")),
            |line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                (event["message"] == "tenantd listening")
                    .then(|| event["grpc"].as_str()?.parse().ok())
                    .flatten()
            },
        )
        .await
    }

    /// Creates the tenants and keys the read phases use; writes the ids and secrets into
    /// files for the generator.
    async fn seed(&self, server: &Server, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let started = Instant::now();
        let channel = admin_channel(server.addr, &self.certs).await?;
        let tenants = TenantServiceClient::new(channel.clone());
        let ids = create_tenants(&tenants, "s", self.args.tenants).await?;
        settle(tenants.clone()).await?;
        let mut keys = ApiKeyServiceClient::new(channel);
        let mut secrets = Vec::new();
        for id in ids.iter().take(self.args.keys) {
            secrets.push(
                keys.create_api_key(CreateApiKeyRequest {
                    tenant_id: id.clone(),
                    display_name: "bench".into(),
                    scopes: vec!["tenants.read".into()],
                    expire_time: None,
                })
                .await?
                .into_inner()
                .secret,
            );
        }
        let (ids_file, keys_file) = (
            self.dir.join(format!("{name}-ids")),
            self.dir.join(format!("{name}-keys")),
        );
        std::fs::write(&ids_file, ids.join("\n"))?;
        std::fs::write(&keys_file, secrets.join("\n"))?;
        println!(
            "{name}: {} tenants (ACTIVE) and {} API keys made in {:.1} s",
            ids.len(),
            secrets.len(),
            started.elapsed().as_secs_f64()
        );
        Ok((ids_file, keys_file))
    }

    /// Runs the read and write phases of one configuration; rows named `prefix: ...`.
    async fn phases(
        &self,
        report: &mut Report,
        server: &Server,
        prefix: &str,
        inputs: &(PathBuf, PathBuf),
        phases: &[(Scenario, &str, Option<Target>)],
    ) -> anyhow::Result<()> {
        // Idle: seeded, provisioning settled, nothing in flight.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = server.rss_mib()?;
        let mut peak = idle;
        for (scenario, rpc, target) in phases {
            let file = match scenario {
                Scenario::Get => Some(inputs.0.as_path()),
                Scenario::Verify => Some(inputs.1.as_path()),
                Scenario::Echo | Scenario::Create => None,
            };
            let (measured, cpu, rss) = self.phase(server, *scenario, file).await?;
            peak = peak.max(rss);
            println!(
                "{prefix}: {rpc}: {:.0} calls/s (tenantd {:.0}% of a core, PostgreSQL and Redis {:.0}%)",
                measured.rps, cpu.server, cpu.stores
            );
            report.rows.push(Row {
                name: format!("{prefix}: {rpc}"),
                measured,
                server_cpu: Some(cpu.server),
                store_cpu: Some(cpu.stores),
                target: target.clone(),
                floor: false,
            });
        }
        report.rss.push((prefix.to_owned(), idle, peak));
        // What the create phase started is finished before the server stops.
        settle(TenantServiceClient::new(
            admin_channel(server.addr, &self.certs).await?,
        ))
        .await
    }
}

/// Creates `count` tenants, 32 at a time, with slugs of `prefix` and a fresh tag; their
/// ids in order.
async fn create_tenants(
    tenants: &TenantServiceClient<tonic::transport::Channel>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let ids = futures::stream::iter(0..count)
        .map(|i| {
            let mut client = tenants.clone();
            let slug = format!("{prefix}{}-{i}", &tag[..8]);
            async move {
                create(&mut client, new_tenant(&slug))
                    .await
                    .map(|t| t.tenant_id)
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    Ok(ids)
}

/// Waits until no tenant is PROVISIONING.
async fn settle(mut tenants: TenantServiceClient<tonic::transport::Channel>) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let provisioning = tenants
            .list_tenants(ListTenantsRequest {
                page_size: 1,
                status: TenantStatus::Provisioning.into(),
                ..ListTenantsRequest::default()
            })
            .await?
            .into_inner()
            .tenants;
        if provisioning.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(10),
            "provisioning did not settle within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ECHO: &str = "echo: bare tonic mTLS unary (gRPC floor)";
const ECHO_END: &str = "echo again, at the end of the run";
const PG_KEY: &str = "pgbench: select by primary key";
const PG_GET: &str = "pgbench: tenantd's GetTenant statement";
const PG_INSERT: &str = "pgbench: 3-insert transaction";
const REDIS_GET: &str = "redis-benchmark: GET";

#[expect(
    clippy::unnecessary_wraps,
    reason = "reads as the phase tables' Option column"
)]
fn target(floor: &'static str, min_ratio: f64) -> Option<Target> {
    let label = match floor {
        ECHO => "echo (mean of 2 runs)",
        PG_KEY => "pgbench by key",
        PG_GET => "pgbench GetTenant",
        PG_INSERT => "pgbench 3 inserts",
        _ => "redis GET",
    };
    Some(Target {
        floor,
        label,
        min_ratio,
    })
}

/// The gRPC floor: the load against the bare echo server.
/// Measured at the start and again at the end of the run (`name`), because this machine's
/// speed drifts over minutes; a scenario is compared with the mean of the two.
async fn echo_floor(bench: &Bench, report: &mut Report, name: &str) -> anyhow::Result<()> {
    let echo = {
        let mut command = bench.layout.command(&bench.me, SERVER_CORE);
        command.arg("echo").arg("--certs-dir").arg(&bench.certs.dir);
        Server::start(command, bench.dir.join("echo.log"), |line| {
            line.strip_prefix("listening ")?.parse::<SocketAddr>().ok()
        })
        .await?
    };
    let (measured, cpu, _) = bench.phase(&echo, Scenario::Echo, None).await?;
    println!("{name}: {:.0} calls/s", measured.rps);
    report.rows.push(Row {
        name: name.into(),
        measured,
        server_cpu: Some(cpu.server),
        store_cpu: None,
        target: None,
        floor: true,
    });
    echo.stop().await?;

    Ok(())
}

/// The PostgreSQL floors, in `schema` (seeded; `ids` names its tenants): pgbench of a
/// select by key, of tenantd's GetTenant statement and of a 3-insert transaction.
async fn pg_floors(
    bench: &Bench,
    report: &mut Report,
    schema: &ScratchSchema,
    ids: &Path,
) -> anyhow::Result<()> {
    let seconds = bench.args.duration;
    let pool = PgPool::connect(&schema.url()).await?;
    floors::create_kv(&pool).await?;
    let insert = floors::create_insert_tables(&pool).await?;
    let first = std::fs::read_to_string(ids)?
        .lines()
        .next()
        .context("no tenant seeded")?
        .to_owned();
    pool.close().await;
    let url = schema.url();
    for (name, script, clients) in [
        (PG_KEY, floors::kv_script(), POOL),
        (
            PG_GET,
            format!("{};\n", get_tenant_statement().replace("$1", ":tid")),
            POOL,
        ),
        (PG_INSERT, insert, POOL),
    ] {
        let file = name
            .rsplit(": ")
            .next()
            .unwrap_or(name)
            .replace([' ', '\''], "-");
        let defines = [("tid", first.clone())];
        let run = floors::Pgbench {
            name: &file,
            script: &script,
            clients,
            seconds,
            defines: &defines,
        };
        let measured = floors::pgbench(bench.layout, &url, &bench.dir, &run).await?;
        println!("{name}: {:.0} transactions/s", measured.rps);
        report.rows.push(Row {
            name: name.into(),
            measured,
            server_cpu: None,
            store_cpu: None,
            target: None,
            floor: true,
        });
    }
    Ok(())
}

/// The floors on PostgreSQL and Redis and the configurations on PostgreSQL: without a
/// cache (`postgres`), then with the Redis cache (`redis`).
async fn on_postgres(
    bench: &Bench,
    report: &mut Report,
    postgres: bool,
    redis: bool,
    clients: u32,
) -> anyhow::Result<()> {
    let schema = ScratchSchema::create().await.map_err(anyhow::Error::msg)?;
    let keys = TestKeys::generate();
    let mut env: Vec<(&str, String)> = keys.env().into_iter().collect();
    env.push(("TENANTD_DATABASE_URL", schema.url()));
    env.push((
        "TENANTD_TENANT_SCHEMA_PREFIX",
        schema.tenant_schema_prefix(),
    ));
    let server = bench.tenantd("postgres", &env).await?;
    let inputs = bench.seed(&server, "postgres").await?;

    pg_floors(bench, report, &schema, &inputs.0).await?;

    if postgres {
        let phases = [
            (Scenario::Get, "GetTenant", target(PG_KEY, 0.7)),
            (Scenario::Verify, "VerifyApiKey", None),
            (Scenario::Create, "CreateTenant", target(PG_INSERT, 0.7)),
        ];
        bench
            .phases(report, &server, "postgres", &inputs, &phases)
            .await?;
    }
    server.stop().await?;

    if redis {
        let measured = floors::redis_get(bench.layout, &bench.args.redis, clients).await?;
        println!("{REDIS_GET}: {:.0} calls/s", measured.rps);
        report.rows.push(Row {
            name: REDIS_GET.into(),
            measured,
            server_cpu: None,
            store_cpu: None,
            target: None,
            floor: true,
        });
        env.push(("TENANTD_REDIS_URL", bench.args.redis.clone()));
        env.push((
            "TENANTD_REDIS_KEY_PREFIX",
            format!("tenantd-bench:{}:", uuid::Uuid::new_v4().simple()),
        ));
        let server = bench.tenantd("redis", &env).await?;
        let phases = [
            (Scenario::Get, "GetTenant (cache hits)", target(ECHO, 0.8)),
            (
                Scenario::Verify,
                "VerifyApiKey (cache hits)",
                target(ECHO, 0.8),
            ),
        ];
        bench
            .phases(report, &server, "postgres + redis", &inputs, &phases)
            .await?;
        server.stop().await?;
    }
    if postgres {
        watch_streams(bench, report, &env).await?;
    }
    drop(schema);
    Ok(())
}

/// The commands of PostgreSQL's and Redis's processes, whose CPU a phase reports.
const STORES: &[&str] = &["postgres", "redis-server"];

/// CPU use during a phase, in percent of one core.
struct Cpu {
    server: f64,
    stores: f64,
}

/// Watch streams open at once in [`watch_streams`].
const WATCHES: usize = 1_000;

/// tenantd's RSS with [`WATCHES`] WatchProvisioning streams open: that many tenants are
/// created on a tenant database that does not answer, so their runs stay RUNNING (the
/// DATABASE step retries), and a stream is opened on each.
async fn watch_streams(
    bench: &Bench,
    report: &mut Report,
    env: &[(&str, String)],
) -> anyhow::Result<()> {
    let mut env = env.to_vec();
    env.push((
        "TENANTD_TENANT_DATABASES",
        // Nothing listens on port 1: connecting is refused, the step retries.
        "stalled=postgres://postgres@127.0.0.1:1/stalled".to_owned(),
    ));
    env.push(("TENANTD_TENANT_PLACEMENT", "stalled".to_owned()));
    env.push(("TENANTD_PROVISIONING_MAX_ATTEMPTS", "100".to_owned()));
    env.push(("TENANTD_PROVISIONING_BACKOFF_BASE_MS", "5000".to_owned()));
    env.push(("TENANTD_PROVISIONING_BACKOFF_MAX_MS", "60000".to_owned()));
    // All the watches are one admin's, on one connection: above the default limits.
    env.push((
        "TENANTD_MAX_STREAMS_PER_CONNECTION",
        (2 * WATCHES).to_string(),
    ));
    env.push((
        "TENANTD_MAX_WATCHES_PER_PRINCIPAL",
        (2 * WATCHES).to_string(),
    ));
    let server = bench.tenantd("watches", &env).await?;
    let channel = admin_channel(server.addr, &bench.certs).await?;
    let tenants = TenantServiceClient::new(channel.clone());
    let ids = create_tenants(&tenants, "w", WATCHES).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.rss_mib()?;
    let provisioning = ProvisioningServiceClient::new(channel);
    let streams: Vec<_> = futures::stream::iter(ids)
        .map(|tenant_id| {
            let mut client = provisioning.clone();
            async move {
                let mut stream = client
                    .watch_provisioning(WatchProvisioningRequest { tenant_id })
                    .await?
                    .into_inner();
                let first = stream.message().await?;
                anyhow::ensure!(first.is_some(), "a watch ended before its first message");
                Ok::<_, anyhow::Error>(stream)
            }
        })
        .buffered(64)
        .try_collect()
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = server.rss_mib()?;
    println!(
        "watch streams: {} open, RSS {idle:.1} MiB before, {open:.1} MiB with them",
        streams.len()
    );
    report
        .rss
        .push((format!("{WATCHES} open watch streams"), idle, open));
    drop(streams);
    server.stop().await
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().to_path_buf();
    let (certs, _generated) = devcerts::ensure(&dir.join("certs"), "tenantd.local", false)?;
    let wanted = args.only.clone();
    let only = |name: &str| wanted.iter().any(|o| o == name);
    let bench = Bench {
        layout: Layout { pin: args.pin },
        me: std::env::current_exe()?,
        certs,
        dir,
        args,
    };
    let args = &bench.args;
    println!(
        "tenantd-bench: {} connections x {} in flight, {} s warm-up, {} s phases, {}",
        args.connections,
        args.in_flight,
        args.warmup,
        args.duration,
        if args.pin {
            "servers on core 0, clients on core 1"
        } else {
            "not pinned (BENCH_PIN=1 pins)"
        }
    );
    let clients = u32::try_from(args.connections * args.in_flight)?;
    let mut report = Report::default();
    report.again.insert(ECHO, ECHO_END);

    echo_floor(&bench, &mut report, ECHO).await?;

    if only("memory") {
        let server = bench.tenantd("memory", &[]).await?;
        let inputs = bench.seed(&server, "memory").await?;
        let phases = [
            (Scenario::Get, "GetTenant", target(ECHO, 0.85)),
            (Scenario::Verify, "VerifyApiKey", target(ECHO, 0.85)),
            (Scenario::Create, "CreateTenant", target(ECHO, 0.3)),
        ];
        bench
            .phases(&mut report, &server, "memory", &inputs, &phases)
            .await?;
        server.stop().await?;
    }

    if only("postgres") || only("redis") {
        on_postgres(
            &bench,
            &mut report,
            only("postgres"),
            only("redis"),
            clients,
        )
        .await?;
    }

    echo_floor(&bench, &mut report, ECHO_END).await?;

    println!();
    print!("{}", report.table());
    std::fs::create_dir_all(&args.out)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let file = args.out.join(format!("bench-{stamp}.json"));
    let environment = serde_json::json!({
        "at": chrono::Utc::now().to_rfc3339(),
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "pinned": args.pin,
        "connections": args.connections,
        "in_flight": args.in_flight,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    });
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&report.json(&environment))?,
    )?;
    println!("(JSON: {})", file.display());
    let misses = report.misses();
    if !misses.is_empty() {
        println!("targets missed:\n  {}", misses.join("\n  "));
        if args.enforce {
            bail!("{} target(s) missed", misses.len());
        }
    }
    Ok(())
}
