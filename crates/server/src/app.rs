//! The server process: binds its listeners first (port 0 allowed, so tests run the real
//! server in-process on free ports), then serves gRPC over mTLS and `/metrics` until the
//! shutdown signal, draining in-flight calls within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::{IntCounter, IntGauge, Registry};
use tenantd_application::{Engine, ProvisioningService};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::devcerts::DevCerts;
use crate::grpc::{ApiKeyApi, EventApi, PlanApi, ProvisioningApi, TenantApi};
use crate::identity::IdentityLayer;
use crate::metrics::{
    CacheMetrics, CallLayer, DbPoolCollector, GrpcMetrics, ProvisioningMetrics, RateLimitMetrics,
    RelayMetrics,
};
use crate::proto::{
    self, api_key_service_server::ApiKeyServiceServer, event_service_server::EventServiceServer,
    plan_service_server::PlanServiceServer, provisioning_service_server::ProvisioningServiceServer,
    tenant_service_server::TenantServiceServer,
};
use crate::rate_limit::RateLimitLayer;
use crate::wiring::{Observers, ProviderWrap};
use crate::{audit, health, relay, tls, wiring};

/// Deadline of a call whose client sets none (a shorter grpc-timeout wins). The database
/// pool's acquire timeout stays well below it, so an exhausted pool answers UNAVAILABLE.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reflection serves our services, health, and google.rpc's error details (so tools such
/// as grpcurl can decode the BadRequest and RetryInfo details of our errors).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Time the audit writer gets to flush even when draining used up the grace period.
const FLUSH_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(2);

/// Re-reads the TLS material on every SIGHUP; bad material is refused and logged.
async fn reload_on_sighup(tls: Arc<tls::ReloadableTls>, mut hangups: Signal) {
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate, key and client CA"),
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "SIGHUP: new TLS material refused; the current material stays in force"
            ),
        }
    }
}

/// A configured server with its listeners bound.
#[derive(Debug)]
pub struct App {
    config: Config,
    grpc: TcpListener,
    metrics: TcpListener,
    tls: Arc<tls::ReloadableTls>,
    services: wiring::Services,
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    /// SIGHUP, registered at build time: from then on a SIGHUP never kills the process.
    hangups: Signal,
    /// Audit records lost to a full queue or a store failing past its retries.
    audit_dropped: IntCounter,
    /// Open WatchProvisioning streams.
    open_watches: IntGauge,
    /// Rate-limit refusals.
    rate_limited: RateLimitMetrics,
}

