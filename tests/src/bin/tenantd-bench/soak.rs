//! `tenantd-bench soak`: tenantd in its production configuration (PostgreSQL and Redis,
//! audit on, rate limits on) under a steady load for a long while (10 minutes by
//! default): GetTenant, VerifyApiKey and CreateTenant phases in turn from the separate
//! load generator, each phase's rate and errors and tenantd's resident memory after it.
//! It fails on any failed call, on resident memory above `--max-rss-mib`, and on growth of
//! more than `--max-rss-growth-mib` from the end of the first round of phases (caches
//! and pools warm) to the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_e2e::TestKeys;

use super::{Bench, RunArgs};
use crate::load::Scenario;
use crate::procs::Layout;

/// The soak's arguments.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=600))]
    phase_seconds: u32,
    /// HTTP/2 connections of the load.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Most resident memory tenantd may use at any sample, in MiB.
    #[arg(long, default_value_t = 512.0)]
    max_rss_mib: f64,
    /// Most its resident memory may grow after the first round of phases, in MiB.
    #[arg(long, default_value_t = 64.0)]
    max_rss_growth_mib: f64,
    /// The Redis of the cache.
    #[arg(long, env = "BENCH_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

/// One phase's outcome.
#[derive(Debug)]
struct Sample {
    at_s: f64,
    rpc: &'static str,
    rps: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

impl Sample {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "at_s": self.at_s,
            "rpc": self.rpc,
            "rps": self.rps,
            "rss_mib": self.rss_mib,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }
}

const ROUND: [(Scenario, &str); 3] = [
    (Scenario::Get, "GetTenant"),
    (Scenario::Verify, "VerifyApiKey"),
    (Scenario::Create, "CreateTenant"),
];

/// Runs the soak.
///
/// # Errors
/// A failed call, a dependency missing, or memory past its bounds.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().to_path_buf();
    let (certs, _generated) =
        tenantd_server::devcerts::ensure(&dir.join("certs"), "tenantd.local", false)?;
    let bench = Bench {
        layout: Layout { pin: false },
        me: std::env::current_exe()?,
        certs,
        dir,
        args: RunArgs {
            connections: args.connections,
            in_flight: args.in_flight,
            warmup: 1,
            duration: args.phase_seconds,
            tenants: 1000,
            keys: 100,
            pin: false,
            enforce: false,
            redis: args.redis.clone(),
            only: Vec::new(),
            out: args.out.clone(),
        },
    };
    let schema = ScratchSchema::create().await.map_err(anyhow::Error::msg)?;
    let keys = TestKeys::generate();
    let mut env: Vec<(&str, String)> = keys.env().into_iter().collect();
    env.extend([
        ("TENANTD_DATABASE_URL", schema.url()),
        (
            "TENANTD_TENANT_SCHEMA_PREFIX",
            schema.tenant_schema_prefix(),
        ),
        ("TENANTD_REDIS_URL", args.redis.clone()),
        (
            "TENANTD_REDIS_KEY_PREFIX",
            format!("tenantd-soak:{}:", uuid::Uuid::new_v4().simple()),
        ),
    ]);
    let server = bench.tenantd("soak", &env).await?;
    let inputs = bench.seed(&server, "soak").await?;
    println!(
        "soak: {} s of {} s phases, {} connections x {} in flight; tenantd at {:.1} MiB",
        args.seconds,
        args.phase_seconds,
        args.connections,
        args.in_flight,
        server.rss_mib()?
    );
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    for (scenario, rpc) in ROUND.iter().cycle() {
        if started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
        let file = match scenario {
            Scenario::Get => Some(inputs.0.as_path()),
            Scenario::Verify => Some(inputs.1.as_path()),
            Scenario::Echo | Scenario::Create => None,
        };
        let (measured, _cpu, peak) = bench.phase(&server, *scenario, file).await?;
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rpc,
            rps: measured.rps,
            rss_mib: server.rss_mib()?,
            peak_rss_mib: peak,
        };
        println!(
            "soak: {:>5.0} s {:<13} {:>7.0} calls/s, RSS {:.1} MiB (peak {:.1})",
            sample.at_s, sample.rpc, sample.rps, sample.rss_mib, sample.peak_rss_mib
        );
        samples.push(sample);
    }
    server.stop().await?;
    verdict(&args, &samples)
}

/// Writes the samples as JSON and checks the memory bounds.
fn verdict(args: &SoakArgs, samples: &[Sample]) -> anyhow::Result<()> {
    let (Some(warm), Some(last)) = (samples.get(ROUND.len() - 1), samples.last()) else {
        bail!(
            "the soak ran fewer than {} phases: give it more seconds",
            ROUND.len()
        );
    };
    let peak = samples.iter().map(|s| s.peak_rss_mib).fold(0.0, f64::max);
    let growth = last.rss_mib - warm.rss_mib;
    std::fs::create_dir_all(&args.out)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let file = args.out.join(format!("soak-{stamp}.json"));
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&serde_json::json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "seconds": args.seconds,
            "connections": args.connections,
            "in_flight": args.in_flight,
            "samples": samples.iter().map(Sample::json).collect::<Vec<_>>(),
            "warm_rss_mib": warm.rss_mib,
            "last_rss_mib": last.rss_mib,
            "peak_rss_mib": peak,
        }))?,
    )?;
    println!(
        "soak: RSS {:.1} MiB warm, {:.1} MiB at the end ({growth:+.1}), peak {peak:.1}; \
         no call failed (JSON: {})",
        warm.rss_mib,
        last.rss_mib,
        file.display()
    );
    if peak > args.max_rss_mib {
        bail!(
            "peak RSS {peak:.1} MiB is above --max-rss-mib {}",
            args.max_rss_mib
        );
    }
    if growth > args.max_rss_growth_mib {
        bail!(
            "RSS grew {growth:.1} MiB after warm-up, above --max-rss-growth-mib {}",
            args.max_rss_growth_mib
        );
    }
    Ok(())
}
