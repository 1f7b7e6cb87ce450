//! The server's resource limits, each past its edge on a real server over mTLS: a request
//! or response message too large (RESOURCE_EXHAUSTED, MESSAGE_TOO_LARGE), calls beyond
//! `--max-concurrent-calls` shed at once (UNAVAILABLE, OVERLOADED) while health answers,
//! connections beyond `--max-connections` closed, idle connections closed while a watch
//! keeps its own, and open watches per principal (RESOURCE_EXHAUSTED, TOO_MANY_WATCHES).

use std::time::Duration;

use prost::Message as _;
use rustls_pki_types::pem::PemObject as _;
use sqlx::Connection as _;
use tenantd_e2e::faults::{Fault, Faults};
use tenantd_e2e::pb::plan_service_client::PlanServiceClient;
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    AuditRecord, CreateTenantRequest, GetTenantRequest, ListAuditRecordsRequest, ListPlansRequest,
    ListTenantsRequest, Tenant, UpdateTenantRequest, WatchProvisioningRequest,
};
use tenantd_e2e::{Backend, TestServer, assert_reason, counter, eventually, new_tenant};
use tenantd_server::config::{Config, LimitsConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;

/// An in-memory server with its limits passed through `adjust`.
async fn server(adjust: impl FnOnce(LimitsConfig) -> LimitsConfig + Send) -> TestServer {
    TestServer::start_with(Backend::Memory, |config| Config {
        limits: adjust(config.limits),
        ..config
    })
    .await
    .unwrap()
}

/// Another PostgreSQL session holding a tenant's row (`FOR UPDATE`): changes of the
/// tenant wait for it until it is released.
struct RowLock(sqlx::PgConnection);

impl RowLock {
    async fn hold(server: &TestServer, tenant_id: &str) -> Self {
        let mut session = sqlx::PgConnection::connect(&server.schema().unwrap().url())
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut session).await.unwrap();
        sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1::uuid FOR UPDATE")
            .bind(tenant_id)
            .execute(&mut session)
            .await
            .unwrap();
        Self(session)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
    }
}

