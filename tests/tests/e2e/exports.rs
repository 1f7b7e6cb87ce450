//! Exports end to end on both stores: an admin exports a tenant, the archive streams back
//! in chunks to the admin and to the tenant itself (no one else), matches its size and
//! SHA-256, its manifest lists every file with its hash, and it holds the tenant record with
//! its address and — on PostgreSQL — every row written to the tenant's schema. An export
//! directory that cannot be written fails the export with its reason and nothing to
//! download. On PostgreSQL, two real replicas: the one writing an export is killed; the
//! other writes it once the lease expires.

use std::io::Read as _;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tenantd_e2e::pb::tenant_service_client::TenantServiceClient;
use tenantd_e2e::pb::{
    DownloadExportRequest, Export, ExportState, ExportTenantRequest, GetExportRequest,
};
use tenantd_e2e::{TestServer, assert_reason, identity, new_tenant, on_every_store};
use tenantd_server::devcerts;
use tonic::Code;
use tonic::transport::Channel;

on_every_store!(
    an_export_streams_back_whole_to_the_admin_and_the_tenant_and_holds_every_row,
    an_export_directory_that_cannot_be_written_fails_the_export_with_its_reason,
);

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The export once it ended (within 30 seconds).
async fn ended(client: &mut TenantServiceClient<Channel>, export: &Export) -> Export {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let read = client
            .get_export(GetExportRequest {
                tenant_id: export.tenant_id.clone(),
                export_id: export.export_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .export
            .unwrap();
        if read.state() != ExportState::Running {
            return read;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export did not end within 30 s: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The archive, downloaded: every chunk in order, checked against its size and SHA-256.
async fn download(client: &mut TenantServiceClient<Channel>, export: &Export) -> Vec<u8> {
    let mut stream = client
        .download_export(DownloadExportRequest {
            tenant_id: export.tenant_id.clone(),
            export_id: export.export_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    let mut last = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        assert_eq!(
            chunk.offset,
            i64::try_from(bytes.len()).unwrap(),
            "in order"
        );
        assert!(chunk.data.len() <= 64 * 1024);
        bytes.extend(&chunk.data);
        last = Some(chunk);
    }
    let last = last.expect("at least one chunk");
    assert_eq!(i64::try_from(bytes.len()).unwrap(), last.total_size);
    assert_eq!(hex(&Sha256::digest(&bytes)), last.sha256);
    assert_eq!(last.sha256, export.sha256);
    bytes
}

/// The files of a tar.gz, by path, in order.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            (entry.path().unwrap().display().to_string(), body)
        })
        .collect()
}

async fn client_as(
    server: &TestServer,
    spiffe_path: &str,
    name: &str,
) -> TenantServiceClient<Channel> {
    let (cert, key) = devcerts::issue(
        &server.certs.dir,
        &format!("spiffe://tenantd.local/{spiffe_path}"),
        name,
    )
    .unwrap();
    TenantServiceClient::new(
        server
            .channel(Some(identity(&cert, &key).unwrap()))
            .await
            .unwrap(),
    )
}

/// On PostgreSQL: 100 rows written to the tenant's `audit_logs`; their actions.
async fn write_rows(server: &TestServer, tenant_id: &str) -> Vec<String> {
    let Some(schema) = server.schema() else {
        return Vec::new();
    };
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let (tenant_schema,): (String,) =
        sqlx::query_as("SELECT tenant_schema FROM tenants WHERE tenant_id = $1")
            .bind(uuid::Uuid::parse_str(tenant_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    let actions: Vec<String> = (0..100).map(|n| format!("exported-action-{n}")).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{tenant_schema}\".audit_logs (action, detail) \
         SELECT a, jsonb_build_object('n', i) FROM unnest($1::text[]) WITH ORDINALITY AS x(a, i)"
    )))
    .bind(&actions)
    .execute(&pool)
    .await
    .unwrap();
    actions
}

async fn an_export_streams_back_whole_to_the_admin_and_the_tenant_and_holds_every_row(
    server: TestServer,
) {
    let mut admin = server.tenants().await.unwrap();
    let tenant = server.create_active(new_tenant("exported")).await.unwrap();
    let other = server.create_active(new_tenant("neighbour")).await.unwrap();
    let actions = write_rows(&server, &tenant.tenant_id).await;

    let started = admin
        .export_tenant(ExportTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .export
        .unwrap();
    assert_eq!(started.state(), ExportState::Running);
    assert_eq!(started.requested_by, "admin");
    let done = ended(&mut admin, &started).await;
    assert_eq!(done.state(), ExportState::Succeeded, "{done:?}");
    assert!(done.size > 0);
    assert_eq!(
        done.files_written,
        done.files - 1,
        "every file but the manifest"
    );
    assert!(done.bytes_written > 0);

    let archive = download(&mut admin, &done).await;
    let mut own = client_as(&server, &format!("tenant/{}", tenant.tenant_id), "own").await;
    assert_eq!(
        download(&mut own, &done).await,
        archive,
        "the tenant downloads its own"
    );
    assert_only_admins_and_the_tenant(&server, &tenant, &other, &done).await;

    assert_archive_holds(&server, &entries(&archive), &tenant, &done, &actions);
}

/// Another tenant may not download the export, an admin asking under another tenant finds
/// none, and a service may not export.
async fn assert_only_admins_and_the_tenant(
    server: &TestServer,
    tenant: &tenantd_e2e::pb::Tenant,
    other: &tenantd_e2e::pb::Tenant,
    done: &Export,
) {
    let mut admin = server.tenants().await.unwrap();
    let mut neighbour = client_as(server, &format!("tenant/{}", other.tenant_id), "other").await;
    let status = neighbour
        .download_export(DownloadExportRequest {
            tenant_id: tenant.tenant_id.clone(),
            export_id: done.export_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = admin
        .get_export(GetExportRequest {
            tenant_id: other.tenant_id.clone(),
            export_id: done.export_id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "EXPORT_NOT_FOUND");
    let mut service = client_as(server, "service/billing", "billing").await;
    let status = service
        .export_tenant(ExportTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

/// The archive's manifest lists every file with its hash; the record, events, keys and (on
/// PostgreSQL) every row written to the tenant's schema are in it.
fn assert_archive_holds(
    server: &TestServer,
    files: &[(String, Vec<u8>)],
    tenant: &tenantd_e2e::pb::Tenant,
    done: &Export,
    actions: &[String],
) {
    assert_eq!(i64::from(done.files), i64::try_from(files.len()).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
    assert_eq!(files[0].0, "manifest.json");
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["tenant_id"], tenant.tenant_id.as_str());
    for (listed, (path, body)) in manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&files[1..])
    {
        assert_eq!(listed["path"], path.as_str());
        assert_eq!(
            listed["sha256"],
            hex(&Sha256::digest(body)).as_str(),
            "{path}"
        );
    }
    let file = |name: &str| {
        files.iter().find(|(path, _)| path == name).map_or_else(
            || panic!("{name} is not in the archive"),
            |(_, body)| String::from_utf8(body.clone()).unwrap(),
        )
    };
    let record: serde_json::Value = serde_json::from_str(&file("tenant.json")).unwrap();
    assert_eq!(record["contact_email"], tenant.contact_email.as_str());
    assert!(file("events.jsonl").contains("tenant.v1.TenantActivated"));
    assert!(!file("api_keys.json").contains("secret"));
    assert!(file("schema/schema_migrations.sql").starts_with("CREATE TABLE"));
    if server.schema().is_some() {
        let logs = file("schema/audit_logs.csv");
        for action in actions {
            assert!(
                logs.contains(action.as_str()),
                "{action} is not in the export"
            );
        }
        assert_eq!(
            logs.lines().count(),
            actions.len() + 1,
            "a header and every row"
        );
        assert_eq!(
            file("schema/roles.csv").lines().count(),
            4,
            "the three seeded roles"
        );
        assert!(file("schema/users.sql").contains("PRIMARY KEY (user_id)"));
    }
}

async fn an_export_directory_that_cannot_be_written_fails_the_export_with_its_reason(
    server: TestServer,
) {
    // A file where the export directory should be.
    std::fs::write(server.certs.dir.join("exports"), b"not a directory").unwrap();
    let mut admin = server.tenants().await.unwrap();
    let tenant = server
        .create_active(new_tenant("unwritable"))
        .await
        .unwrap();
    let started = admin
        .export_tenant(ExportTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .export
        .unwrap();
    let failed = ended(&mut admin, &started).await;
    assert_eq!(failed.state(), ExportState::Failed);
    assert_eq!(
        failed.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("EXPORT_DIR_UNWRITABLE")
    );
    assert!(failed.attempts > 1, "retried first");
    let status = admin
        .download_export(DownloadExportRequest {
            tenant_id: tenant.tenant_id.clone(),
            export_id: failed.export_id.clone(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "EXPORT_NOT_READY");
    assert_eq!(
        std::fs::read(server.certs.dir.join("exports")).unwrap(),
        b"not a directory"
    );
}

/// The export's (state, attempts, lease holder) as stored.
async fn stored_export(pool: &sqlx::PgPool) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as("SELECT state, attempts, lease_owner FROM tenant_exports")
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Waits until the export's attempt number `attempts` is in flight under a lease; its holder.
async fn wait_for_attempt(pool: &sqlx::PgPool, attempts: i32) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored_export(pool).await;
        if let Some((state, n, Some(owner))) = &stored
            && state == "RUNNING"
            && *n == attempts
        {
            return owner.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{stored:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two real replicas sharing an export directory: the one writing the export (held up by
/// the test's lock on a tenant table) is killed; the other writes it once the lease
/// expires, the lost attempt counted, and only its archive is in the directory.
#[tokio::test]
async fn an_export_whose_replica_is_killed_mid_write_is_written_by_the_other() {
    use tenantd_adapters::postgres::testing::ScratchSchema;
    use tenantd_e2e::process::{holder_and_other, two_replicas};
    use tenantd_e2e::{TestKeys, admin_channel, create, settle};

    tenantd_server::install_crypto_provider();
    let schema = ScratchSchema::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (certs, _) = devcerts::ensure(dir.path(), "tenantd.local", false).unwrap();
    let keys = TestKeys::generate();
    let replicas = two_replicas(&schema, dir.path(), &keys).await.unwrap();
    let pool = sqlx::PgPool::connect(&schema.url()).await.unwrap();
    let channel = admin_channel(replicas.0.grpc_addr, &certs).await.unwrap();
    let mut tenants = TenantServiceClient::new(channel.clone());
    let tenant = create(&mut tenants, new_tenant("exported")).await.unwrap();
    settle(
        &mut tenantd_e2e::pb::provisioning_service_client::ProvisioningServiceClient::new(channel),
        &tenant.tenant_id,
    )
    .await
    .unwrap();
    let (tenant_schema,): (String,) =
        sqlx::query_as("SELECT tenant_schema FROM tenants WHERE tenant_id = $1")
            .bind(uuid::Uuid::parse_str(&tenant.tenant_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();

    // A slow export: the test holds the lock the copy of a tenant table needs.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE \"{tenant_schema}\".audit_logs IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *blocker)
    .await
    .unwrap();
    let started = tenants
        .export_tenant(ExportTenantRequest {
            tenant_id: tenant.tenant_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .export
        .unwrap();
    let owner = wait_for_attempt(&pool, 1).await;
    let (victim, survivor) = holder_and_other(replicas, &owner);
    victim.kill().await.unwrap();
    let owner = wait_for_attempt(&pool, 2).await;
    assert!(
        owner.contains(&format!("/{}/", survivor.pid().unwrap())),
        "the survivor holds the export: {owner}"
    );
    blocker.rollback().await.unwrap();

    let mut tenants =
        TenantServiceClient::new(admin_channel(survivor.grpc_addr, &certs).await.unwrap());
    let done = ended(&mut tenants, &started).await;
    assert_eq!(done.state(), ExportState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2, "the lost attempt counts");
    assert_eq!(
        done.last_error.as_ref().map(|e| e.reason.as_str()),
        Some("WORKER_LOST")
    );
    let archive = download(&mut tenants, &done).await;
    assert!(
        entries(&archive)
            .iter()
            .any(|(path, _)| path == "schema/audit_logs.csv")
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // The killed replica was mid-write: what it spooled stays hidden (the sweeper deletes
    // it once old; the survivor's own spool goes in the background), and the only archive is
    // the survivor's.
    let (hidden, archives): (Vec<_>, Vec<_>) = left.into_iter().partition(|n| n.starts_with('.'));
    assert_eq!(
        archives,
        [format!("{}-2.tar.gz", done.export_id)],
        "one archive"
    );
    let spools = [1, 2].map(|n| format!(".{}-{n}.tar.gz.spool", done.export_id));
    assert!(
        hidden.iter().all(|n| spools.contains(n)),
        "only spools, never a partial archive: {hidden:?}"
    );
}
