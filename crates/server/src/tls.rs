//! Server TLS material: mutual TLS with rustls, client certificates required and verified
//! against the configured client CA bundle.

use std::path::Path;

use anyhow::{Context as _, bail};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsSource;
use crate::devcerts::{self, DevCerts};

/// The server's TLS configuration and, in embedded mode, the development certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The tonic TLS configuration (identity + client CA).
    pub config: ServerTlsConfig,
    /// The development certificate set, when generated or reused.
    pub dev_certs: Option<DevCerts>,
}

/// Loads (or, for [`TlsSource::Dev`], generates if absent) the TLS material.
///
/// # Errors
/// One line naming the unreadable or malformed file.
pub fn load(source: &TlsSource, trust_domain: &str) -> anyhow::Result<ServerTls> {
    let (cert, key, client_ca, dev_certs) = match source {
        TlsSource::Files {
            cert,
            key,
            client_ca,
        } => (cert.clone(), key.clone(), client_ca.clone(), None),
        TlsSource::Dev { dir } => {
            let (certs, generated) = devcerts::ensure(dir, trust_domain, false)?;
            if generated {
                tracing::info!(dir = %dir.display(), "generated development certificates");
            }
            (
                certs.server_cert(),
                certs.server_key(),
                certs.ca_cert(),
                Some(certs),
            )
        }
    };
    let cert_pem = read_pem(&cert, "tls-cert", "CERTIFICATE")?;
    let key_pem = read_pem(&key, "tls-key", "PRIVATE KEY")?;
    let ca_pem = read_pem(&client_ca, "tls-client-ca", "CERTIFICATE")?;
    let config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(false);
    Ok(ServerTls { config, dev_certs })
}

fn read_pem(path: &Path, setting: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let marker = format!("-----BEGIN {label}-----");
    let found = String::from_utf8_lossy(&pem).lines().any(|line| {
        let line = line.trim();
        line == marker
            || (label == "PRIVATE KEY"
                && line.starts_with("-----BEGIN")
                && line.ends_with("PRIVATE KEY-----"))
    });
    if !found {
        bail!("{setting}: {} holds no PEM {label}", path.display());
    }
    Ok(pem)
}