/// `message` with `x-request-id: id`.
fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// The audit records of `method`, once a CreateTenant with request id `barrier` (made
/// after the calls of interest; the audit queue is written in order) is listed.
async fn audited_before(server: &TestServer, barrier: &str, method: &str) -> Vec<AuditRecord> {
    let mut tenants = server.tenants().await.unwrap();
    tenants
        .create_tenant(with_request_id(
            CreateTenantRequest {
                tenant: Some(new_tenant(barrier)),
                request_id: String::new(),
            },
            barrier,
        ))
        .await
        .unwrap();
    let mut events = server.events().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let records = events
            .list_audit_records(ListAuditRecordsRequest {
                page_size: 500,
                ..ListAuditRecordsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .records;
        if records.iter().any(|r| r.request_id == barrier) {
            return records.into_iter().filter(|r| r.method == method).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{barrier} not audited within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An update of `tenant`'s display name to `name`, whatever its etag.
fn rename(tenant: &Tenant, name: &str) -> UpdateTenantRequest {
    let mut change = tenant.clone();
    change.display_name = name.into();
    change.etag = String::new();
    UpdateTenantRequest {
        tenant: Some(change),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    }
}

/// Waits until `server`'s unlabelled `metric` reads `value`, for `what`.
async fn until_metric(server: &TestServer, what: &str, metric: &str, value: u64) {
    eventually(what, Duration::from_secs(6), || async {
        let metrics = server.metrics_text().await.unwrap();
        counter(&metrics, metric, &[]) == value
    })
    .await;
}

fn limit_of(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.metadata["limit"].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_request_too_large_is_resource_exhausted_and_the_connection_goes_on() {
    let server = server(|limits| LimitsConfig {
        max_request_bytes: 64 * 1024,
        ..limits
    })
    .await;
    let mut tenants = server.tenants().await.unwrap();
    let mut tenant = new_tenant("bulky");
    tenant.display_name = "x".repeat(100 * 1024);
    let status = tenants
        .create_tenant(with_request_id(
            CreateTenantRequest {
                tenant: Some(tenant),
                request_id: String::new(),
            },
            "req-too-large",
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    assert_eq!(limit_of(&status), "65536");
    assert!(status.message().contains("request"), "{status:?}");

    // The same connection serves the next call.
    tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap();
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "messages_too_large_total",
            &[("direction", "request")]
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "CreateTenant"),
                ("grpc_code", "ResourceExhausted")
            ]
        ),
        1,
        "{metrics}"
    );
    // Audited as what it was: a refused mutation.
    let creates = audited_before(
        &server,
        "req-barrier",
        "/tenant.v1.TenantService/CreateTenant",
    )
    .await;
    let refused: Vec<_> = creates
        .iter()
        .filter(|r| r.request_id == "req-too-large")
        .map(|r| r.code.as_str())
        .collect();
    assert_eq!(refused, ["RESOURCE_EXHAUSTED"], "{creates:?}");
}

#[tokio::test]
async fn a_response_too_large_is_resource_exhausted_with_the_limit() {
    let server = server(|limits| LimitsConfig {
        max_response_bytes: 1024,
        ..limits
    })
    .await;
    let mut tenants = server.tenants().await.unwrap();
    // Six tenants of ~200-character names: a page of all of them is over 1 KiB.
    for i in 0..6 {
        let mut tenant = new_tenant(&format!("wordy-{i}"));
        tenant.display_name = format!("{i} {}", "y".repeat(190));
        tenants
            .create_tenant(CreateTenantRequest {
                tenant: Some(tenant),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    let status = tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap_err();
    assert_reason(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    assert_eq!(limit_of(&status), "1024");
    assert!(status.message().contains("response"), "{status:?}");
    // A page that fits is served.
    tenants
        .list_tenants(ListTenantsRequest {
            page_size: 1,
            ..ListTenantsRequest::default()
        })
        .await
        .unwrap();
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "messages_too_large_total",
            &[("direction", "response")]
        ),
        1
    );
}

#[tokio::test]
async fn calls_beyond_the_limit_are_shed_at_once_while_health_answers() {
    let server = TestServer::start_with(Backend::Postgres, |config| Config {
        limits: LimitsConfig {
            max_concurrent_calls: 2,
            ..config.limits
        },
        ..config
    })
    .await
    .unwrap();
    let created = server.create_active(new_tenant("busy")).await.unwrap();

    // Another session holds the tenant's row: two updates of it wait for the lock.
    let lock = RowLock::hold(&server, &created.tenant_id).await;
    let tenants = server.tenants().await.unwrap();
    let updates: Vec<_> = (0..2)
        .map(|i| {
            let mut client = tenants.clone();
            let request = rename(&created, &format!("Busy {i}"));
            tokio::spawn(async move { client.update_tenant(request).await })
        })
        .collect();
    until_metric(&server, "both updates in flight", "calls_in_flight", 2).await;

    let started = std::time::Instant::now();
    let status = tenants
        .clone()
        .update_tenant(with_request_id(rename(&created, "Shed"), "req-shed"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    assert_reason(&status, Code::Unavailable, "OVERLOADED");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    let health = HealthClient::new(server.admin_channel().await.unwrap())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.get_ref().status, 1, "SERVING while shedding");

    lock.release().await;
    for update in updates {
        update.await.unwrap().unwrap();
    }
    tenants
        .clone()
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap();
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(counter(&metrics, "calls_shed_total", &[]), 1);
    assert_eq!(
        counter(
            &metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "UpdateTenant"),
                ("grpc_code", "Unavailable")
            ]
        ),
        1
    );
    // The two updates are audited; the shed one did nothing and left no record.
    let updates = audited_before(
        &server,
        "req-barrier",
        "/tenant.v1.TenantService/UpdateTenant",
    )
    .await;
    let codes: Vec<_> = updates.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["OK", "OK"], "{updates:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_until_one_is_freed() {
    let server = server(|limits| LimitsConfig {
        max_connections: 2,
        max_handshakes: 2,
        max_handshakes_per_peer: 2,
        ..limits
    })
    .await;
    // The metrics endpoint is plain HTTP on its own port: it takes no slot.
    let first = server.tenants().await.unwrap();
    let mut second = server.tenants().await.unwrap();
    second
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap();
    let third = server.tenants().await;
    let refused = match third {
        Err(_) => true,
        Ok(mut client) => client
            .list_tenants(ListTenantsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a third connection is closed");
    let metrics = server.metrics_text().await.unwrap();
    assert!(
        counter(
            &metrics,
            "connections_refused_total",
            &[("reason", "max_connections")]
        ) >= 1,
        "{metrics}"
    );
    assert_eq!(counter(&metrics, "connections_open", &[]), 2);

    drop(first);
    eventually(
        "a freed slot takes a new connection",
        Duration::from_secs(5),
        || async {
            let Ok(mut client) = server.tenants().await else {
                return false;
            };
            client
                .list_tenants(ListTenantsRequest::default())
                .await
                .is_ok()
        },
    )
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_one_with_an_open_watch_is_not() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = TestServer::start_with_providers(
        Backend::Memory,
        |config| Config {
            limits: LimitsConfig {
                idle_connection_timeout: Some(Duration::from_secs(1)),
                ..config.limits
            },
            ..config
        },
        move |providers| faults.wrap(providers),
    )
    .await
    .unwrap();
    let mut idle = server.tenants().await.unwrap();
    let created = idle
        .create_tenant(CreateTenantRequest {
            tenant: Some(new_tenant("waiting")),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let mut watch = server
        .provisioning()
        .await
        .unwrap()
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().expect("the run as it is");

    until_metric(
        &server,
        "the idle connection is closed",
        "connections_closed_idle_total",
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(&metrics, "connections_closed_idle_total", &[]),
        1,
        "the watch's connection stays open past the timeout"
    );
    assert_eq!(counter(&metrics, "connections_open", &[]), 1);

    // The watch still follows the run, and the idle client reconnects on its next call.
    dns.release();
    while let Some(update) = watch.message().await.unwrap() {
        if update
            .run
            .is_some_and(|run| run.state() != tenantd_e2e::pb::RunState::Running)
        {
            break;
        }
    }
    idle.get_tenant(GetTenantRequest {
        tenant_id: created.tenant_id,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_principal_gets_a_bounded_number_of_open_watches() {
    let dns = Fault::held();
    let faults = Faults {
        dns: Some(dns.clone()),
        ..Faults::default()
    };
    let server = TestServer::start_with_providers(
        Backend::Memory,
        |config| Config {
            limits: LimitsConfig {
                max_watches_per_principal: 2,
                ..config.limits
            },
            ..config
        },
        move |providers| faults.wrap(providers),
    )
    .await
    .unwrap();
    let mut tenants: TenantServiceClient<_> = server.tenants().await.unwrap();
    let created = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(new_tenant("watched")),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    let provisioning = server.provisioning().await.unwrap();
    let watch = || {
        let mut client = provisioning.clone();
        let tenant_id = created.tenant_id.clone();
        async move {
            client
                .watch_provisioning(WatchProvisioningRequest { tenant_id })
                .await
        }
    };
    let first = watch().await.unwrap();
    let _second = watch().await.unwrap();
    let status = watch().await.unwrap_err();
    assert_reason(&status, Code::ResourceExhausted, "TOO_MANY_WATCHES");
    assert_eq!(limit_of(&status), "2");

    drop(first);
    eventually(
        "a closed watch frees its slot",
        Duration::from_secs(5),
        || async { watch().await.is_ok() },
    )
    .await;
    let metrics = server.metrics_text().await.unwrap();
    assert!(counter(&metrics, "watches_refused_total", &[("role", "admin")]) >= 1);
    dns.release();
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_100_mib_request_is_refused_without_the_servers_memory_growing() {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = tenantd_server::devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let server = tenantd_e2e::process::TenantdProcess::start_in_memory(dir.path())
        .await
        .unwrap();
    let pid = server.pid().unwrap();
    let mut tenants = TenantServiceClient::new(
        tenantd_e2e::admin_channel(server.grpc_addr, &certs)
            .await
            .unwrap(),
    );
    tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap();
    let before = rss_kib(pid);

    let mut tenant = new_tenant("enormous");
    tenant.display_name = "z".repeat(100 * 1024 * 1024);
    let status = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS went from {before} KiB to {after} KiB for a refused message"
    );
    tenants
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap();
    server.kill().await.unwrap();
}

#[tokio::test]
async fn a_header_list_too_large_is_refused_and_the_server_serves_on() {
    let server = server(|limits| limits).await;
    let mut tenants = server.tenants().await.unwrap();
    let mut request = tonic::Request::new(ListTenantsRequest::default());
    request
        .metadata_mut()
        .insert("x-padding", "p".repeat(20 * 1024).parse().unwrap());
    let status = tenants.list_tenants(request).await.unwrap_err();
    // HTTP 431 before any gRPC: client libraries map it to UNKNOWN.
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("431"), "{status:?}");
    let mut fresh = server.tenants().await.unwrap();
    fresh
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap();
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 all loops back).
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::from(from), 0).into())?;
    socket.connect(addr).await
}

/// Handshakes without a client certificate from `from`, one after another, until `stop`:
/// each is refused by the server's verifier.
async fn handshake_flood(
    from: [u8; 4],
    addr: std::net::SocketAddr,
    ca: std::path::PathBuf,
    stop: tokio_util::sync::CancellationToken,
) -> u32 {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut made = 0;
    while !stop.is_cancelled() {
        let Ok(tcp) = connect_from(from, addr).await else {
            continue;
        };
        if let Ok(mut tls) = connector.connect(name.clone(), tcp).await {
            // TLS 1.3: the server checks the (missing) certificate after the client is done.
            let _refused = tls.write_all(b"PRI * HTTP/2.0\r\n\r\n").await;
            let _ = tls.read(&mut [0; 64]).await;
        }
        made += 1;
    }
    made
}

#[tokio::test]
async fn a_handshake_flood_and_slowloris_clients_do_not_starve_a_well_behaved_client() {
    tenantd_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = tenantd_server::devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let server = tenantd_e2e::process::TenantdProcess::start_in_memory_with(
        dir.path(),
        // 200 slow clients would hold all 64 handshake slots (and the good client's new
        // connections would wait out the 3 s timeout) but for the per-address share of 32.
        &[
            ("TENANTD_HANDSHAKE_TIMEOUT_MS", "3000"),
            ("TENANTD_MAX_HANDSHAKES", "64"),
            ("TENANTD_MAX_HANDSHAKES_PER_PEER", "32"),
        ],
    )
    .await
    .unwrap();
    let addr = server.grpc_addr;
    let mut plans = PlanServiceClient::new(tenantd_e2e::admin_channel(addr, &certs).await.unwrap());
    plans.list_plans(ListPlansRequest::default()).await.unwrap();

    // Slowloris: 200 connections from 127.0.0.2 that send half a TLS record and wait.
    let mut slow = Vec::new();
    for _ in 0..200 {
        if let Ok(mut tcp) = connect_from([127, 0, 0, 2], addr).await {
            let _ = tcp.write_all(&[0x16, 0x03, 0x01]).await;
            slow.push(tcp);
        }
    }
    // A flood of certificate-less handshakes from 127.0.0.3.
    let stop = tokio_util::sync::CancellationToken::new();
    let flood: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(handshake_flood(
                [127, 0, 0, 3],
                addr,
                certs.ca_cert(),
                stop.clone(),
            ))
        })
        .collect();

    // Meanwhile the well-behaved client is served, on its connection and on new ones.
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let started = std::time::Instant::now();
        if i % 10 == 0 {
            let mut fresh =
                PlanServiceClient::new(tenantd_e2e::admin_channel(addr, &certs).await.unwrap());
            fresh.list_plans(ListPlansRequest::default()).await.unwrap();
        } else {
            plans.list_plans(ListPlansRequest::default()).await.unwrap();
        }
        slowest = slowest.max(started.elapsed());
    }
    stop.cancel();
    let mut floods = 0;
    for task in flood {
        floods += task.await.unwrap();
    }
    assert!(floods > 20, "the flood made only {floods} handshakes");
    // Well below the handshake timeout the slow clients hold: nobody waited on them.
    assert!(
        slowest < Duration::from_secs(2),
        "the slowest call took {slowest:?}"
    );

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let metrics = server.metrics_text().await.unwrap();
    let refused = |reason| counter(&metrics, "connections_refused_total", &[("reason", reason)]);
    assert!(refused("handshakes_per_peer") >= 100, "{metrics}");
    assert!(refused("handshake_timeout") >= 30, "{metrics}");
    assert!(refused("handshake_failed") >= 20, "{metrics}");
    drop(slow);
    server.kill().await.unwrap();
}

/// An HTTP/2 connection over mTLS as admin whose frames are only processed while the
/// returned connection future is polled.
async fn raw_h2(
    addr: std::net::SocketAddr,
    certs: &tenantd_server::devcerts::DevCerts,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, bytes::Bytes>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(certs.ca_cert()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls_pki_types::CertificateDer::from_pem_file(certs.admin_cert()).unwrap()],
            rustls_pki_types::PrivateKeyDer::from_pem_file(certs.admin_key()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    h2::client::handshake(tls).await.unwrap()
}

#[tokio::test]
async fn a_peer_that_stops_answering_keepalive_pings_is_disconnected() {
    let server = server(|limits| LimitsConfig {
        http2_keepalive_interval: Some(Duration::from_secs(1)),
        http2_keepalive_timeout: Duration::from_secs(1),
        ..limits
    })
    .await;
    // One peer answers the server's pings (its connection is driven), one never reads.
    let (_answering, driven) = raw_h2(server.grpc_addr, &server.certs).await;
    let driven = tokio::spawn(driven);
    let (_silent, undriven) = raw_h2(server.grpc_addr, &server.certs).await;
    until_metric(&server, "both connections open", "connections_open", 2).await;
    until_metric(
        &server,
        "the silent peer is disconnected after a ping goes unanswered",
        "connections_open",
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(&metrics, "connections_open", &[]),
        1,
        "the peer that answers its pings stays connected"
    );
    assert!(
        !driven.is_finished(),
        "the answering connection is still up"
    );
    drop(undriven);
}

/// The gRPC status of one unary call of `path` with the message bytes `encoded`, sent over
/// raw HTTP/2 with the extra `headers` (so no client library enforces a deadline of its
/// own, or checks what it sends).
pub(crate) async fn raw_unary(
    server: &TestServer,
    path: &str,
    encoded: &[u8],
    headers: &[(&str, &str)],
) -> tonic::Status {
    let (send, connection) = raw_h2(server.grpc_addr, &server.certs).await;
    let driven = tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let mut request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(encoded);
    let (response, mut body) = send.send_request(request.body(()).unwrap(), false).unwrap();
    body.send_data(bytes::Bytes::from(frame), true).unwrap();
    let response = response.await.unwrap();
    let status = if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        status
    } else {
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        let trailers = body.trailers().await.unwrap().expect("trailers");
        tonic::Status::from_header_map(&trailers).expect("a status in the trailers")
    };
    driven.abort();
    status
}

#[tokio::test]
async fn a_request_that_is_not_a_message_of_its_type_is_invalid_argument_and_creates_nothing() {
    let server = TestServer::start(Backend::Memory).await.unwrap();
    // Field 1 (tenant) as a varint where a message belongs; then a truncated length.
    for bytes in [&[0x08, 0x01][..], &[0x0a, 0x7f, 0x01]] {
        let status = raw_unary(&server, "/tenant.v1.TenantService/CreateTenant", bytes, &[]).await;
        assert_reason(&status, Code::InvalidArgument, "MESSAGE_MALFORMED");
        assert!(
            status.message().contains("CreateTenantRequest"),
            "{}",
            status.message()
        );
    }
    let listed = server
        .tenants()
        .await
        .unwrap()
        .list_tenants(ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tenants.is_empty(),
        "a malformed create made a tenant"
    );
}

#[tokio::test]
async fn a_client_deadline_ends_a_blocked_update_in_time_and_leaves_no_change() {
    let server = TestServer::start(Backend::Postgres).await.unwrap();
    let created = server.create_active(new_tenant("hurried")).await.unwrap();
    let lock = RowLock::hold(&server, &created.tenant_id).await;

    let started = std::time::Instant::now();
    let status = raw_unary(
        &server,
        "/tenant.v1.TenantService/UpdateTenant",
        &rename(&created, "Hurried Renamed").encode_to_vec(),
        &[("grpc-timeout", "50m")],
    )
    .await;
    let took = started.elapsed();
    assert_reason(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");

    // Once the lock is gone, nothing of the abandoned update shows.
    lock.release().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tenant = server
        .tenants()
        .await
        .unwrap()
        .get_tenant(GetTenantRequest {
            tenant_id: created.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(tenant.display_name, created.display_name);
    assert_eq!(tenant.etag, created.etag);
    let metrics = server.metrics_text().await.unwrap();
    assert_eq!(
        counter(
            &metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "UpdateTenant"),
                ("grpc_code", "DeadlineExceeded")
            ]
        ),
        1
    );
}
