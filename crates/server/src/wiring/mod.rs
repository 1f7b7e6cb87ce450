//! The composition root: the one place that picks an adapter for every port. Swapping an
//! adapter is a change here and nowhere else. The admin commands that open the store
//! without serving it are in `admin.rs`; the health checks of the dependencies picked
//! here, in `checks.rs`.

mod admin;
mod checks;

pub use admin::{migrate, rewrap, tenant_migration_status};

use std::sync::Arc;

use anyhow::Context as _;
use prost::Message as _;
use tenantd_adapters::archives::FsExportArchives;
use tenantd_adapters::cached_plans::{CachedPlans, DEFAULT_PLAN_TTL};
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::kafka::{KafkaPublisher, KafkaSettings};
use tenantd_adapters::memory::{
    LocalRateLimiter, MemoryBilling, MemoryDns, MemoryPlanRepository, MemoryStore,
    MemoryTenantDatabases,
};
use tenantd_adapters::postgres::{
    self, PgBilling, PgDns, PgPlanRepository, PgStore, PgTenantDatabases,
};
use tenantd_adapters::redis::local::Invalidated;
use tenantd_adapters::redis::{
    ApiKeyTier, CacheObserver, CachedApiKeys, CachedPurges, CachedRuns, CachedTenants, Redis,
    RedisCache, RedisRateLimiter, RedisSettings, TenantTier,
};
use tenantd_adapters::system::{OsRandom, SystemClock, UuidV7Generator};
use tenantd_application::exports::{
    ExportEngine, ExportObserver, ExportService, ExportSettings, ExportSources,
};
use tenantd_application::{
    ApiKeyService, AuditService, Engine, EventService, MigrationObserver, MigrationService,
    OutboxRelay, PlacementPolicy, PlanService, Providers, ProvisioningObserver,
    ProvisioningService, PurgeEngine, PurgeObserver, PurgeService, PurgeSettings, PurgeTargets,
    RateLimitService, RelayObserver, RelaySettings, RetentionObserver, RetentionService,
    RolloutEngine, RolloutSignals, Signals, StepPorts, TenantService, TenantSettings,
};
use tenantd_domain::ports::{
    ApiKeyRepository, AuditLog, Clock as _, DataKeyRepository, EmailCipher, EventLog,
    ExportRepository, InitialKeyStore, Outbox, PlanRepository, ProvisioningRepository,
    PurgeRepository, RateLimiter, Retention, RolloutRepository, SecretSealer, TenantDatabases,
    TenantRepository, TenantSchemaDumps, TenantSchemaRepository,
};
use tenantd_domain::tenant_schema::DEFAULT_TENANT_DATABASE;
use tenantd_domain::{ApiKey, ApiKeyId, Event, Tenant};

use self::checks::{Cache, Database, Publisher};
use crate::config::{Config, KafkaConfig, Store};
use crate::health::DependencyCheck;
use crate::metrics::PoolStats;
use crate::proto;

/// The use-case services the gRPC handlers call, and the dependencies to probe.
#[derive(Clone)]
pub struct Services {
    /// Tenant lifecycle.
    pub tenants: TenantService,
    /// Plan catalogue.
    pub plans: PlanService,
    /// Event log.
    pub events: EventService,
    /// Tenant API keys.
    pub api_keys: Arc<ApiKeyService>,
    /// Reading the audit log.
    pub audit: AuditService,
    /// Provisioning runs: reading, watching, cancelling, retrying.
    pub provisioning: ProvisioningService,
    /// The provisioning engine the workers run.
    pub engine: Engine,
    /// Purges: PurgeTenant and GetPurge.
    pub purges: PurgeService,
    /// The purge engine the purge workers and the sweeper run.
    pub purge_engine: PurgeEngine,
    /// Exports: ExportTenant, GetExport, DownloadExport.
    pub exports: ExportService,
    /// The export engine the export workers and the sweeper run.
    pub export_engine: ExportEngine,
    /// Tenant-schema rollouts and versions.
    pub migrations: MigrationService,
    /// The rollout engine the rollout workers run.
    pub rollouts: RolloutEngine,
    /// Where the write-behind audit writer appends.
    pub audit_log: Arc<dyn AuditLog>,
    /// Dependencies the health service reports.
    pub checks: Vec<Arc<dyn DependencyCheck>>,
    /// The database pool's (open, idle, maximum) connections, when there is a database.
    pub db_pool: Option<PoolStats>,
    /// Per-principal rate limits.
    pub rate_limits: RateLimitService,
    /// The event relay, when Kafka is configured.
    pub relay: Option<Relay>,
    /// Trimming events and audit records past their retention.
    pub retention: RetentionService,
    /// What the in-process cache tiers follow, when there are tiers.
    pub invalidations: Option<Invalidations>,
}

