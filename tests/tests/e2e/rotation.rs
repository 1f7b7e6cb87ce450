//! Certificate rotation without a restart: on SIGHUP the real `tenantd` process re-reads
//! its certificate, key and client CA. New connections see the new certificate (or are
//! verified against the new CA), connections made before keep working, and bad new
//! material is refused with the old kept in force. Client certificates are verified as
//! X.509 chains: an expired one is refused at the handshake, one of an intermediate CA is
//! admitted when the client sends the intermediate with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tenantd_e2e::pb::ListPlansRequest;
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::process::TenantdProcess;
use tenantd_server::devcerts::{self, DevCerts};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Identity;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// The serial number of the certificate the server presents to a new connection.
async fn served_serial(addr: SocketAddr, certs: &DevCerts) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(certs.ca_cert()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(certs.admin_cert()).unwrap()],
            PrivateKeyDer::from_pem_file(certs.admin_key()).unwrap(),
        )
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test]
async fn sighup_rotates_the_server_certificate_for_new_connections_only() {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let mut server = TenantdProcess::start_in_memory(dir.path()).await.unwrap();
    let addr = server.grpc_addr;

    let before = served_serial(addr, &certs).await;
    let mut old_connection =
        PlanServiceClient::new(tenantd_e2e::admin_channel(addr, &certs).await.unwrap());
    old_connection
        .list_plans(ListPlansRequest::default())
        .await
        .unwrap();

    devcerts::renew_server_cert(dir.path()).unwrap();
    server.hangup().await.unwrap();
    let started = Instant::now();
    let mut after = served_serial(addr, &certs).await;
    while after == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = served_serial(addr, &certs).await;
    }
    old_connection
        .list_plans(ListPlansRequest::default())
        .await
        .expect("a connection made before the rotation keeps working");

    std::fs::write(
        certs.server_cert(),
        "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    server.hangup().await.unwrap();
    assert!(
        server
            .wait_for_log("new TLS material refused", Duration::from_secs(10))
            .await,
        "the refusal is logged"
    );
    assert!(server.is_running(), "bad material must not stop the server");
    assert_eq!(
        served_serial(addr, &certs).await,
        after,
        "bad material is refused, the last good stays"
    );
    let mut fresh = PlanServiceClient::new(tenantd_e2e::admin_channel(addr, &certs).await.unwrap());
    fresh.list_plans(ListPlansRequest::default()).await.unwrap();
}

/// Whether a new connection presenting `identity` (checking the server against the CA of
/// `certs`) gets a call answered.
async fn admitted(addr: SocketAddr, certs: &DevCerts, identity: Identity) -> bool {
    let Ok(channel) = tenantd_e2e::channel(addr, certs, Some(identity)).await else {
        return false;
    };
    PlanServiceClient::new(channel)
        .list_plans(ListPlansRequest::default())
        .await
        .is_ok()
}

fn admin_of(certs: &DevCerts) -> Identity {
    tenantd_e2e::identity(&certs.admin_cert(), &certs.admin_key()).unwrap()
}

#[tokio::test]
async fn sighup_with_a_new_client_ca_admits_its_clients_and_refuses_the_old_ones_on_new_connections()
 {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = devcerts::ensure(&dir.path().join("old"), "tenantd.local", false).unwrap();
    let (new, _) = devcerts::ensure(&dir.path().join("new"), "tenantd.local", false).unwrap();
    let client_ca = dir.path().join("client-ca.pem");
    std::fs::copy(old.ca_cert(), &client_ca).unwrap();
    let (cert, key) = (old.server_cert(), old.server_key());
    let server = TenantdProcess::start_in_memory_with(
        &dir.path().join("old"),
        &[
            ("TENANTD_TLS_CERT", cert.to_str().unwrap()),
            ("TENANTD_TLS_KEY", key.to_str().unwrap()),
            ("TENANTD_TLS_CLIENT_CA", client_ca.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    let addr = server.grpc_addr;
    assert!(admitted(addr, &old, admin_of(&old)).await);
    assert!(
        !admitted(addr, &old, admin_of(&new)).await,
        "a foreign CA admitted"
    );
    let mut made_before = PlanServiceClient::new(
        tenantd_e2e::channel(addr, &old, Some(admin_of(&old)))
            .await
            .unwrap(),
    );
    made_before
        .list_plans(ListPlansRequest::default())
        .await
        .unwrap();

    std::fs::copy(new.ca_cert(), &client_ca).unwrap();
    server.hangup().await.unwrap();
    let started = Instant::now();
    while !admitted(addr, &old, admin_of(&new)).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new client CA was never used"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !admitted(addr, &old, admin_of(&old)).await,
        "a client of the old CA admitted on a new connection"
    );
    made_before
        .list_plans(ListPlansRequest::default())
        .await
        .expect("a connection made before the rotation keeps working");
}

/// The development CA in `dir` as an issuer.
fn ca_of(certs: &DevCerts) -> Issuer<'static, KeyPair> {
    Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(certs.ca_cert()).unwrap(),
        KeyPair::from_pem(&std::fs::read_to_string(certs.ca_key()).unwrap()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_and_one_of_an_intermediate_ca_is_admitted_with_its_chain()
 {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let server = TenantdProcess::start_in_memory(dir.path()).await.unwrap();
    let addr = server.grpc_addr;
    let root = ca_of(&certs);
    let admin = "spiffe://tenantd.local/admin";

    let key = KeyPair::generate().unwrap();
    let mut expired = devcerts::client_params(admin, "expired").unwrap();
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = expired.signed_by(&key, &root).unwrap();
    let identity = Identity::from_pem(expired.pem(), key.serialize_pem());
    assert!(
        !admitted(addr, &certs, identity).await,
        "an expired certificate admitted"
    );

    let intermediate_key = KeyPair::generate().unwrap();
    let mut intermediate = CertificateParams::new(Vec::<String>::new()).unwrap();
    intermediate
        .distinguished_name
        .push(DnType::CommonName, "tenantd intermediate CA");
    intermediate.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    intermediate.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    intermediate.use_authority_key_identifier_extension = true;
    let intermediate_cert = intermediate
        .clone()
        .signed_by(&intermediate_key, &root)
        .unwrap();
    let intermediate = Issuer::new(intermediate, intermediate_key);
    let key = KeyPair::generate().unwrap();
    let leaf = devcerts::client_params(admin, "via-intermediate")
        .unwrap()
        .signed_by(&key, &intermediate)
        .unwrap();
    let chain = format!("{}{}", leaf.pem(), intermediate_cert.pem());
    assert!(
        admitted(addr, &certs, Identity::from_pem(chain, key.serialize_pem())).await,
        "a leaf sent with its intermediate is refused"
    );
    assert!(
        !admitted(
            addr,
            &certs,
            Identity::from_pem(leaf.pem(), key.serialize_pem())
        )
        .await,
        "a leaf without the intermediate it needs admitted"
    );
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        tenantd_e2e::counter(
            &metrics,
            "connections_refused_total",
            &[("reason", "handshake_failed")]
        ) >= 2,
        "{metrics}"
    );
}
