//! The server process: binds its listeners first (port 0 allowed, so tests run the real
//! server in-process on free ports), then serves gRPC over mTLS and `/metrics` until the
//! shutdown signal, draining in-flight calls within the grace period.
//!
//! Shutdown, within one deadline: the health prober stops, health turns NOT_SERVING and
//! the stop token is cancelled — the listener stops accepting, watches end with
//! UNAVAILABLE, workers stop once the run they drive can go no further for now, the relay
//! after its batch; the gRPC server drains; the background tasks are waited for (and
//! aborted past the deadline); the Kafka producer is flushed; then the audit queue is
//! closed and flushed, and the metrics endpoint stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::{IntCounter, Registry};
use tenantd_application::{
    Engine, MigrationService, Providers, ProvisioningService, RolloutEngine, RolloutSignals,
    Signals,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::audit::{AuditLayer, AuditPolicy, Auditor};
use crate::call::ObserveLayer;
use crate::config::{Config, LimitsConfig};
use crate::devcerts::DevCerts;
use crate::grpc::{ApiKeyApi, EventApi, MigrationApi, PlanApi, ProvisioningApi, TenantApi};
use crate::health::HealthState;
use crate::identity::Identified;
use crate::limits::{
    ActiveCalls, ConnectionGate, DeadlineLayer, IdleTimer, LoadShedLayer, MessageLimitLayer,
    WatchLimits,
};
use crate::metrics::{
    CacheMetrics, DbPoolCollector, ExportMetrics, GrpcMetrics, LimitMetrics, MetricsLayer,
    MigrationMetrics, ProvisioningMetrics, PurgeMetrics, RateLimitMetrics, RelayMetrics,
    RetentionMetrics,
};
use crate::proto::{
    self, api_key_service_server::ApiKeyServiceServer, event_service_server::EventServiceServer,
    migration_service_server::MigrationServiceServer, plan_service_server::PlanServiceServer,
    provisioning_service_server::ProvisioningServiceServer,
    tenant_service_server::TenantServiceServer,
};
use crate::rate_limit::RateLimitLayer;
use crate::tasks::Tasks;
use crate::wiring::{Observers, Overrides};
use crate::{audit, exports, health, purge, relay, retention, tls, wiring};
use tenantd_adapters::redis::follow_invalidations;

/// Deadline of a call whose client sets none (a shorter grpc-timeout wins). The database
/// pool's acquire timeout stays well below it, so an exhausted pool answers UNAVAILABLE.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reflection serves our services, health, and google.rpc's error details (so tools such
/// as grpcurl can decode the ErrorInfo, BadRequest and RetryInfo details of our errors).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Time the audit writer gets to flush even when draining used up the grace period.
const FLUSH_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(2);

/// Re-reads the TLS material on every SIGHUP (until `stop`); bad material is refused and
/// logged.
async fn reload_on_sighup(
    tls: Arc<tls::ReloadableTls>,
    mut hangups: Signal,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            hangup = hangups.recv() => if hangup.is_none() { return },
        }
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate, key and client CA"),
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "SIGHUP: new TLS material refused; the current material stays in force"
            ),
        }
    }
}

/// How to build an [`App`]: its configuration and the adapters that replace the ones the
/// configuration picks (tests inject faults this way; production overrides nothing).
#[derive(Debug)]
pub struct AppBuilder {
    config: Config,
    overrides: Overrides,
}

impl AppBuilder {
    /// Passes the provisioning providers through `wrap` before the engine gets them.
    #[must_use]
    pub fn wrap_providers(
        mut self,
        wrap: impl FnOnce(Providers) -> Providers + Send + 'static,
    ) -> Self {
        self.overrides.providers = Some(Box::new(wrap));
        self
    }

    /// Loads TLS material, builds the services and binds both listeners.
    ///
    /// # Errors
    /// Bad TLS material, an address that cannot be bound, metrics registration failure, a
    /// dependency the configuration names that cannot be used.
    pub async fn build(self) -> anyhow::Result<App> {
        App::assemble(self.config, self.overrides).await
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
    /// Rate-limit refusals.
    rate_limited: RateLimitMetrics,
    /// What the resource limits refused.
    limit_metrics: LimitMetrics,
    /// Cancelled when the server stops (watches, workers and tasks follow it).
    stop: CancellationToken,
}

impl App {
    /// Loads TLS material, builds the services and binds both listeners.
    ///
    /// # Errors
    /// As [`AppBuilder::build`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::builder(config).build().await
    }