/// The subscription the in-process cache tiers are invalidated through.
#[derive(Clone)]
pub struct Invalidations {
    /// The Redis to subscribe to.
    pub url: String,
    /// Its channel.
    pub channel: String,
    /// The tiers it invalidates.
    pub tiers: Vec<Arc<dyn Invalidated>>,
}

impl std::fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidations")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// The event relay and the publisher it drives.
#[derive(Clone)]
pub struct Relay {
    /// The use case.
    pub relay: OutboxRelay,
    /// The Kafka publisher (to create the topic and flush at shutdown).
    pub publisher: Arc<KafkaPublisher>,
    /// Its settings.
    pub config: KafkaConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where the adapters report what they do (the server's metrics).
#[derive(Clone)]
pub struct Observers {
    /// The provisioning engine.
    pub provisioning: Arc<dyn ProvisioningObserver>,
    /// The cache.
    pub cache: Arc<dyn CacheObserver>,
    /// The event relay.
    pub relay: Arc<dyn RelayObserver>,
    /// Tenant-schema rollouts.
    pub migrations: Arc<dyn MigrationObserver>,
    /// Retention.
    pub retention: Arc<dyn RetentionObserver>,
    /// Purges.
    pub purges: Arc<dyn PurgeObserver>,
    /// Exports.
    pub exports: Arc<dyn ExportObserver>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Adapters to use instead of (or around) the ones the configuration picks: how tests
/// inject failures (a decorator per provider port) without the production wiring knowing.
#[derive(Default)]
pub struct Overrides {
    /// Rewraps the provisioning providers before the engine gets them.
    pub providers: Option<Box<dyn FnOnce(Providers) -> Providers + Send>>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("providers", &self.providers.is_some())
            .finish()
    }
}

/// One adapter per port.
struct Ports {
    tenants: Arc<dyn TenantRepository>,
    runs: Arc<dyn ProvisioningRepository>,
    purges: Arc<dyn PurgeRepository>,
    exports: Arc<dyn ExportRepository>,
    /// What the tenant databases' schemas hold (the same adapter as `providers.databases`).
    dumps: Arc<dyn TenantSchemaDumps>,
    initial_keys: Arc<dyn InitialKeyStore>,
    cipher: Arc<dyn EmailCipher>,
    sealer: Arc<dyn SecretSealer>,
    providers: Providers,
    api_keys: Arc<dyn ApiKeyRepository>,
    audit: Arc<dyn AuditLog>,
    events: Arc<dyn EventLog>,
    /// The outbox as calls reach it (dead letters).
    outbox: Arc<dyn Outbox>,
    plans: Arc<dyn PlanRepository>,
    checks: Vec<Arc<dyn DependencyCheck>>,
    db_pool: Option<PoolStats>,
    limiter: Arc<dyn RateLimiter>,
    schemas: Arc<dyn TenantSchemaRepository>,
    rollouts: Arc<dyn RolloutRepository>,
    invalidations: Option<Invalidations>,
    /// What background work uses.
    background: Background,
}

/// The adapters background work uses (provisioning workers, the rollout engine, the
/// outbox relay, the audit writer): on PostgreSQL, a store on a pool apart from the one
/// calls use, so background work never takes the connections calls wait for; in memory,
/// the same store.
struct Background {
    tenants: Arc<dyn TenantRepository>,
    runs: Arc<dyn ProvisioningRepository>,
    purges: Arc<dyn PurgeRepository>,
    exports: Arc<dyn ExportRepository>,
    events: Arc<dyn EventLog>,
    initial_keys: Arc<dyn InitialKeyStore>,
    api_keys: Arc<dyn ApiKeyRepository>,
    audit: Arc<dyn AuditLog>,
    outbox: Arc<dyn Outbox>,
    schemas: Arc<dyn TenantSchemaRepository>,
    rollouts: Arc<dyn RolloutRepository>,
    retention: Arc<dyn Retention>,
    data_keys: Arc<dyn DataKeyRepository>,
}

impl Background {
    /// Every background port on one store.
    fn on<S>(store: &S) -> Self
    where
        S: TenantRepository
            + ProvisioningRepository
            + PurgeRepository
            + ExportRepository
            + EventLog
            + InitialKeyStore
            + ApiKeyRepository
            + AuditLog
            + Outbox
            + TenantSchemaRepository
            + RolloutRepository
            + Retention
            + DataKeyRepository
            + Clone
            + 'static,
    {
        Self {
            tenants: Arc::new(store.clone()),
            runs: Arc::new(store.clone()),
            purges: Arc::new(store.clone()),
            exports: Arc::new(store.clone()),
            events: Arc::new(store.clone()),
            initial_keys: Arc::new(store.clone()),
            api_keys: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            outbox: Arc::new(store.clone()),
            schemas: Arc::new(store.clone()),
            rollouts: Arc::new(store.clone()),
            retention: Arc::new(store.clone()),
            data_keys: Arc::new(store.clone()),
        }
    }
}

/// Builds the services for `config`: PostgreSQL (connected and migrated) when a database
/// is configured, else every port in memory (the embedded default); Redis in front of it
/// and Kafka behind the outbox when configured. Adapters report to `observers`; the
/// use cases share `signals`; `overrides` replace what they name.
///
/// # Errors
/// One line naming the setting when a dependency is unusable (the database unreachable or
/// not migratable, a malformed Redis URL, a Kafka configuration librdkafka refuses).
pub async fn build(
    config: &Config,
    observers: Observers,
    signals: Signals,
    rollout_signals: RolloutSignals,
    overrides: Overrides,
) -> anyhow::Result<Services> {
    let mut ports = ports(config).await?;
    with_redis(config, &observers, &mut ports)?;
    let relay = relay(config, &observers, &mut ports)?;
    let (clock, ids) = (Arc::new(SystemClock), Arc::new(UuidV7Generator));
    let api_keys = Arc::new(api_key_service(&ports, clock.clone(), ids.clone()));
    let providers = match overrides.providers {
        Some(wrap) => wrap(ports.providers),
        None => ports.providers,
    };
    let placement = Arc::new(placement_policy(config));
    let databases = providers.databases.clone();
    let background = &ports.background;
    let steps = step_ports(
        background,
        (ports.plans.clone(), ports.sealer.clone()),
        providers,
        placement.clone(),
    );
    let (purges, purge_engine) = purge_services(
        config,
        (ports.purges.clone(), ports.tenants.clone()),
        background,
        &observers,
        steps.clone(),
    );
    let (exports, export_engine) = export_services(
        config,
        (ports.exports.clone(), ports.tenants.clone()),
        background,
        (ports.dumps.clone(), placement.clone()),
        &observers,
    );
    let (provisioning, engine) = provisioning_services(
        config,
        (ports.runs, ports.tenants.clone()),
        background,
        steps,
        &signals,
        observers.provisioning.clone(),
    );
    let (migrations, rollouts) = schema_services(
        config,
        (ports.rollouts.clone(), ports.schemas.clone()),
        ports.background.rollouts.clone(),
        databases,
        placement.clone(),
        &observers,
        rollout_signals,
    );
    Ok(Services {
        rate_limits: RateLimitService::new(
            ports.limiter.clone(),
            ports.tenants.clone(),
            ports.plans.clone(),
            config.rate_limits,
        ),
        relay,
        retention: RetentionService::new(
            ports.background.retention.clone(),
            clock.clone(),
            observers.retention.clone(),
            config.retention.settings,
        ),
        migrations,
        rollouts,
        provisioning,
        engine,
        purges,
        purge_engine,
        exports,
        export_engine,
        api_keys,
        tenants: TenantService::new(
            ports.tenants,
            ports.plans.clone(),
            clock,
            ids,
            tenant_settings(config),
            placement,
        )
        .with_signals(signals),
        plans: PlanService::new(ports.plans),
        events: EventService::new(ports.events, ports.outbox),
        audit: AuditService::new(ports.audit),
        audit_log: ports.background.audit,
        checks: ports.checks,
        db_pool: ports.db_pool,
        invalidations: ports.invalidations,
    })
}

/// ApiKeyService on the calls' stores, handing out first keys (their secrets opened with
/// the tenants' data keys).
fn api_key_service(
    ports: &Ports,
    clock: Arc<SystemClock>,
    ids: Arc<UuidV7Generator>,
) -> ApiKeyService {
    ApiKeyService::new(
        ports.api_keys.clone(),
        ports.tenants.clone(),
        ports.plans.clone(),
        clock,
        ids,
        Arc::new(OsRandom),
    )
    .with_initial_keys(
        ports.initial_keys.clone(),
        ports.sealer.clone(),
        ports.background.data_keys.clone(),
    )
}

/// The tenant use cases' settings of `config`.
fn tenant_settings(config: &Config) -> TenantSettings {
    TenantSettings {
        deletion_retention: config.tenants.deletion_retention,
        provisioning_timeout: config.provisioning.run_timeout(),
    }
}

/// What the provisioning (and purge) steps use: `providers`, background work's stores, the
/// plans and the sealer of first keys.
fn step_ports(
    background: &Background,
    (plans, sealer): (Arc<dyn PlanRepository>, Arc<dyn SecretSealer>),
    providers: Providers,
    placement: Arc<PlacementPolicy>,
) -> StepPorts {
    StepPorts {
        providers,
        initial_keys: background.initial_keys.clone(),
        api_keys: background.api_keys.clone(),
        plans,
        sealer,
        data_keys: background.data_keys.clone(),
        secrets: Arc::new(OsRandom),
        ids: Arc::new(UuidV7Generator),
        schemas: background.schemas.clone(),
        placement,
    }
}

/// ProvisioningService on the calls' stores, and the engine on background work's.
fn provisioning_services(
    config: &Config,
    (runs, tenants): (Arc<dyn ProvisioningRepository>, Arc<dyn TenantRepository>),
    background: &Background,
    steps: StepPorts,
    signals: &Signals,
    observer: Arc<dyn ProvisioningObserver>,
) -> (ProvisioningService, Engine) {
    let (clock, ids) = (Arc::new(SystemClock), Arc::new(UuidV7Generator));
    let engine = Engine::new(
        background.runs.clone(),
        background.tenants.clone(),
        steps,
        clock.clone(),
        ids.clone(),
        config.provisioning,
        signals.clone(),
        observer.clone(),
    );
    let service = ProvisioningService::new(
        runs,
        tenants,
        clock,
        ids,
        config.provisioning,
        signals.clone(),
        observer,
    );
    (service, engine)
}

/// PurgeService on the calls' stores, and its engine on background work's (it waits for
/// provisioning runs and deletes exports, archives in `--export-dir` included).
fn purge_services(
    config: &Config,
    (purges, tenants): (Arc<dyn PurgeRepository>, Arc<dyn TenantRepository>),
    background: &Background,
    observers: &Observers,
    steps: StepPorts,
) -> (PurgeService, PurgeEngine) {
    let purges = PurgeService::new(
        purges,
        tenants,
        Arc::new(SystemClock),
        Arc::new(UuidV7Generator),
        purge_settings(config),
        observers.purges.clone(),
    );
    let targets = PurgeTargets {
        steps,
        runs: background.runs.clone(),
        exports: background.exports.clone(),
        archives: Arc::new(FsExportArchives::new(config.exports.dir.clone())),
        data_keys: background.data_keys.clone(),
    };
    let engine = purges.engine(
        background.purges.clone(),
        background.tenants.clone(),
        targets,
    );
    (purges, engine)
}

/// ExportService on the calls' stores (archives in `--export-dir`), and its engine on
/// background work's, reading the tenant schemas with `dumps` where `placement` says.
fn export_services(
    config: &Config,
    (exports, tenants): (Arc<dyn ExportRepository>, Arc<dyn TenantRepository>),
    background: &Background,
    (dumps, placement): (Arc<dyn TenantSchemaDumps>, Arc<PlacementPolicy>),
    observers: &Observers,
) -> (ExportService, ExportEngine) {
    let sources = ExportSources {
        tenants: background.tenants.clone(),
        events: background.events.clone(),
        api_keys: background.api_keys.clone(),
        dumps,
        placement,
    };
    let provisioning = &config.provisioning;
    let settings = ExportSettings {
        workers: config.exports.workers,
        lease: provisioning.lease,
        poll_interval: provisioning.poll_interval,
        attempt_timeout: EXPORT_ATTEMPT_TIMEOUT,
        retry: provisioning.retry,
        retention: config.exports.retention,
    };
    let exports = ExportService::new(
        exports,
        Arc::new(FsExportArchives::new(config.exports.dir.clone())),
        tenants,
        Arc::new(SystemClock),
        Arc::new(UuidV7Generator),
        settings,
        observers.exports.clone(),
    );
    let engine = exports.engine(background.exports.clone(), sources);
    (exports, engine)
}

/// Longest attempt of an export: reading a large tenant schema takes longer than a step.
const EXPORT_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_mins(10);

/// The purges' settings of `config`: the engine's lease, attempt timeout, backoff and
/// polling are provisioning's.
fn purge_settings(config: &Config) -> PurgeSettings {
    let provisioning = &config.provisioning;
    PurgeSettings {
        workers: config.tenants.purge_workers,
        lease: provisioning.lease,
        poll_interval: provisioning.poll_interval,
        step_timeout: provisioning.step_timeout,
        retry: provisioning.retry,
        slug_reuse: config.tenants.slug_reuse,
        batch: PURGE_BATCH,
    }
}

/// Most tenants one purge sweep starts purging.
const PURGE_BATCH: usize = 100;

/// The adapters of every port for `config`.
async fn ports(config: &Config) -> anyhow::Result<Ports> {
    match &config.store {
        Store::Memory => Ok(memory_ports(config)),
        Store::Postgres {
            url,
            pool,
            background,
            ..
        } => postgres_ports(config, url.expose(), *pool, *background).await,
    }
}

/// Every port in memory: the embedded default.
fn memory_ports(config: &Config) -> Ports {
    // Even in memory, contact emails are kept sealed, with a key that lives and dies
    // with the process (as the data does).
    let ephemeral = KeyRing::generate("ephemeral");
    tracing::warn!(
        "embedded mode: contact emails are sealed with an ephemeral key generated at start; it is lost when tenantd stops, like the data"
    );
    let ring = Arc::new(ephemeral);
    let store = MemoryStore::with_cipher(ring.clone());
    let databases = MemoryTenantDatabases::new(config.tenant_schemas.migrations.clone());
    Ports {
        tenants: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        purges: Arc::new(store.clone()),
        exports: Arc::new(store.clone()),
        initial_keys: Arc::new(store.clone()),
        cipher: ring.clone(),
        sealer: ring,
        dumps: Arc::new(databases.clone()),
        providers: Providers {
            databases: Arc::new(databases),
            dns: Arc::new(MemoryDns::new(&config.dns.base_domain, config.dns.ingress)),
            billing: Arc::new(MemoryBilling::default()),
        },
        api_keys: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        events: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        plans: Arc::new(MemoryPlanRepository::default()),
        checks: Vec::new(),
        db_pool: None,
        invalidations: None,
        limiter: Arc::new(LocalRateLimiter::default()),
        schemas: Arc::new(store.clone()),
        background: Background::on(&store),
        rollouts: Arc::new(store),
    }
}

/// Every port on PostgreSQL at `url`: calls on a pool of `pool`, background work on one of
/// `background`.
async fn postgres_ports(
    config: &Config,
    url: &str,
    pool: postgres::PgSettings,
    background: postgres::PgSettings,
) -> anyhow::Result<Ports> {
    let ring = Arc::new(key_ring(config)?);
    let pool = postgres::connect(url, &pool)
        .await
        .context("database-url")?;
    postgres::migrate(&pool).await.context("database-url")?;
    let store = PgStore::new(pool.clone(), ring.clone());
    let background_pool = postgres::connect(url, &background)
        .await
        .context("database-url")?;
    let background_store = PgStore::sharing(background_pool.clone(), ring.clone());
    let schemas = &config.tenant_schemas;
    store
        .register_migrations(&schemas.migrations)
        .await
        .map_err(|e| anyhow::anyhow!("tenant-migrations-dir: {e}"))?;
    let adopted = store
        .adopt_unplaced(
            DEFAULT_TENANT_DATABASE,
            &config.tenants.schema_prefix,
            SystemClock.now(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("database-url: {e}"))?;
    if adopted > 0 {
        tracing::info!(
            tenants = adopted,
            "recorded the placement and schema version of tenants made before they were recorded"
        );
    }
    let databases = Arc::new(tenant_databases(
        config,
        background_pool.clone(),
        ring.clone(),
    )?);
    Ok(Ports {
        tenants: Arc::new(store.clone()),
        runs: Arc::new(store.clone()),
        purges: Arc::new(store.clone()),
        exports: Arc::new(store.clone()),
        initial_keys: Arc::new(store.clone()),
        cipher: ring.clone(),
        sealer: ring,
        dumps: databases.clone(),
        providers: Providers {
            databases,
            dns: Arc::new(PgDns::new(
                background_pool.clone(),
                &config.dns.base_domain,
                config.dns.ingress,
            )),
            billing: Arc::new(PgBilling::new(background_pool)),
        },
        api_keys: Arc::new(store.clone()),
        audit: Arc::new(store.clone()),
        events: Arc::new(store.clone()),
        outbox: Arc::new(store.clone()),
        plans: Arc::new(CachedPlans::new(
            Arc::new(PgPlanRepository::new(pool)),
            DEFAULT_PLAN_TTL,
        )),
        checks: vec![Arc::new(Database::new(store.clone()))],
        limiter: Arc::new(LocalRateLimiter::default()),
        schemas: Arc::new(store.clone()),
        rollouts: Arc::new(store.clone()),
        background: Background::on(&background_store),
        db_pool: Some(Arc::new(move || store.pool_stats())),
        invalidations: None,
    })
}

/// The MigrationService and the rollout engine over the store's ports.
fn schema_services(
    config: &Config,
    (store, schemas): (Arc<dyn RolloutRepository>, Arc<dyn TenantSchemaRepository>),
    background: Arc<dyn RolloutRepository>,
    databases: Arc<dyn TenantDatabases>,
    placement: Arc<PlacementPolicy>,
    observers: &Observers,
    rollout_signals: RolloutSignals,
) -> (MigrationService, RolloutEngine) {
    let clock = Arc::new(SystemClock);
    let ids = Arc::new(UuidV7Generator);
    let rollout_settings = config.rollouts.settings;
    let migrations = MigrationService::new(
        store,
        schemas,
        config.tenant_schemas.migrations.clone(),
        clock.clone(),
        ids.clone(),
        rollout_settings,
        rollout_signals.clone(),
        observers.migrations.clone(),
    );
    let rollouts = RolloutEngine::new(
        background,
        databases,
        placement,
        clock,
        ids,
        rollout_settings,
        rollout_signals,
        observers.migrations.clone(),
    );
    (migrations, rollouts)
}

/// Where new tenants go, as the configuration says.
fn placement_policy(config: &Config) -> PlacementPolicy {
    let schemas = &config.tenant_schemas;
    PlacementPolicy::new(
        schemas.default_placement.clone(),
        schemas.plan_placements.clone(),
        &config.tenants.schema_prefix,
    )
}

/// The tenant databases of a PostgreSQL configuration: `default` on `pool` (the control
/// plane's database, unless configured otherwise), every other one on a pool of its own,
/// connected when first used.
pub(super) fn tenant_databases(
    config: &Config,
    pool: postgres::PgPool,
    ring: Arc<KeyRing>,
) -> anyhow::Result<PgTenantDatabases> {
    let schemas = &config.tenant_schemas;
    // The built-in example seeds (and rewraps) sealed user emails; an application's own
    // schema is its own business.
    let seed: Option<Arc<dyn EmailCipher>> = schemas.built_in().then_some(ring);
    let acquire = match &config.store {
        Store::Postgres { pool, .. } => pool.acquire_timeout,
        Store::Memory => std::time::Duration::from_secs(3),
    };
    let mut databases =
        PgTenantDatabases::new(pool, schemas.migrations.clone(), seed, schemas.limits);
    for (name, url) in &schemas.databases {
        databases = databases
            .with_database(
                name,
                url.expose(),
                schemas.database_max_connections,
                acquire,
            )
            .map_err(|e| anyhow::anyhow!("tenant-database: {e}"))?;
    }
    Ok(databases)
}

/// With Redis configured: shared rate limits, and (in front of PostgreSQL) the cache of
/// tenants and API keys, with Redis as a health dependency that is not critical.
fn with_redis(config: &Config, observers: &Observers, ports: &mut Ports) -> anyhow::Result<()> {
    let Some(settings) = &config.redis else {
        return Ok(());
    };
    let redis = Redis::new(
        settings.url.expose(),
        RedisSettings {
            timeout: settings.timeout,
            key_prefix: settings.key_prefix.clone(),
            ..RedisSettings::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("redis-url: {e}"))?;
    // While Redis cannot answer, each replica limits on its own.
    ports.limiter = Arc::new(RedisRateLimiter::new(redis.clone(), ports.limiter.clone()));
    ports.checks.push(Arc::new(Cache(redis.clone())));
    if let Store::Postgres { .. } = config.store {
        let cache = RedisCache::new(redis, settings.cache_ttl, observers.cache.clone());
        let background = &mut ports.background;
        let mut tenants =
            CachedTenants::new(ports.tenants.clone(), cache.clone(), ports.cipher.clone());
        let mut runs = CachedRuns::new(ports.runs.clone(), cache.clone());
        let mut purges = CachedPurges::new(ports.purges.clone(), cache.clone());
        let mut api_keys = CachedApiKeys::new(ports.api_keys.clone(), cache.clone());
        // Background work writes through the same cache (and tiers), so its changes
        // invalidate what calls read.
        let mut background_tenants = CachedTenants::new(
            background.tenants.clone(),
            cache.clone(),
            ports.cipher.clone(),
        );
        let mut background_runs = CachedRuns::new(background.runs.clone(), cache.clone());
        let mut background_purges = CachedPurges::new(background.purges.clone(), cache.clone());
        let mut background_keys = CachedApiKeys::new(background.api_keys.clone(), cache.clone());
        if let Some(local) = settings.local {
            let tenant_tier: Arc<TenantTier> =
                TenantTier::new("tenant", local, weigh_tenant, |id| id.parse().ok());
            let key_tier: Arc<ApiKeyTier> = ApiKeyTier::new("api_key", local, weigh_key, |id| {
                uuid::Uuid::parse_str(id).ok().map(ApiKeyId)
            });
            tenants = tenants.with_local(tenant_tier.clone());
            runs = runs.with_local(tenant_tier.clone());
            purges = purges.with_local(tenant_tier.clone());
            api_keys = api_keys.with_local(key_tier.clone());
            background_tenants = background_tenants.with_local(tenant_tier.clone());
            background_runs = background_runs.with_local(tenant_tier.clone());
            background_purges = background_purges.with_local(tenant_tier.clone());
            background_keys = background_keys.with_local(key_tier.clone());
            ports.invalidations = Some(Invalidations {
                url: settings.url.expose().to_owned(),
                channel: cache.channel(),
                tiers: vec![tenant_tier, key_tier],
            });
        }
        ports.tenants = Arc::new(tenants);
        ports.runs = Arc::new(runs);
        ports.purges = Arc::new(purges);
        ports.api_keys = Arc::new(api_keys);
        background.tenants = Arc::new(background_tenants);
        background.runs = Arc::new(background_runs);
        background.purges = Arc::new(background_purges);
        background.api_keys = Arc::new(background_keys);
    } else {
        tracing::info!("redis: shared rate limits only; the embedded store needs no cache");
    }
    Ok(())
}

/// About what a tenant weighs in the in-process tier, in bytes.
fn weigh_tenant(tenant: &Tenant) -> usize {
    let labels: usize = tenant
        .labels()
        .as_map()
        .iter()
        .map(|(k, v)| k.len() + v.len() + 64)
        .sum();
    // The config's values are weighed at 64 bytes a key plus the key: an estimate.
    let config: usize = tenant.config().as_map().keys().map(|k| k.len() + 64).sum();
    1024 + tenant.display_name().as_str().len() + labels + config
}

/// About what an API key weighs in the in-process tier, in bytes.
fn weigh_key(key: &ApiKey) -> usize {
    256 + key.display_name.len() + key.scopes.iter().map(|s| s.len() + 24).sum::<usize>()
}

/// With Kafka configured: the relay from the outbox, and the publisher as a health
/// dependency that is not critical.
fn relay(
    config: &Config,
    observers: &Observers,
    ports: &mut Ports,
) -> anyhow::Result<Option<Relay>> {
    let Some(kafka) = &config.kafka else {
        return Ok(None);
    };
    let encode = Arc::new(|event: &Event| proto::TenantEvent::from(event).encode_to_vec());
    let publisher = Arc::new(
        KafkaPublisher::new(
            KafkaSettings {
                brokers: kafka.brokers.clone(),
                topic: kafka.topic.clone(),
                message_timeout: kafka.message_timeout,
                max_message_bytes: kafka.max_message_bytes,
                partitions: kafka.partitions,
                replication_factor: kafka.replication_factor,
                source: format!("urn:tenantd:{}", config.server.trust_domain),
                client_id: "tenantd".to_owned(),
            },
            encode,
        )
        .map_err(|e| anyhow::anyhow!("kafka-brokers: {e}"))?,
    );
    ports.checks.push(Arc::new(Publisher(publisher.clone())));
    Ok(Some(Relay {
        relay: OutboxRelay::new(
            ports.background.outbox.clone(),
            publisher.clone(),
            Arc::new(SystemClock),
            observers.relay.clone(),
            RelaySettings {
                batch_size: kafka.batch_size,
                // Delivery takes at most the message timeout; flushing and marking, a
                // moment.
                hold: kafka.message_timeout + std::time::Duration::from_secs(30),
                max_delivery_attempts: kafka.max_delivery_attempts,
            },
        ),
        publisher,
        config: kafka.clone(),
    }))
}

/// The key ring of a database configuration.
pub(super) fn key_ring(config: &Config) -> anyhow::Result<KeyRing> {
    let Store::Postgres {
        encryption_keys,
        blind_index_key,
        ..
    } = &config.store
    else {
        anyhow::bail!("encryption-keys: only used with a database");
    };
    KeyRing::parse(encryption_keys.expose(), blind_index_key.expose())
        .map_err(|e| anyhow::anyhow!("encryption-keys: {e}"))
}
