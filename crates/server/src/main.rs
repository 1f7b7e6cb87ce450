//! The `tenantd` binary: parses the command line and runs the chosen subcommand. Errors end
//! the process with one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser as _;
use tenantd_server::config::{CertsCommand, Cli, Command, ServeArgs, Store};
use tenantd_server::{App, Config, devcerts, install_crypto_provider, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tenantd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    telemetry::init(config.log_format, &config.log);
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

async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    telemetry::init(config.log_format, &config.log);
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