    /// A builder for `config`, to replace adapters before building.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            overrides: Overrides::default(),
        }
    }

    async fn assemble(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        let server = &config.server;
        let tls = Arc::new(tls::ReloadableTls::load(&server.tls, &server.trust_domain)?);
        let registry = Registry::new();
        let observers = Observers {
            provisioning: Arc::new(ProvisioningMetrics::register(&registry)?),
            cache: Arc::new(CacheMetrics::register(&registry)?),
            relay: Arc::new(RelayMetrics::register(&registry)?),
            migrations: Arc::new(MigrationMetrics::register(&registry)?),
            retention: Arc::new(RetentionMetrics::register(&registry)?),
            purges: Arc::new(PurgeMetrics::register(&registry)?),
            exports: Arc::new(ExportMetrics::register(&registry)?),
        };
        crate::metrics::process::register(&registry)?;
        let rate_limited = RateLimitMetrics::register(&registry)?;
        let limit_metrics = LimitMetrics::register(&registry)?;
        let stop = CancellationToken::new();
        let signals = Signals::new(stop.child_token());
        let rollout_signals = RolloutSignals::new(stop.child_token());
        let services =
            wiring::build(&config, observers, signals, rollout_signals, overrides).await?;
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
        let grpc = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", server.listen))?;
        let hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let audit_dropped = IntCounter::new(
            "audit_records_dropped_total",
            "Audit records lost to a full queue or a store that kept failing.",
        )?;
        registry.register(Box::new(audit_dropped.clone()))?;
        let metrics = TcpListener::bind(server.metrics_listen)
            .await
            .with_context(|| format!("metrics-listen: cannot bind {}", server.metrics_listen))?;
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
            rate_limited,
            limit_metrics,
            stop,
        })
    }

    /// The API's services (every `tenant.v1` service, with the message limits) as one
    /// tower service, without the connection and call layers: for callers in process,
    /// such as the fuzz targets, which put a [`crate::identity::Caller`] in each
    /// request's extensions.
    pub fn api_routes(&self) -> Routes {
        api_routes(&self.services, &self.config.limits, &self.limit_metrics)
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

    /// Serves until `shutdown` completes, then stops as the module docs describe, within
    /// the configured grace period.
    ///
    /// # Errors
    /// When a server fails (not on a clean shutdown).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let services = self.services;
        let mut tasks = Tasks::new(self.stop.clone());
        // Fired once the gRPC server has drained: the audit queue and /metrics then stop.
        let drained = CancellationToken::new();

        let probing = self.stop.child_token();
        let (health, health_service, prober) = start_health(
            &services,
            self.config.server.health_probe_interval,
            &mut tasks,
            probing.clone(),
        )
        .await;
        // v1 for current clients, v1alpha for grpcurl 1.8.x and other older tools.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        start_background(&services, &self.config, &mut tasks, &self.stop).await?;
        let (audit_sink, queue) = audit::queue(audit::CAPACITY, self.audit_dropped.clone());
        let audit_writer = tokio::spawn(audit::write_behind(
            services.audit_log.clone(),
            queue,
            drained.clone().cancelled_owned(),
            self.audit_dropped,
        ));
        let limits = self.config.limits;
        let api = api_routes(&services, &limits, &self.limit_metrics)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let router = Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_keepalive_interval(limits.http2_keepalive_interval)
            .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
            .http2_max_header_list_size(limits.max_header_list_bytes)
            // Each call's span, at debug: the access log names every call that is not a
            // routine read, and a span per call at info would cost each call its fields.
            .trace_fn(|request| tracing::debug_span!("rpc", path = %request.uri().path()))
            // The first layer is the outermost. Calls know their caller from the connection
            // (identity::Identified). Every call keeps its connection busy (idle timeout).
            .layer(ObserveLayer::new(ActiveCalls))
            .layer(MetricsLayer::new(self.grpc_metrics))
            // Inside the metrics layer (shed calls are counted) and outside the audit layer
            // (a shed call did nothing: it costs no audit record).
            .layer(LoadShedLayer::new(
                limits.max_concurrent_calls,
                self.limit_metrics.clone(),
            ))
            .layer(AuditLayer::new(Auditor::new(
                audit_sink,
                AuditPolicy::new(self.config.audit_reads),
            )))
            // Inside the audit layer, so a call past its deadline is audited as such.
            .layer(DeadlineLayer::new(REQUEST_TIMEOUT))
            // Inside the metrics and audit layers, so refused calls are counted and audited.
            .layer(RateLimitLayer::new(
                services.rate_limits.clone(),
                self.rate_limited,
            ))
            // Innermost: the layers above see a message too large as RESOURCE_EXHAUSTED.
            .layer(MessageLimitLayer::new(
                limits.max_request_bytes,
                limits.max_response_bytes,
                self.limit_metrics.clone(),
            ))
            .add_routes(api);

        let (incoming, accepting) = identified_connections(
            self.grpc,
            self.tls.clone(),
            limits,
            self.config.server.trust_domain.as_str().into(),
            self.limit_metrics,
            self.stop.clone(),
        );
        tasks.spawn("TLS acceptor", accepting);
        tasks.spawn(
            "TLS reloader",
            reload_on_sighup(self.tls.clone(), self.hangups, self.stop.clone()),
        );
        let grpc = tokio::spawn(
            router.serve_with_incoming_shutdown(incoming, self.stop.clone().cancelled_owned()),
        );
        let metrics = tokio::spawn(crate::metrics::serve_http(
            self.metrics,
            self.registry,
            health.clone(),
            drained.clone().cancelled_owned(),
        ));

        shutdown.await;
        Running {
            health,
            probing,
            prober,
            stop: self.stop,
            grpc,
            tasks,
            relay: services.relay,
            drained,
            audit_writer,
            metrics,
        }
        .stop(self.config.server.shutdown_grace)
        .await
    }
}

