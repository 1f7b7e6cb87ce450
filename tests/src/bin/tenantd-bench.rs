//! `tenantd-bench`: throughput and latency of the hot RPCs (CreateTenant, GetTenant,
//! VerifyApiKey) against a real tenantd server started in-process, over mTLS, on the
//! in-memory store or PostgreSQL. `make bench` runs it in release mode.
//!
//! With `--redis URL` the server caches tenants and API keys in that Redis (under a key
//! prefix of its own); with `--kafka BROKERS` (PostgreSQL only) it relays the outbox to a
//! topic of its own, and the bench reports how long the outbox took to drain.
//!
//! Usage: `tenantd-bench [--store memory|postgres] [--redis URL] [--kafka BROKERS]
//! [--requests N] [--concurrency C]`

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tenantd_application::RateLimitSettings;
use tenantd_e2e::pb::api_key_service_client::ApiKeyServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    CreateApiKeyRequest, GetTenantRequest, ListTenantsRequest, TenantStatus, VerifyApiKeyRequest,
};
use tenantd_e2e::{Backend, TestServer, create, new_tenant};
use tenantd_server::config::{Config, KafkaConfig, RedisConfig, Secret};
use tonic::transport::Channel;

struct Options {
    backend: Backend,
    redis: Option<String>,
    kafka: Option<String>,
    requests: usize,
    concurrency: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        backend: Backend::Memory,
        redis: None,
        kafka: None,
        requests: 2_000,
        concurrency: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--store" => {
                options.backend = match value.as_str() {
                    "memory" => Backend::Memory,
                    "postgres" => Backend::Postgres,
                    other => bail!("--store: {other} is neither memory nor postgres"),
                }
            }
            "--redis" => options.redis = Some(value),
            "--kafka" => options.kafka = Some(value),
            "--requests" => options.requests = value.parse().context("--requests")?,
            "--concurrency" => options.concurrency = value.parse().context("--concurrency")?,
            other => bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        options.requests > 0 && options.concurrency > 0,
        "both must be positive"
    );
    Ok(options)
}

/// Runs `call(i)` for i in 0..requests on `concurrency` workers; prints one result line.
async fn phase<F, Fut>(name: &str, options: &Options, call: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (call, next, requests) = (call.clone(), next.clone(), options.requests);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let one = Instant::now();
                    call(i).await?;
                    latencies.push(one.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(options.requests);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    // The latency at `per_mille` of the sorted calls, in milliseconds.
    let at =
        |per_mille: usize| latencies[(latencies.len() - 1) * per_mille / 1000].as_secs_f64() * 1e3;
    let calls = f64::from(u32::try_from(latencies.len()).unwrap_or(u32::MAX));
    println!(
        "{name:<16} {:>8} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
        latencies.len(),
        calls / elapsed.as_secs_f64(),
        at(500),
        at(990),
        at(1000),
    );
    Ok(())
}

/// Waits until the relay has published every event of the outbox; prints how long that
/// took from the first create, and the rate.
async fn drained(server: &TestServer, started: Instant) -> anyhow::Result<()> {
    let schema = server.schema().context("--kafka needs --store postgres")?;
    let pool = sqlx::PgPool::connect(&schema.url()).await?;
    loop {
        let (total, unpublished): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM tenant_events",
        )
        .fetch_one(&pool)
        .await?;
        if unpublished == 0 {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "(the outbox's {total} events were all published to Kafka {seconds:.1} s after the first create: {:.0} events/s)",
                f64::from(u32::try_from(total).unwrap_or(u32::MAX)) / seconds
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(30),
            "the outbox did not drain within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no tenant is PROVISIONING any more, so the read phases measure the steady
/// state rather than reads competing with thousands of background runs; prints how long.
async fn settle(mut tenants: TenantServiceClient<Channel>) -> anyhow::Result<()> {
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
            println!(
                "(the created tenants' provisioning settled {:.1} s after the last create)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_mins(30),
            "provisioning did not settle within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server under test, as `options` ask.
async fn start(options: &Options) -> anyhow::Result<TestServer> {
    let redis = options.redis.clone().map(|url| RedisConfig {
        url: Secret::new(url),
        timeout: Duration::from_millis(250),
        key_prefix: format!("tenantd-bench:{}:", std::process::id()),
        cache_ttl: Duration::from_mins(5),
    });
    let kafka = options.kafka.clone().map(|brokers| KafkaConfig {
        brokers,
        topic: format!("tenant.events.bench-{}", std::process::id()),
        partitions: 6,
        replication_factor: -1,
        message_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
        batch_size: 500,
    });
    // The bench measures the server, not the admin's rate limit.
    TestServer::start_with(options.backend, |config| Config {
        rate_limits: RateLimitSettings {
            admin_per_second: 0,
            service_per_second: 0,
        },
        redis,
        kafka,
        ..config
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let server = start(&options).await?;
    let tenants = server.tenants().await?;
    println!(
        "tenantd-bench: store {:?}{}{}, {} requests per RPC, {} concurrent, over mTLS on one HTTP/2 connection",
        options.backend,
        if options.redis.is_some() {
            " + Redis cache"
        } else {
            ""
        },
        if options.kafka.is_some() {
            " + Kafka relay"
        } else {
            ""
        },
        options.requests,
        options.concurrency
    );
    let started = Instant::now();
    println!(
        "{:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "rpc", "calls", "calls/s", "p50 ms", "p99 ms", "max ms"
    );

    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); options.requests]));
    let (client, sink) = (tenants.clone(), ids.clone());
    phase("CreateTenant", &options, move |i| {
        let (mut client, sink) = (client.clone(), sink.clone());
        async move {
            let mut tenant = new_tenant(&format!("bench-{i}"));
            tenant.plan_id = "enterprise".into();
            let created = create(&mut client, tenant).await?;
            sink.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = created.tenant_id;
            Ok(())
        }
    })
    .await?;

    settle(tenants.clone()).await?;
    if options.kafka.is_some() {
        drained(&server, started).await?;
    }

    let ids: Arc<Vec<String>> =
        Arc::new(ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone());
    // Every tenant read once, then each again (with the cache: misses, then hits).
    for name in ["GetTenant", "GetTenant again"] {
        let (client, all) = (tenants.clone(), ids.clone());
        phase(name, &options, move |i| {
            let (mut client, id) = (client.clone(), all[i].clone());
            async move {
                client
                    .get_tenant(GetTenantRequest { tenant_id: id })
                    .await?;
                Ok(())
            }
        })
        .await?;
    }

    let mut keys = ApiKeyServiceClient::new(server.admin_channel().await?);
    let secret = keys
        .create_api_key(CreateApiKeyRequest {
            tenant_id: ids[0].clone(),
            display_name: "bench".into(),
            scopes: vec!["tenants.read".into()],
            expire_time: None,
        })
        .await?
        .into_inner()
        .secret;
    phase("VerifyApiKey", &options, move |_| {
        let (mut keys, secret) = (keys.clone(), secret.clone());
        async move {
            let verified = keys
                .verify_api_key(VerifyApiKeyRequest { api_key: secret })
                .await?;
            anyhow::ensure!(verified.into_inner().valid, "the key did not verify");
            Ok(())
        }
    })
    .await?;
    drop(tenants);
    server.stop().await?;
    Ok(())
}
