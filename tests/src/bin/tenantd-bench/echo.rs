//! `tenantd-bench echo`: the gRPC floor. A bare tonic server answering one unary call
//! (`grpc.health.v1.Health/Check`) over mTLS, with tenantd's own TLS setup (the same
//! rustls configuration, client-certificate verifier, concurrent-handshake acceptor with
//! tenantd's default connection limits, and the caller identified once per connection) and
//! nothing else: no layers, no store. It prints `listening ADDR` on stderr once it listens.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;
use tenantd_server::config::{Config, Environment, TlsSource};
use tenantd_server::identity::Identified;
use tenantd_server::limits::ConnectionGate;
use tenantd_server::metrics::LimitMetrics;
use tenantd_server::tls::{AcceptLimits, ReloadableTls, incoming};
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
    // tenantd's defaults, from the one place they are declared.
    let limits = Config::load(
        ["tenantd"],
        &Environment::from_pairs(std::iter::empty::<(String, String)>()),
    )?
    .limits;
    let metrics = LimitMetrics::register(&prometheus::Registry::new())?;
    let accept = AcceptLimits {
        connections: ConnectionGate::new(limits.max_connections, &metrics),
        handshakes: limits.max_handshakes,
        handshakes_per_peer: limits.max_handshakes_per_peer,
        handshake_timeout: limits.handshake_timeout,
        metrics,
    };
    let (streams, accepting) = incoming(listener, tls, accept, stop.clone());
    let trust_domain: Arc<str> = "tenantd.local".into();
    let streams = streams.map(move |accepted| {
        accepted.map(|(stream, slot)| Identified::new(stream, slot, &trust_domain, None))
    });
    tokio::spawn(accepting);
    Server::builder()
        .add_service(health)
        .serve_with_incoming(streams)
        .await?;
    Ok(())
}
