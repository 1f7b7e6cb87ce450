//! Certificate rotation without a restart: on SIGHUP the real `tenantd` process re-reads
//! its certificate, key and client CA. New connections see the new certificate, connections
//! made before keep working, and bad new material is refused with the old kept in force.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tenantd_e2e::pb::ListPlansRequest;
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::process::TenantdProcess;
use tenantd_server::devcerts::{self, DevCerts};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
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
