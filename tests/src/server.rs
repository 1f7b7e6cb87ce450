//! The test server: the real tenantd server started in-process on free ports with freshly
//! generated certificates (its own per test, so tests share nothing), on the embedded
//! store or on a PostgreSQL scratch schema, configured from the real CLI's defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tenantd_adapters::crypto::KeyRing;
use tenantd_adapters::postgres::PgSettings;
use tenantd_adapters::postgres::testing::ScratchSchema;
use tenantd_application::{Providers, ProvisioningSettings};
use tenantd_domain::provisioning::RetryPolicy;
use tenantd_server::config::{Config, Environment, LogFormat, Secret, Store};
use tenantd_server::devcerts::DevCerts;
use tenantd_server::proto::event_service_client::EventServiceClient;
use tenantd_server::proto::migration_service_client::MigrationServiceClient;
use tenantd_server::proto::plan_service_client::PlanServiceClient;
use tenantd_server::proto::provisioning_service_client::ProvisioningServiceClient;
use tenantd_server::proto::tenant_service_client::TenantServiceClient;
use tenantd_server::proto::{GetTenantRequest, Tenant, TenantStatus};
use tenantd_server::{App, install_crypto_provider, telemetry};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Identity};

use crate::{admin_channel, channel, create, settle};

/// The configuration a test server starts from: the real CLI's defaults (in an empty
/// environment), on free loopback ports, with development certificates (and exports) in `certs_dir`, a
/// short grace and health probe, and [`fast_provisioning`].
///
/// # Errors
/// When the CLI refuses these settings.
pub fn test_config(certs_dir: &Path) -> anyhow::Result<Config> {
    let certs = certs_dir.display().to_string();
    let exports = certs_dir.join("exports").display().to_string();
    let argv = [
        "tenantd",
        "--export-dir",
        &exports,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--dev-certs-dir",
        &certs,
        "--shutdown-grace-seconds",
        "5",
        "--health-probe-interval-ms",
        "200",
    ];
    let mut config = Config::load(argv, &Environment::default())?;
    config.provisioning = fast_provisioning();
    Ok(config)
}

/// The tenant schema and rollout settings the real CLI makes of `args` (say,
/// `["--tenant-migrations-dir", dir]`), applied to `config`.
///
/// # Errors
/// When the CLI refuses them (the error names the setting, or the migration file).
pub fn with_schema_args(mut config: Config, args: &[&str]) -> anyhow::Result<Config> {
    // A database so that tenant databases may be named (only these settings are taken).
    let keys = TestKeys::generate();
    let store = [
        "--database-url",
        "postgres://127.0.0.1/unused",
        "--encryption-keys",
        &keys.encryption,
        "--blind-index-key",
        &keys.blind_index,
    ];
    let command_line = std::iter::once("tenantd")
        .chain(store)
        .chain(args.iter().copied());
    let parsed = Config::load(command_line, &Environment::default())?;
    config.tenant_schemas = parsed.tenant_schemas;
    config.rollouts = parsed.rollouts;
    Ok(config)
}

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// PostgreSQL, in a scratch schema of the test database dropped after the test.
    Postgres,
}

/// Expands each named `async fn(TestServer)` into two tests: `in_memory::NAME` and
/// `on_postgres::NAME`, each on a fresh server of that backend.
#[macro_export]
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let server = $crate::TestServer::start($crate::Backend::Memory).await.expect("server");
                    super::$test(server).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let server = $crate::TestServer::start($crate::Backend::Postgres).await.expect("server");
                    super::$test(server).await;
                }
            )*
        }
    };
}

/// A running server and the certificates to reach it.
#[derive(Debug)]
pub struct TestServer {
    /// gRPC address (127.0.0.1, random port).
    pub grpc_addr: SocketAddr,
    /// Metrics address (127.0.0.1, random port).
    pub metrics_addr: SocketAddr,
    /// The development certificates the server uses (CA, server, admin client).
    pub certs: DevCerts,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    schema: Option<ScratchSchema>,
}

