//! Caller identity from the verified client certificate. Once per connection, right after
//! the handshake, the SPIFFE ids among the peer certificate's URI SANs make the
//! connection's [`Caller`], which every request on it carries in its extensions for the
//! handlers to authorize with. Request metadata (an `x-tenant-id` header, say) is never
//! consulted.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tenantd_domain::Principal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::limits::{Activity, ConnectionSlot, IdleTimer};

/// Who is calling, as proven by the client certificate, and the calls in flight on its
/// connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal, or `None` when the certificate carries no (or more than one)
    /// SPIFFE id of the trust domain.
    pub principal: Option<Principal>,
    /// The trust domain the principal belongs to.
    pub trust_domain: Arc<str>,
    /// The connection's calls in flight (for its idle timeout).
    activity: Arc<Activity>,
}

impl Caller {
    /// A caller of `principal` in `trust_domain` on a connection of its own, for calls
    /// made in process (the fuzz targets); served connections get theirs from the
    /// handshake.
    pub fn new(principal: Option<Principal>, trust_domain: &str) -> Self {
        Self {
            principal,
            trust_domain: trust_domain.into(),
            activity: Arc::default(),
        }
    }

    /// The calls in flight on the caller's connection.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The caller's SPIFFE id, or `unknown` without a tenantd identity.
    pub fn name(&self) -> String {
        self.principal.as_ref().map_or_else(
            || "unknown".to_owned(),
            |p| format!("spiffe://{}/{p}", self.trust_domain),
        )
    }
}

/// The principal of a DER client certificate: its one SPIFFE id in `trust_domain`.
/// Several different ones make the certificate ambiguous, so it gets none.
pub fn principal_of(der: &[u8], trust_domain: &str) -> Option<Principal> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found: Option<Principal> = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(principal) = Principal::from_spiffe_id(uri, trust_domain)
        {
            if found.as_ref().is_some_and(|f| *f != principal) {
                return None;
            }
            found = Some(principal);
        }
    }
    found
}

/// An established connection whose caller was identified once, at the handshake: every
/// call on it gets that [`Caller`] in its request extensions (as tonic's connect info),
/// without parsing the certificate again. It holds the connection's slot, and with an
/// idle timeout its reads end the stream once the connection has carried no call for
/// that long (`limits::connections`).
#[derive(Debug)]
pub struct Identified<S> {
    stream: S,
    caller: Caller,
    idle: Option<IdleTimer>,
    _slot: ConnectionSlot,
}

impl Identified<TlsStream<TcpStream>> {
    /// `stream`'s caller: the principal of its client certificate in `trust_domain`;
    /// `slot` is held until the connection is dropped, and `idle` closes it when idle.
    pub fn new(
        stream: TlsStream<TcpStream>,
        slot: ConnectionSlot,
        trust_domain: &Arc<str>,
        idle: Option<IdleTimer>,
    ) -> Self {
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| principal_of(leaf, trust_domain));
        Self {
            stream,
            caller: Caller {
                principal,
                trust_domain: trust_domain.clone(),
                activity: Arc::default(),
            },
            idle,
            _slot: slot,
        }
    }
}

impl<S> Connected for Identified<S> {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Identified<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let ready @ Poll::Ready(_) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return ready;
        }
        // Nothing to read: a connection idle for its timeout ends here (an empty read).
        if let Some(idle) = &mut this.idle
            && idle.expired(&this.caller.activity, cx)
        {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Identified<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn der_with(uris: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_single_spiffe_id_of_the_trust_domain_makes_the_principal() {
        let der = der_with(&[
            "https://example.com/x",
            "spiffe://tenantd.local/service/billing",
        ]);
        assert_eq!(
            principal_of(&der, "tenantd.local"),
            Some(Principal::Service("billing".into()))
        );
        assert_eq!(principal_of(&der, "other.local"), None);
    }

    #[test]
    fn conflicting_ids_or_none_make_no_principal() {
        let two = der_with(&[
            "spiffe://tenantd.local/admin",
            "spiffe://tenantd.local/service/x",
        ]);
        assert_eq!(principal_of(&two, "tenantd.local"), None);
        assert_eq!(principal_of(&der_with(&[]), "tenantd.local"), None);
        assert_eq!(principal_of(b"not a certificate", "tenantd.local"), None);
    }
}
