//! Caller identity from the verified client certificate. A tower layer reads the peer
//! certificate of the mTLS connection, takes the SPIFFE ids among its URI SANs and puts the
//! resulting [`Caller`] into the request's extensions for the handlers to authorize with.
//! Request metadata (an `x-tenant-id` header, say) is never consulted.

use std::task::{Context, Poll};

use tenantd_domain::Principal;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// Who is calling, as proven by the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal, or `None` when the certificate carries no (or more than one)
    /// SPIFFE id of the trust domain.
    pub principal: Option<Principal>,
    /// The trust domain the principal belongs to.
    pub trust_domain: std::sync::Arc<str>,
}

impl Caller {
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

/// Tower layer inserting the [`Caller`] of each request.
#[derive(Debug, Clone)]
pub struct IdentityLayer {
    trust_domain: std::sync::Arc<str>,
}

impl IdentityLayer {
    /// A layer recognizing SPIFFE ids of `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
        }
    }
}

impl<S> tower::Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService {
            inner,
            trust_domain: self.trust_domain.clone(),
        }
    }
}

/// The service [`IdentityLayer`] produces.
#[derive(Debug, Clone)]
pub struct IdentityService<S> {
    inner: S,
    trust_domain: std::sync::Arc<str>,
}

impl<S, B> tower::Service<http::Request<B>> for IdentityService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let principal = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| {
                certs
                    .first()
                    .and_then(|leaf| principal_of(leaf, &self.trust_domain))
            });
        request.extensions_mut().insert(Caller {
            principal,
            trust_domain: self.trust_domain.clone(),
        });
        self.inner.call(request)
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
