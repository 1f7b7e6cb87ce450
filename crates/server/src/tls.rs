//! Server TLS: mutual TLS with rustls (client certificates required and verified against
//! the client CA bundle), reloadable without a restart.
//!
//! The server accepts TCP itself and runs each handshake with the configuration current at
//! that moment, so [`ReloadableTls::reload`] (on SIGHUP) switches new connections to new
//! material while established connections keep theirs. New material that does not load or
//! does not fit together is refused with a log line and the old stays in force.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsSource;
use crate::devcerts::{self, DevCerts};
use crate::limits::{ConnectionGate, ConnectionSlot};
use crate::metrics::{LimitMetrics, Refusal};

/// How connections are admitted: the connection slots, the handshakes in progress at
/// most (beyond, accepting waits, so slow clients cannot exhaust file descriptors and
/// memory) and from one peer address (beyond, its new connections are closed at once, so
/// one slow source cannot take them all), and each handshake's deadline.
#[derive(Debug, Clone)]
pub struct AcceptLimits {
    /// Slots of open connections.
    pub connections: ConnectionGate,
    /// Handshakes in progress at most.
    pub handshakes: usize,
    /// Handshakes in progress from one address at most.
    pub handshakes_per_peer: usize,
    /// Longest a client may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// Where refusals are counted.
    pub metrics: LimitMetrics,
}

/// Handshakes in progress per peer address, at most `max` each.
#[derive(Debug)]
struct PeerHandshakes {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerHandshakes {
    fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::default(),
        }
    }

    /// Counts one more handshake from `peer`, unless it has its share already.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<PeerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(peer).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            peers: self.clone(),
            peer,
        })
    }
}

/// One admitted handshake; frees its peer's slot when dropped.
struct PeerSlot {
    peers: Arc<PeerHandshakes>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .peers
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// The files the TLS material is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

/// The server's TLS configuration, swappable at run time.
#[derive(Debug)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    dev_certs: Option<DevCerts>,
}

impl ReloadableTls {
    /// Loads (or, for [`TlsSource::Dev`], generates if absent) the TLS material.
    ///
    /// # Errors
    /// One line naming the unreadable or malformed file.
    pub fn load(source: &TlsSource, trust_domain: &str) -> anyhow::Result<Self> {
        let (files, dev_certs) = match source {
            TlsSource::Files {
                cert,
                key,
                client_ca,
            } => (
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: client_ca.clone(),
                },
                None,
            ),
            TlsSource::Dev { dir } => {
                let (certs, generated) = devcerts::ensure(dir, trust_domain, false)?;
                if generated {
                    tracing::info!(dir = %dir.display(), "generated development certificates");
                }
                (
                    TlsFiles {
                        cert: certs.server_cert(),
                        key: certs.server_key(),
                        client_ca: certs.ca_cert(),
                    },
                    Some(certs),
                )
            }
        };
        let config = build(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(config)),
            dev_certs,
        })
    }

    /// The development certificate set, in embedded mode.
    pub fn dev_certs(&self) -> Option<&DevCerts> {
        self.dev_certs.as_ref()
    }

    /// Re-reads certificate, key and client CA; new connections use them from now on.
    ///
    /// # Errors
    /// When the new material is unusable; the current configuration then stays in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = build(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn build(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("tls-cert: cannot read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls-cert: {} is not PEM", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls-cert: {} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "tls-key: {} holds no usable PEM private key",
            files.key.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.client_ca)
        .with_context(|| format!("tls-client-ca: cannot read {}", files.client_ca.display()))?
    {
        let ca =
            ca.with_context(|| format!("tls-client-ca: {} is not PEM", files.client_ca.display()))?;
        roots.add(ca).with_context(|| {
            format!(
                "tls-client-ca: {} holds an unusable CA",
                files.client_ca.display()
            )
        })?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "tls-client-ca: {} holds no certificate",
        files.client_ca.display()
    );
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .context("tls-client-ca: cannot build the client verifier")?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("tls-key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The established connections [`incoming`] yields, each with its slot.
pub type Incoming = ReceiverStream<Result<(TlsStream<TcpStream>, ConnectionSlot), std::io::Error>>;

/// Accepts TCP connections on `listener` within `limits` and completes their TLS
/// handshakes concurrently (a slow client never holds up the others), yielding established
/// streams with their connection slots. The returned future is the accept loop (it owns
/// the listener): run it as a task; it ends when `stop` is cancelled.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    limits: AcceptLimits,
    stop: CancellationToken,
) -> (Incoming, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.handshakes));
    let peers = Arc::new(PeerHandshakes::new(limits.handshakes_per_peer));
    let accepting = async move {
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                return;
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(connection) = limits.connections.admit() else {
                refused(
                    &limits.metrics,
                    Refusal::MaxConnections,
                    peer,
                    "too many connections",
                );
                continue;
            };
            let Some(slot) = peers.admit(peer.ip()) else {
                refused(
                    &limits.metrics,
                    Refusal::HandshakesPerPeer,
                    peer,
                    "too many handshakes in progress from this address",
                );
                continue;
            };
            let _nodelay = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let metrics = limits.metrics.clone();
            let timeout = limits.handshake_timeout;
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop((permit, slot));
                match handshake {
                    Ok(Ok(stream)) => {
                        let _server_gone = tx.send(Ok((stream, connection))).await;
                    }
                    Ok(Err(err)) => {
                        refused(&metrics, Refusal::HandshakeFailed, peer, &err.to_string());
                    }
                    Err(_) => refused(&metrics, Refusal::HandshakeTimeout, peer, "timed out"),
                }
            });
        }
    };
    (ReceiverStream::new(rx), accepting)
}

/// A connection closed before it carried a call (the socket is dropped by the caller).
fn refused(metrics: &LimitMetrics, why: Refusal, peer: SocketAddr, detail: &str) {
    metrics.refused(why);
    tracing::debug!(%peer, detail, "connection refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_a_bounded_share_of_handshakes() {
        let peers = Arc::new(PeerHandshakes::new(4));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut held: Vec<_> = (0..4)
            .map(|_| peers.admit(a).expect("within the share"))
            .collect();
        assert!(peers.admit(a).is_none(), "over the share");
        assert!(peers.admit(b).is_some(), "other peers are unaffected");
        held.pop();
        assert!(
            peers.admit(a).is_some(),
            "a finished handshake frees a slot"
        );
        drop(held);
        assert!(
            peers.counts.lock().unwrap().is_empty(),
            "finished peers leave no entry"
        );
    }
}
