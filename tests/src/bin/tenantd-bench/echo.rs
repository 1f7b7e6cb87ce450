//! `tenantd-bench echo`: the gRPC floor. A bare tonic server answering one unary call
//! (`grpc.health.v1.Health/Check`) over mTLS, with tenantd's own TLS setup (the same
//! rustls configuration, client-certificate verifier and concurrent-handshake acceptor) and
//! nothing else: no layers, no store. It prints `listening ADDR` on stderr once it listens.

use std::path::PathBuf;
use std::sync::Arc;

use tenantd_server::config::TlsSource;
use tenantd_server::tls::{ReloadableTls, incoming};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

/// The echo server's arguments.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// The development certificate set to serve with.
    #[arg(long)]
    pub certs_dir: PathBuf,
}

/// Serves until killed.
///
/// # Errors
/// When the certificates cannot be loaded or the port cannot be bound.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let tls = Arc::new(ReloadableTls::load(
        &TlsSource::Dev {
            dir: args.certs_dir,
        },
        "tenantd.local",
    )?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("listening {}", listener.local_addr()?);
    let (_reporter, health) = tonic_health::server::health_reporter();
    let stop = CancellationToken::new();
    let (streams, accepting) = incoming(listener, tls, stop.clone());
    tokio::spawn(accepting);
    Server::builder()
        .add_service(health)
        .serve_with_incoming(streams)
        .await?;
    Ok(())
}