impl App {
    /// Loads TLS material, builds the services and binds both listeners.
    ///
    /// # Errors
    /// Bad TLS material, an address that cannot be bound, metrics registration failure.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, None).await
    }

    /// [`App::build`] with the provisioning providers passed through `wrap` (how tests
    /// inject failures).
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with(config: Config, wrap: Option<ProviderWrap>) -> anyhow::Result<Self> {
        let tls = Arc::new(tls::ReloadableTls::load(&config.tls, &config.trust_domain)?);
        let registry = Registry::new();
        let observer = Arc::new(ProvisioningMetrics::register(&registry)?);
        let open_watches = observer.watches();
        let observers = Observers {
            provisioning: observer,
            cache: Arc::new(CacheMetrics::register(&registry)?),
            relay: Arc::new(RelayMetrics::register(&registry)?),
        };
        let rate_limited = RateLimitMetrics::register(&registry)?;
        let services = wiring::build(&config, observers, wrap).await?;
        let grpc_metrics = GrpcMetrics::register(
            &registry,
            &[
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
        )?;
        if let Some(stats) = services.db_pool.clone() {
            registry.register(Box::new(DbPoolCollector::new(stats)?))?;
        }
        let grpc = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let audit_dropped = IntCounter::new(
            "audit_records_dropped_total",
            "Audit records lost to a full queue or a store that kept failing.",
        )?;
        registry.register(Box::new(audit_dropped.clone()))?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("metrics-listen: cannot bind {}", config.metrics_listen))?;
        Ok(Self {
            config,
            grpc,
            metrics,
            tls,
            services,
            registry,
            grpc_metrics,
            hangups,
            audit_dropped,
            open_watches,
            rate_limited,
        })
    }

    /// The bound gRPC address.
    ///
    /// # Errors
    /// When the socket cannot report its address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound metrics address.
    ///
    /// # Errors
    /// When the socket cannot report its address.
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics.local_addr()
    }

    /// The development certificates in use (embedded mode).
    pub fn dev_certs(&self) -> Option<&DevCerts> {
        self.tls.dev_certs()
    }

    /// Serves until `shutdown` completes, then stops accepting, reports NOT_SERVING and
    /// drains in-flight calls for at most the configured grace period.
    ///
    /// # Errors
    /// When a server fails (not on a clean shutdown).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _closed = rx.wait_for(|stop| *stop).await;
            }
        };

        let (health, health_service, prober) =
            start_health(&self.services, self.config.health_probe_interval).await;
        // v1 for current clients, v1alpha for grpcurl 1.8.x and other older tools.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let services = self.services;
        let (workers, sweeper) = provisioning(&services, &self.config, &stop_tx);
        let relay = services
            .relay
            .clone()
            .map(|r| relay::start(r, stop_tx.subscribe()));
        let (audit_sink, close_audit, audit_writer) =
            start_audit(&services, self.audit_dropped.clone());
        let router = Server::builder()
            .timeout(REQUEST_TIMEOUT)
            .trace_fn(|request| tracing::info_span!("rpc", path = %request.uri().path()))
            // The first layer is the outermost: identity first, so calls know their caller.
            .layer(IdentityLayer::new(&self.config.trust_domain))
            .layer(CallLayer::new(self.grpc_metrics, Some(audit_sink)))
            // Inside the call layer, so refused calls are counted and audited too.
            .layer(RateLimitLayer::new(
                services.rate_limits.clone(),
                self.rate_limited,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(TenantServiceServer::new(TenantApi::new(services.tenants)))
            .add_service(PlanServiceServer::new(PlanApi::new(services.plans)))
            .add_service(EventServiceServer::new(EventApi::new(
                services.events,
                services.audit,
            )))
            .add_service(ProvisioningServiceServer::new(ProvisioningApi::new(
                services.provisioning.clone(),
                stop_tx.subscribe(),
                self.open_watches,
            )))
            .add_service(ApiKeyServiceServer::new(ApiKeyApi::new(services.api_keys)));

        let (incoming, acceptor) = tls::incoming(self.grpc, self.tls.clone());
        let reloader = tokio::spawn(reload_on_sighup(self.tls.clone(), self.hangups));
        let grpc = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped()));
        let metrics = tokio::spawn(crate::metrics::serve_http(
            self.metrics,
            self.registry,
            stopped(),
        ));

        shutdown.await;
        tracing::info!("shutting down: draining in-flight calls");
        prober.abort();
        sweeper.abort();
        reloader.abort();
        acceptor.abort();
        health::set_all(&health, ServingStatus::NotServing).await;
        let _receivers_gone = stop_tx.send(true);

        // One deadline for the whole shutdown: drain calls, then flush the audit queue.
        let grace = self.config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        let grpc_abort = grpc.abort_handle();
        // A failed server still has queued audit records: its error waits for the flush.
        let served = if let Ok(joined) = tokio::time::timeout_at(deadline, grpc).await {
            joined
                .context("gRPC server task")
                .and_then(|served| served.context("gRPC server"))
        } else {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "drain deadline passed; closing the remaining connections"
            );
            grpc_abort.abort();
            Ok(())
        };
        stop_workers(workers, deadline).await;
        if let Some(relay) = relay {
            relay.stop(deadline).await;
        }
        // Every finished call has queued its record: close the queue and let the writer
        // flush it (at least a moment even when the drain used up the grace period).
        let _writer_gone = close_audit.send(());
        let flush_deadline = deadline.max(tokio::time::Instant::now() + FLUSH_AT_LEAST);
        if tokio::time::timeout_at(flush_deadline, audit_writer)
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish in time; queued records may be lost");
        }
        served?;
        if let Ok(joined) = tokio::time::timeout_at(flush_deadline, metrics).await {
            joined
                .context("metrics server task")?
                .context("metrics server")?;
        } else {
            tracing::warn!("metrics server did not stop in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the write-behind audit writer: the sink calls record into, the sender that
/// closes its queue, and the writer task (which ends once the queue is flushed).
fn start_audit(
    services: &wiring::Services,
    dropped: IntCounter,
) -> (
    audit::AuditSink,
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<()>,
) {
    let (sink, queue) = audit::queue(audit::CAPACITY, dropped.clone());
    let (close, closing) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(audit::write_behind(
        services.audit_log.clone(),
        queue,
        async {
            let _closed = closing.await;
        },
        dropped,
    ));
    (sink, close, writer)
}

/// Reports every service and dependency SERVING (dependencies were reachable when the app
/// was built) and starts the prober, which takes over from here.
async fn start_health(
    services: &wiring::Services,
    interval: Duration,
) -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    JoinHandle<()>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health, ServingStatus::Serving).await;
    for check in &services.checks {
        health
            .set_service_status(check.name(), ServingStatus::Serving)
            .await;
    }
    let prober = tokio::spawn(health::probe(
        health.clone(),
        services.checks.clone(),
        interval,
    ));
    (health, health_service, prober)
}