/// The connections the gRPC server serves: accepted within `limits`, each identified
/// once and closed when idle for the timeout; and the accept loop to run as a task.
fn identified_connections(
    listener: TcpListener,
    tls: Arc<tls::ReloadableTls>,
    limits: LimitsConfig,
    trust_domain: Arc<str>,
    metrics: LimitMetrics,
    stop: CancellationToken,
) -> (
    impl tokio_stream::Stream<Item = std::io::Result<Identified<TlsStream<TcpStream>>>>,
    impl Future<Output = ()> + Send + 'static,
) {
    let accept_limits = tls::AcceptLimits {
        connections: ConnectionGate::new(limits.max_connections, &metrics),
        handshakes: limits.max_handshakes,
        handshakes_per_peer: limits.max_handshakes_per_peer,
        handshake_timeout: limits.handshake_timeout,
        metrics: metrics.clone(),
    };
    let (incoming, accepting) = tls::incoming(listener, tls, accept_limits, stop);
    let idle_timeout = limits.idle_connection_timeout;
    let identified = incoming.map(move |accepted| {
        accepted.map(|(stream, slot)| {
            let idle = idle_timeout.map(|timeout| IdleTimer::new(timeout, metrics.clone()));
            Identified::new(stream, slot, &trust_domain, idle)
        })
    });
    (identified, accepting)
}

/// The tenant.v1 services, each with the message-size limits.
fn api_routes(
    services: &wiring::Services,
    limits: &LimitsConfig,
    metrics: &LimitMetrics,
) -> Routes {
    macro_rules! limited {
        ($service:expr) => {
            $service
                .max_decoding_message_size(limits.max_request_bytes)
                .max_encoding_message_size(limits.max_response_bytes)
        };
    }
    Routes::default()
        .add_service(limited!(TenantServiceServer::new(TenantApi::new(
            services.tenants.clone(),
            services.purges.clone(),
            services.exports.clone(),
        ))))
        .add_service(limited!(PlanServiceServer::new(PlanApi::new(
            services.plans.clone()
        ))))
        .add_service(limited!(EventServiceServer::new(EventApi::new(
            services.events.clone(),
            services.audit.clone(),
        ))))
        .add_service(limited!(ProvisioningServiceServer::new(
            ProvisioningApi::new(
                services.provisioning.clone(),
                WatchLimits::new(limits.max_watches_per_principal, metrics.clone()),
            )
        )))
        .add_service(limited!(ApiKeyServiceServer::new(ApiKeyApi::new(
            services.api_keys.clone()
        ))))
        .add_service(limited!(MigrationServiceServer::new(MigrationApi::new(
            services.migrations.clone(),
        ))))
}

