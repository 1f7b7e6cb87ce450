//! `tenantctl legal-hold ...`, `purge ...` and `exports ...`: the end of a tenant's life.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use sha2::{Digest as _, Sha256};
use tenantd_server::proto::tenant_service_client::TenantServiceClient;
use tenantd_server::proto::{
    DownloadExportRequest, Export, ExportTenantRequest, GetExportRequest, GetPurgeRequest, Purge,
    PurgeTenantRequest, ReleaseLegalHoldRequest, SetLegalHoldRequest,
};

use super::tenants::tenant_table;
use crate::output::{Printer, Table, short, step_error, time};
use crate::{Connection, Failure};

/// `tenantctl legal-hold ...`.
#[derive(Debug, Subcommand)]
pub enum LegalHold {
    /// Puts a tenant under legal hold: nothing of it is purged or trimmed until released.
    Set {
        /// The tenant's id.
        tenant_id: String,
        /// Why (a case reference, say).
        #[arg(long)]
        reason: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Releases a tenant's legal hold.
    Release {
        /// The tenant's id.
        tenant_id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

/// `tenantctl purge ...`.
#[derive(Debug, Subcommand)]
pub enum PurgeCommand {
    /// Purges a deleted tenant for good (its schema, DNS, billing, keys, data key).
    Start {
        /// The tenant's id.
        tenant_id: String,
        /// Before its purge time.
        #[arg(long)]
        force: bool,
        /// Only if the tenant is still at this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Shows a purge's steps.
    Get {
        /// The tenant's id.
        tenant_id: String,
    },
}

/// `tenantctl exports ...`.
#[derive(Debug, Subcommand)]
pub enum Exports {
    /// Starts an export of a tenant's data (a tar.gz archive).
    Create {
        /// The tenant's id.
        tenant_id: String,
    },
    /// Shows an export.
    Get {
        /// The tenant's id.
        tenant_id: String,
        /// The export's id.
        export_id: String,
    },
    /// Downloads a finished export, checking its SHA-256.
    Download {
        /// The tenant's id.
        tenant_id: String,
        /// The export's id.
        export_id: String,
        /// Where to write the archive (it appears there only once complete and checked).
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
}

fn purge_table(purge: Option<&Purge>) -> Table {
    let mut table = Table::new(&["STEP", "STATE", "ATTEMPTS", "FINISHED", "ERROR"]);
    let Some(purge) = purge else {
        return table;
    };
    table.row(vec![
        "PURGE".into(),
        if purge.done { "DONE" } else { "RUNNING" }.into(),
        String::new(),
        time(purge.finish_time.as_ref()),
        if purge.forced {
            "forced".into()
        } else {
            String::new()
        },
    ]);
    for step in &purge.steps {
        table.row(vec![
            short(step.kind().as_str_name(), "PURGE_STEP_KIND_"),
            short(step.state().as_str_name(), "PURGE_STEP_STATE_"),
            step.attempts.to_string(),
            time(step.finish_time.as_ref()),
            step_error(step.last_error.as_ref()),
        ]);
    }
    table
}

fn export_table(export: Option<&Export>) -> Table {
    let Some(e) = export else {
        return Table::new(&["FIELD", "VALUE"]);
    };
    Table::fields(vec![
        ("export id", e.export_id.clone()),
        ("tenant", e.tenant_id.clone()),
        ("state", short(e.state().as_str_name(), "EXPORT_STATE_")),
        ("files", format!("{}/{}", e.files_written, e.files)),
        (
            "size",
            if e.size > 0 {
                e.size.to_string()
            } else {
                String::new()
            },
        ),
        ("sha256", e.sha256.clone()),
        ("created", time(e.create_time.as_ref())),
        ("finished", time(e.finish_time.as_ref())),
        ("expires", time(e.expire_time.as_ref())),
        ("error", step_error(e.last_error.as_ref())),
    ])
}

/// Runs a legal-hold command.
pub async fn legal_hold(
    command: LegalHold,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = TenantServiceClient::new(connection.channel());
    match command {
        LegalHold::Set {
            tenant_id,
            reason,
            etag,
        } => {
            let request = SetLegalHoldRequest {
                tenant_id,
                reason,
                etag,
            };
            let held = client.set_legal_hold(connection.request(request)).await?;
            printer.print(held.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
        LegalHold::Release {
            tenant_id,
            reason,
            etag,
        } => {
            let request = ReleaseLegalHoldRequest {
                tenant_id,
                reason,
                etag,
            };
            let released = client
                .release_legal_hold(connection.request(request))
                .await?;
            printer.print(released.get_ref(), |r| tenant_table(r.tenant.as_ref()))?;
        }
    }
    Ok(())
}

/// Runs a purge command.
pub async fn purge(
    command: PurgeCommand,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = TenantServiceClient::new(connection.channel());
    match command {
        PurgeCommand::Start {
            tenant_id,
            force,
            etag,
        } => {
            let request = PurgeTenantRequest {
                tenant_id,
                etag,
                force,
            };
            let started = client.purge_tenant(connection.request(request)).await?;
            printer.print(started.get_ref(), |r| purge_table(r.purge.as_ref()))?;
        }
        PurgeCommand::Get { tenant_id } => {
            let got = client
                .get_purge(connection.request(GetPurgeRequest { tenant_id }))
                .await?;
            printer.print(got.get_ref(), |r| purge_table(r.purge.as_ref()))?;
        }
    }
    Ok(())
}

/// A file being written that is removed unless kept.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _removed = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams an export into `file` through a hidden temporary file beside it, checking the
/// offsets, the size and the SHA-256 the server names; `file` appears only once all hold.
async fn download(
    client: &mut TenantServiceClient<tonic::transport::Channel>,
    request: DownloadExportRequest,
    file: &std::path::Path,
) -> Result<(u64, String), Failure> {
    let name = file
        .file_name()
        .ok_or_else(|| Failure::Usage(format!("--file {} names no file", file.display())))?;
    let mut partial = Partial {
        path: file.with_file_name(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            std::process::id()
        )),
        kept: false,
    };
    let mut stream = client
        .download_export(Connection::stream_request(request))
        .await?
        .into_inner();
    let mut out = std::fs::File::create(&partial.path)
        .with_context(|| format!("cannot write {}", partial.path.display()))?;
    let (mut written, mut hash, mut expected) = (0_u64, Sha256::new(), None);
    while let Some(chunk) = stream.message().await? {
        if u64::try_from(chunk.offset).ok() != Some(written) {
            return Err(Failure::Other(anyhow::anyhow!(
                "the server sent bytes at {} where {written} was expected; nothing written",
                chunk.offset
            )));
        }
        out.write_all(&chunk.data)
            .with_context(|| format!("cannot write {}", partial.path.display()))?;
        hash.update(&chunk.data);
        written += chunk.data.len() as u64;
        expected = Some((chunk.total_size, chunk.sha256));
    }
    out.sync_all().context("cannot flush the archive")?;
    let digest = hash.finalize().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    match expected {
        Some((size, sha256)) if u64::try_from(size).ok() == Some(written) && sha256 == digest => {
            std::fs::rename(&partial.path, file)
                .with_context(|| format!("cannot write {}", file.display()))?;
            partial.kept = true;
            Ok((written, digest))
        }
        _ => Err(Failure::Other(anyhow::anyhow!(
            "the download does not match the archive the server named (size or SHA-256); nothing written"
        ))),
    }
}

/// Runs an exports command.
pub async fn exports(
    command: Exports,
    connection: &Connection,
    printer: &Printer,
) -> Result<(), Failure> {
    let mut client = TenantServiceClient::new(connection.channel());
    match command {
        Exports::Create { tenant_id } => {
            let started = client
                .export_tenant(connection.request(ExportTenantRequest { tenant_id }))
                .await?;
            printer.print(started.get_ref(), |r| export_table(r.export.as_ref()))?;
        }
        Exports::Get {
            tenant_id,
            export_id,
        } => {
            let request = GetExportRequest {
                tenant_id,
                export_id,
            };
            let got = client.get_export(connection.request(request)).await?;
            printer.print(got.get_ref(), |r| export_table(r.export.as_ref()))?;
        }
        Exports::Download {
            tenant_id,
            export_id,
            file,
        } => {
            let request = DownloadExportRequest {
                tenant_id,
                export_id,
            };
            let (bytes, sha256) = download(&mut client, request, &file).await?;
            eprintln!("{}: {bytes} bytes, sha256 {sha256}", file.display());
        }
    }
    Ok(())
}
