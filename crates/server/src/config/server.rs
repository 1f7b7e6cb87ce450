//! Server settings: listeners, TLS material, the SPIFFE trust domain, logging, health
//! probes and the shutdown grace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{ConfigError, millis};

/// Default directory of the embedded mode's development certificates (also the default of
/// `tenantd certs`).
pub const DEFAULT_DEV_CERTS_DIR: &str = ".tenantd/dev-certs";
/// Default SPIFFE trust domain (also the default of `tenantd certs`).
pub const DEFAULT_TRUST_DOMAIN: &str = "tenantd.local";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Listeners, TLS, identity, logging and shutdown.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, env = "TENANTD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Prometheus /metrics listen address (port 0 picks a free port).
    #[arg(long, env = "TENANTD_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Server certificate chain (PEM). With --tls-key and --tls-client-ca; without all
    /// three, development certificates are generated and used.
    #[arg(long, env = "TENANTD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "TENANTD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to.
    #[arg(long, env = "TENANTD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory of the generated development certificates.
    #[arg(long, env = "TENANTD_DEV_CERTS_DIR", default_value = DEFAULT_DEV_CERTS_DIR)]
    pub dev_certs_dir: PathBuf,
    /// SPIFFE trust domain of client identities.
    #[arg(long, env = "TENANTD_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Seconds to drain in-flight calls on shutdown.
    #[arg(long, env = "TENANTD_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// How often dependencies are probed for the health service, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_HEALTH_PROBE_INTERVAL_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub health_probe_interval_ms: u64,
    /// Log format.
    #[arg(long, env = "TENANTD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in tracing's env-filter syntax (e.g. info,tenantd_application=debug).
    #[arg(long, env = "TENANTD_LOG", default_value = "info")]
    pub log: String,
}

/// Where the server's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-provided PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// Client CA bundle.
        client_ca: PathBuf,
    },
    /// Generated development certificates in this directory (embedded mode).
    Dev {
        /// The directory.
        dir: PathBuf,
    },
}

/// The validated server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Metrics listen address (port 0 picks a free port).
    pub metrics_listen: SocketAddr,
    /// TLS material.
    pub tls: TlsSource,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Drain deadline on shutdown.
    pub shutdown_grace: Duration,
    /// Interval of the dependency health probes.
    pub health_probe_interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log: String,
}

impl ServerArgs {
    pub(super) fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let tls = match (self.tls_cert, self.tls_key, self.tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => TlsSource::Files {
                cert,
                key,
                client_ca,
            },
            (None, None, None) => TlsSource::Dev {
                dir: self.dev_certs_dir,
            },
            _ => {
                return Err(ConfigError::new(
                    "tls-cert",
                    "--tls-cert, --tls-key and --tls-client-ca must be given together",
                ));
            }
        };
        let trust_domain_ok = !self.trust_domain.is_empty()
            && self
                .trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !trust_domain_ok {
            return Err(ConfigError::new(
                "trust-domain",
                "must be a lowercase DNS name such as tenantd.local",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(ConfigError::new(
                "log",
                "is not a valid tracing filter (e.g. info,tenantd=debug)",
            ));
        }
        Ok(ServerConfig {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            tls,
            trust_domain: self.trust_domain,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            health_probe_interval: millis(self.health_probe_interval_ms),
            log_format: self.log_format,
            log: self.log,
        })
    }
}
