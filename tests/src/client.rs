//! Clients of a test server over mutual TLS, test data, and what tests read off statuses.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tenantd_server::devcerts::{self, DevCerts};
use tenantd_server::proto::provisioning_service_client::ProvisioningServiceClient;
use tenantd_server::proto::tenant_service_client::TenantServiceClient;
use tenantd_server::proto::{
    CreateTenantRequest, ProvisioningRun, Tenant, WatchProvisioningRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt as _;

/// A channel to `addr` trusting the CA of `certs` and presenting `identity`, if any.
///
/// # Errors
/// When the connection fails (with TLS 1.3 a refused client certificate usually only shows
/// on the first RPC).
pub async fn channel(
    addr: SocketAddr,
    certs: &DevCerts,
    identity: Option<Identity>,
) -> anyhow::Result<Channel> {
    let ca = Certificate::from_pem(std::fs::read(certs.ca_cert())?);
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(channel)
}

/// A channel to `addr` presenting the admin certificate of `certs`.
///
/// # Errors
/// When the connection fails.
pub async fn admin_channel(addr: SocketAddr, certs: &DevCerts) -> anyhow::Result<Channel> {
    let identity = identity(&certs.admin_cert(), &certs.admin_key())?;
    channel(addr, certs, Some(identity)).await
}

/// A client identity from PEM files.
///
/// # Errors
/// When a file cannot be read.
pub fn identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    Ok(Identity::from_pem(
        std::fs::read(cert)?,
        std::fs::read(key)?,
    ))
}

/// A valid new tenant with the given slug.
pub fn new_tenant(slug: &str) -> Tenant {
    Tenant {
        slug: slug.to_owned(),
        display_name: format!("{slug} Inc"),
        plan_id: "pro".to_owned(),
        contact_email: format!("ops@{slug}.example"),
        labels: [("env".to_owned(), "prod".to_owned())].into(),
        ..Tenant::default()
    }
}

/// Creates `tenant` and returns what the server answered.
///
/// # Errors
/// The server's status.
pub async fn create(
    client: &mut TenantServiceClient<Channel>,
    tenant: Tenant,
) -> Result<Tenant, tonic::Status> {
    let response = client
        .create_tenant(CreateTenantRequest {
            tenant: Some(tenant),
            request_id: String::new(),
        })
        .await?;
    response
        .into_inner()
        .tenant
        .ok_or_else(|| tonic::Status::internal("no tenant in response"))
}

/// Follows the tenant's run with WatchProvisioning until the stream ends (the run settled)
/// and returns the last state seen.
///
/// # Errors
/// The server's status, or no end within 30 seconds.
pub async fn settle(
    client: &mut ProvisioningServiceClient<Channel>,
    tenant_id: &str,
) -> anyhow::Result<ProvisioningRun> {
    let mut stream = client
        .watch_provisioning(WatchProvisioningRequest {
            tenant_id: tenant_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut last = None;
    let follow = async {
        while let Some(message) = stream.message().await? {
            last = message.run;
        }
        Ok::<_, tonic::Status>(())
    };
    tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .context("the run did not settle within 30 seconds")??;
    last.context("the watch sent nothing")
}

/// An admin client certificate (`spiffe://tenantd.local/admin`) signed by a brand-new CA
/// the server has never seen.
///
/// # Errors
/// When generation fails.
pub fn admin_identity_from_foreign_ca() -> anyhow::Result<Identity> {
    let dir = tempfile::tempdir()?;
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false)?;
    identity(&certs.admin_cert(), &certs.admin_key())
}

/// The fields named by an INVALID_ARGUMENT status's `google.rpc.BadRequest`, in order.
///
/// # Panics
/// When the status is not INVALID_ARGUMENT or carries no BadRequest: the test fails.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// The `google.rpc.ErrorInfo` reason of `status`, after checking its code and domain.
///
/// # Panics
/// When the status has another code or carries no tenantd ErrorInfo: the test fails.
pub fn assert_reason(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "tenantd.dev", "{status:?}");
    assert_eq!(info.reason, reason, "{status:?}");
}
