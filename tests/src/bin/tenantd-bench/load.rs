//! `tenantd-bench load`: the closed-loop load generator, a process of its own. It opens N
//! HTTP/2 connections over mTLS (the admin certificate of a development set), keeps M calls
//! in flight on each, warms up, then measures for a fixed time; it prints one JSON object
//! (calls/s, p50/p90/p99/p99.9/max, errors by code) on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{CreateTenantRequest, GetTenantRequest, VerifyApiKeyRequest};
use tenantd_e2e::{admin_channel, new_tenant};
use tenantd_server::devcerts::DevCerts;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::report::float;

/// What each call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `grpc.health.v1.Health/Check` (the bare echo server answers it).
    Echo,
    /// `GetTenant` of the ids in `--inputs`, round robin.
    Get,
    /// `VerifyApiKey` of the secrets in `--inputs`, round robin (each must verify).
    Verify,
    /// `CreateTenant` of new tenants (slugs unique to this process).
    Create,
}

/// The load generator's arguments.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server's gRPC address.
    #[arg(long)]
    pub target: SocketAddr,
    /// The development certificate set (its CA and admin certificate are used).
    #[arg(long)]
    pub certs_dir: PathBuf,
    /// What each call does.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Seconds of calls before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// A file of inputs, one per line (tenant ids or API-key secrets).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
}

/// What one caller task saw in the measured window.
struct Tally {
    latencies: Histogram<u64>,
    errors: Vec<String>,
}

/// One call of the scenario, on a client of its connection.
#[derive(Clone)]
enum Caller {
    Echo(HealthClient<Channel>),
    Get(TenantServiceClient<Channel>, Arc<Vec<String>>),
    Verify(ApiKeyServiceClient<Channel>, Arc<Vec<String>>),
    Create(TenantServiceClient<Channel>, String),
}

impl Caller {
    async fn call(&mut self, n: usize) -> Result<(), String> {
        let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        match self {
            Self::Echo(client) => {
                client
                    .check(HealthCheckRequest::default())
                    .await
                    .map_err(status)?;
            }
            Self::Get(client, ids) => {
                let tenant_id = ids[n % ids.len()].clone();
                client
                    .get_tenant(GetTenantRequest { tenant_id })
                    .await
                    .map_err(status)?;
            }
            Self::Verify(client, secrets) => {
                let api_key = secrets[n % secrets.len()].clone();
                let verified = client
                    .verify_api_key(VerifyApiKeyRequest { api_key })
                    .await
                    .map_err(status)?;
                if !verified.into_inner().valid {
                    return Err("the key did not verify".to_owned());
                }
            }
            Self::Create(client, prefix) => {
                let mut tenant = new_tenant(&format!("{prefix}-{n}"));
                tenant.plan_id = "enterprise".into();
                client
                    .create_tenant(CreateTenantRequest {
                        tenant: Some(tenant),
                        request_id: String::new(),
                    })
                    .await
                    .map_err(status)?;
            }
        }
        Ok(())
    }
}

/// Calls in a closed loop until `until`; tallies the calls sent and answered from `from`.
async fn drive(mut caller: Caller, index: usize, from: Instant, until: Instant) -> Tally {
    let mut tally = Tally {
        latencies: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        errors: Vec::new(),
    };
    // Inputs are spread: task i starts at i and strides by a prime.
    let mut n = index;
    loop {
        let sent = Instant::now();
        if sent >= until {
            return tally;
        }
        let result = caller.call(n).await;
        n = n.wrapping_add(7919);
        // Only calls sent and answered within the window count.
        let answered = Instant::now();
        if sent < from || answered > until {
            continue;
        }
        match result {
            Ok(()) => {
                let micros =
                    u64::try_from(answered.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                tally.latencies.saturating_record(micros.max(1));
            }
            Err(error) => tally.errors.push(error),
        }
    }
}

/// Runs the load and prints its JSON result.
///
/// # Errors
/// When the inputs cannot be read or a connection cannot be made.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0 && args.in_flight > 0,
        "--connections and --in-flight must be positive"
    );
    anyhow::ensure!(
        args.duration >= 1.0 && args.warmup >= 0.0,
        "--duration must be at least 1 s"
    );
    let certs = DevCerts {
        dir: args.certs_dir.clone(),
    };
    let inputs = match &args.inputs {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        }
        None => Vec::new(),
    };
    if matches!(args.scenario, Scenario::Get | Scenario::Verify) && inputs.is_empty() {
        bail!("--scenario get|verify needs --inputs with one id or secret per line");
    }
    let inputs = Arc::new(inputs);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut callers = Vec::new();
    for connection in 0..args.connections {
        let channel = admin_channel(args.target, &certs)
            .await
            .with_context(|| format!("cannot connect to {}", args.target))?;
        for task in 0..args.in_flight {
            callers.push(match args.scenario {
                Scenario::Echo => Caller::Echo(HealthClient::new(channel.clone())),
                Scenario::Get => {
                    Caller::Get(TenantServiceClient::new(channel.clone()), inputs.clone())
                }
                Scenario::Verify => {
                    Caller::Verify(ApiKeyServiceClient::new(channel.clone()), inputs.clone())
                }
                Scenario::Create => Caller::Create(
                    TenantServiceClient::new(channel.clone()),
                    format!("b{}-{connection}-{task}", &run[..8]),
                ),
            });
        }
    }

    let started = Instant::now();
    let measured_from = started + Duration::from_secs_f64(args.warmup);
    let measured_until = measured_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(index, caller)| tokio::spawn(drive(caller, index, measured_from, measured_until)))
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for task in tasks {
        let tally = task.await?;
        latencies.add(&tally.latencies)?;
        for error in tally.errors {
            *errors.entry(error).or_default() += 1;
        }
    }
    let ms = |q: f64| float(latencies.value_at_quantile(q)) / 1e3;
    let calls = latencies.len();
    let result = serde_json::json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "connections": args.connections,
        "in_flight": args.in_flight,
        "seconds": args.duration,
        "calls": calls,
        "rps": float(calls) / args.duration,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": float(latencies.max()) / 1e3,
        "errors": errors,
    });
    println!("{result}");
    Ok(())
}