/// A serving server's parts, for its shutdown.
struct Running {
    health: HealthState,
    /// Stops the health prober, which must be gone before NOT_SERVING is reported (or its
    /// round in progress could report SERVING again).
    probing: CancellationToken,
    prober: JoinHandle<()>,
    stop: CancellationToken,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Tasks,
    relay: Option<wiring::Relay>,
    drained: CancellationToken,
    audit_writer: JoinHandle<()>,
    metrics: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops as the module docs describe, within `grace`.
    async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        tracing::info!("shutting down: draining in-flight calls");
        self.probing.cancel();
        let _prober_ended = self.prober.await;
        self.health.drain();
        health::set_all(&self.health, ServingStatus::NotServing).await;
        self.stop.cancel();

        // One deadline for the whole shutdown: drain calls, stop the tasks, flush.
        let deadline = tokio::time::Instant::now() + grace;
        let grpc_abort = self.grpc.abort_handle();
        // A failed server still has queued audit records: its error waits for the flush.
        let served = if let Ok(joined) = tokio::time::timeout_at(deadline, self.grpc).await {
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
        self.tasks.stop(deadline).await;
        if let Some(relay) = &self.relay {
            relay::flush(relay, deadline).await;
        }
        // Every finished call has queued its record: close the queue and let the writer
        // flush it (at least a moment even when the drain used up the grace period).
        self.drained.cancel();
        let flush_deadline = deadline.max(tokio::time::Instant::now() + FLUSH_AT_LEAST);
        if tokio::time::timeout_at(flush_deadline, self.audit_writer)
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish in time; queued records may be lost");
        }
        served?;
        if let Ok(joined) = tokio::time::timeout_at(flush_deadline, self.metrics).await {
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

/// Reports every service and dependency SERVING (dependencies were reachable when the app
/// was built) and starts the prober, which takes over from here.
async fn start_health(
    services: &wiring::Services,
    interval: Duration,
    tasks: &mut Tasks,
    stop: CancellationToken,
) -> (
    HealthState,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    JoinHandle<()>,
) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = HealthState::new(reporter, &services.checks);
    health::set_all(&health, ServingStatus::Serving).await;
    for check in &services.checks {
        health.set(check.name(), ServingStatus::Serving).await;
    }
    let prober = tasks.spawn(
        "health prober",
        health::probe(health.clone(), services.checks.clone(), interval, stop),
    );
    (health, health_service, prober)
}

/// Starts the background work: provisioning, rollouts, the relay, retention and the
/// cache invalidation follower.
///
/// # Errors
/// As [`start_rollouts`].
async fn start_background(
    services: &wiring::Services,
    config: &Config,
    tasks: &mut Tasks,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    start_provisioning(services, config, tasks);
    start_rollouts(services, config, tasks).await?;
    if let Some(relay) = &services.relay {
        relay::spawn(relay, tasks);
    }
    retention::spawn(services.retention.clone(), config.retention.interval, tasks);
    purge::spawn(&services.purge_engine, config.tenants.purge_interval, tasks);
    exports::spawn(&services.export_engine, tasks);
    if let Some(followed) = services.invalidations.clone() {
        tasks.spawn(
            "cache invalidations",
            follow_invalidations(
                followed.url,
                followed.channel,
                followed.tiers,
                stop.child_token(),
            ),
        );
    }
    Ok(())
}

/// Starts the provisioning engine's workers and the deadline sweeper.
fn start_provisioning(services: &wiring::Services, config: &Config, tasks: &mut Tasks) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "tenantd".to_owned(), |h| h.trim().to_owned());
    let pid = std::process::id();
    for i in 0..services.engine.settings().workers {
        let name = format!("{host}/{pid}/worker-{i}");
        let stop = tasks.stop_token().clone();
        tasks.spawn(
            "provisioning worker",
            work("provisioning", services.engine.clone(), name, stop),
        );
    }
    tasks.spawn(
        "provisioning sweeper",
        sweep(
            services.provisioning.clone(),
            config.provisioning.sweep_interval,
            tasks.stop_token().clone(),
        ),
    );
}

