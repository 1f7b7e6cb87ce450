//! The `tenantd` binary: parses the command line and runs the chosen subcommand. Errors end
//! the process with one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use tenantd_adapters::crypto::KeyRing;
use tenantd_domain::{Principal, TenantId};
use tenantd_server::config::{
    self, CertsCommand, Command, Environment, IdentityArgs, KeysCommand, LoadError, Settings,
    Store, TenantMigrationsCommand,
};
use tenantd_server::{App, Config, devcerts, install_crypto_provider, telemetry};

fn main() -> ExitCode {
    let cli = match config::parse(std::env::args_os(), &Environment::process()) {
        Ok(cli) => cli,
        Err(LoadError::Cli(err)) => err.exit(),
        Err(LoadError::Config(err)) => {
            eprintln!("tenantd: {err}");
            return ExitCode::FAILURE;
        }
    };
    install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tenantd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Migrate(args) => runtime.block_on(migrate(args)),
        Command::Keys(KeysCommand::Generate { id }) => {
            println!(
                "TENANTD_ENCRYPTION_KEYS={}\nTENANTD_BLIND_INDEX_KEY={}",
                KeyRing::generate_entry(&id),
                KeyRing::generate_blind_index_key()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Rewrap { serve, batch_size }) => {
            runtime.block_on(rewrap(serve, batch_size))
        }
        Command::Certs(CertsCommand::Generate {
            dev_certs_dir,
            trust_domain,
            force,
        }) => devcerts::ensure(&dev_certs_dir, &trust_domain, force).map(|(_, generated)| {
            let verb = if generated { "wrote" } else { "kept existing" };
            println!(
                "{verb} development certificates in {}",
                dev_certs_dir.display()
            );
        }),
        Command::TenantMigrations(TenantMigrationsCommand::List(settings)) => {
            list_tenant_migrations(settings)
        }
        Command::TenantMigrations(TenantMigrationsCommand::Status(settings)) => {
            runtime.block_on(tenant_migration_status(settings))
        }
        Command::Certs(CertsCommand::Issue {
            dev_certs_dir,
            trust_domain,
            identity,
        }) => issue(&dev_certs_dir, &trust_domain, &identity),
    };
    telemetry::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tenantd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The validated configuration of `settings`, with logging set up as it says.
fn configure(settings: Settings) -> anyhow::Result<Config> {
    let config = Config::resolve(settings)?;
    telemetry::init(config.server.log_format, &config.server.log);
    Ok(config)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let config = configure(settings)?;
    let in_memory = config.store == Store::Memory;
    let app = App::build(config).await?;
    let addr = app.grpc_addr()?;
    if in_memory {
        tracing::warn!(
            "embedded mode: no database is configured, so tenants live in memory and are lost when tenantd stops"
        );
    }
    tracing::info!(grpc = %addr, metrics = %app.metrics_addr()?, "tenantd listening");
    if let Some(certs) = app.dev_certs() {
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        println!(
            "Call it with grpcurl (mutual TLS with the development admin certificate):\n  grpcurl -cacert {} -cert {} -key {} {host} list",
            certs.ca_cert().display(),
            certs.admin_cert().display(),
            certs.admin_key().display(),
        );
    }
    app.run_until(shutdown_signal()).await
}

fn issue(dir: &std::path::Path, trust_domain: &str, identity: &IdentityArgs) -> anyhow::Result<()> {
    let (path, name) = match (&identity.tenant, &identity.service) {
        (Some(tenant), _) => {
            let id: TenantId = tenant
                .parse()
                .map_err(|_| anyhow::anyhow!("tenant: {tenant:?} is not a tenant id (UUIDv7)"))?;
            (format!("tenant/{id}"), format!("tenant-{id}"))
        }
        (None, Some(service)) => (format!("service/{service}"), format!("service-{service}")),
        (None, None) => ("admin".to_owned(), "admin".to_owned()),
    };
    let spiffe_id = format!("spiffe://{trust_domain}/{path}");
    if Principal::from_spiffe_id(&spiffe_id, trust_domain).is_none() {
        anyhow::bail!("{spiffe_id} is not a valid tenantd identity");
    }
    let (cert, key) = devcerts::issue(dir, &spiffe_id, &name)?;
    println!(
        "{spiffe_id}\n  certificate: {}\n  key:         {}",
        cert.display(),
        key.display()
    );
    Ok(())
}

async fn rewrap(settings: Settings, batch_size: usize) -> anyhow::Result<()> {
    let config = configure(settings)?;
    let rewrapped = tenantd_server::wiring::rewrap(&config, batch_size).await?;
    println!(
        "rewrapped {} data keys with the primary key; sealed {} contact emails, {} tenant user emails and {} unclaimed first API keys with their tenant's data key",
        rewrapped.data_keys,
        rewrapped.contact_emails,
        rewrapped.user_emails,
        rewrapped.initial_keys
    );
    Ok(())
}

fn list_tenant_migrations(settings: Settings) -> anyhow::Result<()> {
    let config = configure(settings)?;
    let schemas = &config.tenant_schemas;
    match &schemas.migrations_dir {
        Some(dir) => println!("tenant migrations in {}:", dir.display()),
        None => println!("tenant migrations (built-in example set):"),
    }
    println!("{:>7}  {:<40}  sha256", "version", "name");
    for migration in schemas.migrations.migrations() {
        println!(
            "{:>7}  {:<40}  {}",
            migration.version,
            migration.name,
            migration.checksum_hex()
        );
    }
    Ok(())
}

async fn tenant_migration_status(settings: Settings) -> anyhow::Result<()> {
    let config = configure(settings)?;
    let (status, active) = tenantd_server::wiring::tenant_migration_status(&config).await?;
    println!("newest migration: {}", status.newest);
    println!("{:>7}  tenants", "version");
    for (version, tenants) in &status.versions {
        let mark = if *version < status.newest {
            "  (behind)"
        } else {
            ""
        };
        println!("{version:>7}  {tenants}{mark}");
    }
    println!("behind the newest: {}", status.behind());
    match active {
        Some(rollout) => {
            let all = rollout.counts.all();
            println!(
                "rollout {} {} to version {}: {} of {} tenants done, {} failed, {} pending",
                rollout.id,
                rollout.state,
                rollout.spec.target_version,
                all.succeeded + all.skipped,
                all.total(),
                all.failed,
                all.pending + all.running
            );
        }
        None => println!("no rollout running or paused"),
    }
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let config = configure(settings)?;
    tenantd_server::wiring::migrate(&config).await?;
    println!("migrations applied");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