/// Starts the provisioning engine: its workers and the deadline sweeper.
fn provisioning(
    services: &wiring::Services,
    config: &Config,
    stop: &watch::Sender<bool>,
) -> (Vec<JoinHandle<()>>, JoinHandle<()>) {
    let workers = provisioning_workers(&services.engine, stop);
    let sweeper = tokio::spawn(sweep(
        services.provisioning.clone(),
        config.provisioning.sweep_interval,
    ));
    (workers, sweeper)
}

/// Starts the engine's workers; each stops between runs once `stop` turns true.
fn provisioning_workers(engine: &Engine, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "tenantd".to_owned(), |h| h.trim().to_owned());
    let pid = std::process::id();
    (0..engine.settings().workers)
        .map(|i| {
            let name = format!("{host}/{pid}/worker-{i}");
            tokio::spawn(work(engine.clone(), name, stop.subscribe()))
        })
        .collect()
}

/// Waits for the workers to finish the step at hand until `deadline`; one still busy then
/// is dropped (its transaction rolls back) and its run resumes, here after a restart or in
/// another replica, once the lease expires.
async fn stop_workers(workers: Vec<JoinHandle<()>>, deadline: tokio::time::Instant) {
    for worker in workers {
        let abort = worker.abort_handle();
        if tokio::time::timeout_at(deadline, worker).await.is_err() {
            abort.abort();
            tracing::warn!(
                "a provisioning worker was still busy at the deadline; its run resumes after the lease"
            );
        }
    }
}

/// One worker: drives due runs one after another, idles until woken or the poll interval
/// passes, and stops between runs on shutdown.
async fn work(engine: Engine, name: String, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match engine.work_once(&name).await {
            Ok(true) => {
                failing = false;
                continue;
            }
            Ok(false) => failing = false,
            Err(err) => {
                // Once per outage, not once per poll.
                if !failing {
                    tracing::warn!(worker = %name, error = %err, "provisioning worker cannot work; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = engine.idle() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// The deadline sweeper: cancels overdue runs (with compensation) every `interval`.
async fn sweep(provisioning: ProvisioningService, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match provisioning.cancel_overdue().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(cancelled = n, "sweeper cancelled overdue provisioning runs"),
            Err(err) => tracing::warn!(error = %err, "provisioning sweep failed"),
        }
    }
}