/// How often the tenant-schema gauges (schemas behind, the rollout's tenants) are
/// refreshed from the store, beside the updates the workers make as they go.
const SCHEMA_GAUGES_EVERY: Duration = Duration::from_secs(15);

/// How long after a rollout's change here the gauges are refreshed (changes within it are
/// taken together).
const SCHEMA_GAUGES_SETTLE: Duration = Duration::from_millis(500);

/// What a replica does about tenant schemas when it starts: it never migrates one by
/// itself; it logs how many are behind its newest migration (and, with
/// `--tenant-migrations-auto-rollout`, starts a rollout); then it runs its rollout workers
/// and keeps the gauges fresh.
///
/// # Errors
/// The store failing on the first check.
async fn start_rollouts(
    services: &wiring::Services,
    config: &Config,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    services
        .migrations
        .on_start(config.rollouts.auto_rollout)
        .await
        .context("tenant schemas")?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "tenantd".to_owned(), |h| h.trim().to_owned());
    let pid = std::process::id();
    for i in 0..services.rollouts.settings().workers {
        let name = format!("{host}/{pid}/rollout-{i}");
        let stop = tasks.stop_token().clone();
        tasks.spawn(
            "rollout worker",
            work("rollout", services.rollouts.clone(), name, stop),
        );
    }
    tasks.spawn(
        "tenant schema gauges",
        refresh_schema_gauges(services.migrations.clone(), tasks.stop_token().clone()),
    );
    Ok(())
}

/// Refreshes the tenant-schema gauges every [`SCHEMA_GAUGES_EVERY`], and shortly after a
/// rollout changed here (other replicas' changes show at the next tick).
async fn refresh_schema_gauges(migrations: MigrationService, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SCHEMA_GAUGES_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = migrations.changes();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
            _ = changes.recv() => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(SCHEMA_GAUGES_SETTLE) => {}
                }
                changes = changes.resubscribe();
            }
        }
        if let Err(err) = migrations.status().await {
            tracing::debug!(error = %err, "cannot refresh the tenant schema gauges");
        }
    }
}

/// What a worker loop drives: the provisioning engine (runs) or the rollout engine
/// (tenants of the running rollout).
pub(crate) trait Worker: Send + 'static {
    /// Takes one piece of work and does it; whether there was one.
    fn work_once(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, tenantd_domain::Error>> + Send;
    /// Resolves when the worker should look for work again.
    fn idle(&self) -> impl Future<Output = ()> + Send;
}

impl Worker for Engine {
    fn work_once(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, tenantd_domain::Error>> + Send {
        Engine::work_once(self, name)
    }

    fn idle(&self) -> impl Future<Output = ()> + Send {
        Engine::idle(self)
    }
}

impl Worker for RolloutEngine {
    fn work_once(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<bool, tenantd_domain::Error>> + Send {
        RolloutEngine::work_once(self, name)
    }

    fn idle(&self) -> impl Future<Output = ()> + Send {
        RolloutEngine::idle(self)
    }
}

/// One `what` worker: takes work one piece after another, idles until woken or the poll
/// interval passes, and stops between pieces once `stop` is cancelled.
pub(crate) async fn work(
    what: &'static str,
    worker: impl Worker,
    name: String,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match worker.work_once(&name).await {
            Ok(true) => {
                failing = false;
                continue;
            }
            Ok(false) => failing = false,
            Err(err) => {
                // Once per outage, not once per poll.
                if !failing {
                    tracing::warn!(worker = %name, error = %err, "{what} worker cannot work; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = worker.idle() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The deadline sweeper: cancels overdue runs (with compensation) every `interval`.
async fn sweep(provisioning: ProvisioningService, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match provisioning.cancel_overdue().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(cancelled = n, "sweeper cancelled overdue provisioning runs"),
            Err(err) => tracing::warn!(error = %err, "provisioning sweep failed"),
        }
    }
}