impl TestServer {
    /// Starts a server on `backend`.
    ///
    /// # Errors
    /// When the server cannot be built (or PostgreSQL is unreachable).
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, |config| config).await
    }

    /// Starts a server on `backend` with its configuration passed through `adjust` first.
    ///
    /// # Errors
    /// When the server cannot be built (or PostgreSQL is unreachable).
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(Config) -> Config,
    ) -> anyhow::Result<Self> {
        Self::start_full(backend, adjust, None).await
    }

    /// Starts a server on `backend` whose provisioning providers pass through `wrap` (the
    /// failure-injecting decorators of [`faults`]).
    ///
    /// # Errors
    /// When the server cannot be built (or PostgreSQL is unreachable).
    pub async fn start_with_providers(
        backend: Backend,
        adjust: impl FnOnce(Config) -> Config,
        wrap: impl FnOnce(Providers) -> Providers + Send + 'static,
    ) -> anyhow::Result<Self> {
        Self::start_full(backend, adjust, Some(Box::new(wrap))).await
    }

    async fn start_full(
        backend: Backend,
        adjust: impl FnOnce(Config) -> Config,
        wrap: Option<Box<dyn FnOnce(Providers) -> Providers + Send>>,
    ) -> anyhow::Result<Self> {
        install_crypto_provider();
        if std::env::var_os("TEST_LOG").is_some() {
            telemetry::init(LogFormat::Text, "info");
        }
        let dir = tempfile::tempdir()?;
        let schema = match backend {
            Backend::Memory => None,
            Backend::Postgres => Some(ScratchSchema::create().await.map_err(anyhow::Error::msg)?),
        };
        let mut config = test_config(&dir.path().join("certs"))?;
        if let Some(schema) = &schema {
            config.store = postgres_store(&schema.url());
            config.tenants.schema_prefix = schema.tenant_schema_prefix();
        }
        let config = adjust(config);
        let mut builder = App::builder(config);
        if let Some(wrap) = wrap {
            builder = builder.wrap_providers(wrap);
        }
        let app = builder.build().await?;
        let grpc_addr = app.grpc_addr()?;
        let metrics_addr = app.metrics_addr()?;
        let certs = app
            .dev_certs()
            .context("embedded mode has dev certs")?
            .clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _sender_dropped = stopped.await;
        }));
        Ok(Self {
            grpc_addr,
            metrics_addr,
            certs,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            schema,
        })
    }

    /// Starts a server on an existing scratch `schema` (say, one a stopped server handed
    /// back) with the contact-email `keys`; the server keeps the schema alive.
    ///
    /// # Errors
    /// When the server cannot be built.
    pub async fn start_on_schema(schema: ScratchSchema, keys: &TestKeys) -> anyhow::Result<Self> {
        Self::start_on_schema_with(schema, keys, |config| config).await
    }

    /// [`TestServer::start_on_schema`] with the configuration passed through `adjust`.
    ///
    /// # Errors
    /// When the server cannot be built.
    pub async fn start_on_schema_with(
        schema: ScratchSchema,
        keys: &TestKeys,
        adjust: impl FnOnce(Config) -> Config,
    ) -> anyhow::Result<Self> {
        let store = postgres_store_with(&schema.url(), keys);
        let prefix = schema.tenant_schema_prefix();
        let mut server = Self::start_with(Backend::Memory, |mut config| {
            config.store = store;
            config.tenants.schema_prefix = prefix;
            adjust(config)
        })
        .await?;
        server.schema = Some(schema);
        Ok(server)
    }

    /// A MigrationService client as admin.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn migrations(&self) -> anyhow::Result<MigrationServiceClient<Channel>> {
        Ok(MigrationServiceClient::new(self.admin_channel().await?))
    }

    /// The scratch schema of a PostgreSQL-backed server.
    pub fn schema(&self) -> Option<&ScratchSchema> {
        self.schema.as_ref()
    }

    /// A channel presenting the admin client certificate.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn admin_channel(&self) -> anyhow::Result<Channel> {
        admin_channel(self.grpc_addr, &self.certs).await
    }

    /// A channel trusting the server's CA and presenting `identity`, if any.
    ///
    /// # Errors
    /// When the connection fails (with TLS 1.3 a refused client certificate usually only
    /// shows on the first RPC).
    pub async fn channel(&self, identity: Option<Identity>) -> anyhow::Result<Channel> {
        channel(self.grpc_addr, &self.certs, identity).await
    }

    /// A TenantService client as admin.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn tenants(&self) -> anyhow::Result<TenantServiceClient<Channel>> {
        Ok(TenantServiceClient::new(self.admin_channel().await?))
    }

    /// A PlanService client as admin.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn plans(&self) -> anyhow::Result<PlanServiceClient<Channel>> {
        Ok(PlanServiceClient::new(self.admin_channel().await?))
    }

    /// An EventService client as admin.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn events(&self) -> anyhow::Result<EventServiceClient<Channel>> {
        Ok(EventServiceClient::new(self.admin_channel().await?))
    }

    /// A ProvisioningService client as admin.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn provisioning(&self) -> anyhow::Result<ProvisioningServiceClient<Channel>> {
        Ok(ProvisioningServiceClient::new(self.admin_channel().await?))
    }

    /// Creates `tenant`, waits until its provisioning run settles and returns the tenant as
    /// read then; fails unless it is ACTIVE.
    ///
    /// # Errors
    /// The server's status, a run that did not succeed, or no end within 30 seconds.
    pub async fn create_active(&self, tenant: Tenant) -> anyhow::Result<Tenant> {
        let mut tenants = self.tenants().await?;
        let created = create(&mut tenants, tenant).await?;
        let run = settle(&mut self.provisioning().await?, &created.tenant_id).await?;
        let read = tenants
            .get_tenant(GetTenantRequest {
                tenant_id: created.tenant_id.clone(),
            })
            .await?
            .into_inner()
            .tenant
            .context("no tenant in response")?;
        anyhow::ensure!(
            read.status() == TenantStatus::Active,
            "tenant {} is {:?} after its run ended {:?}",
            read.slug,
            read.status(),
            run.state()
        );
        Ok(read)
    }

    /// The body of `GET /metrics`.
    ///
    /// # Errors
    /// When the request fails or the status is not 200.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        scrape_metrics(self.metrics_addr).await
    }

    /// Signals shutdown and waits for the server to stop; hands back the scratch schema
    /// (of a PostgreSQL-backed server) so a test can inspect what was left in it.
    ///
    /// # Errors
    /// When the server reports an error while stopping.
    pub async fn stop(mut self) -> anyhow::Result<Option<ScratchSchema>> {
        if let Some(stop) = self.stop.take() {
            let _already_stopped = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(self.schema.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Provisioning tuned for tests: quick polls and retries, a short lease.
pub fn fast_provisioning() -> ProvisioningSettings {
    ProvisioningSettings {
        workers: 4,
        lease: Duration::from_secs(3),
        poll_interval: Duration::from_millis(50),
        step_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            base: chrono::Duration::milliseconds(20),
            max_delay: chrono::Duration::milliseconds(200),
            max_attempts: 5,
        },
        run_timeout: Duration::from_mins(10),
        sweep_interval: Duration::from_millis(200),
    }
}

/// Contact-email keys for a test: fresh and random, shared by the servers of one test.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// `id:base64` entries, the first sealing.
    pub encryption: String,
    /// The blind-index key.
    pub blind_index: String,
}

impl TestKeys {
    /// One fresh key with id `k1`.
    pub fn generate() -> Self {
        Self::with_ids(&["k1"])
    }

    /// One fresh key per id, the first sealing.
    pub fn with_ids(ids: &[&str]) -> Self {
        Self {
            encryption: ids
                .iter()
                .map(|id| KeyRing::generate_entry(id))
                .collect::<Vec<_>>()
                .join(","),
            blind_index: KeyRing::generate_blind_index_key(),
        }
    }

    /// The same keys as environment variables for a `tenantd` process.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("TENANTD_ENCRYPTION_KEYS", self.encryption.clone()),
            ("TENANTD_BLIND_INDEX_KEY", self.blind_index.clone()),
        ]
    }
}

/// The PostgreSQL store settings tests use for `url`, with fresh random keys.
pub fn postgres_store(url: &str) -> Store {
    postgres_store_with(url, &TestKeys::generate())
}

/// The PostgreSQL store settings tests use for `url` and `keys`.
pub fn postgres_store_with(url: &str, keys: &TestKeys) -> Store {
    Store::Postgres {
        url: Secret::new(url),
        pool: PgSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        },
        background: PgSettings {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        },
        encryption_keys: Secret::new(keys.encryption.clone()),
        blind_index_key: Secret::new(keys.blind_index.clone()),
    }
}

/// The `/metrics` text of the server whose metrics listen at `addr`.
///
/// # Errors
/// When the endpoint cannot be reached or does not answer 200.
pub async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}: {body}");
    Ok(body)
}

/// GETs `path` from the plain-HTTP listener at `addr` (the metrics listener): the status
/// code and the body.
///
/// # Errors
/// When the listener cannot be reached or the answer is not HTTP/1.1.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header/body separator")?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP/1.1 answer: {head}"))?;
    Ok((status, body.to_owned()))
}
