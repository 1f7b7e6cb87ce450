//! Exports (offboarding, and a tenant's own copy of its data): the use cases behind
//! ExportTenant, GetExport and DownloadExport, the sweeper that deletes expired exports,
//! and the [`ExportEngine`] whose workers write archives.
//!
//! An archive holds a manifest (`manifest.json`: format version, tenant, time, each file's
//! size and SHA-256), the control-plane record with the contact email opened
//! (`tenant.json`), the tenant's events (`events.jsonl`), its API keys' metadata (never a
//! secret, `api_keys.json`), and every table of its schema as `schema/<table>.sql` (the
//! DDL) and `schema/<table>.csv` (the rows, COPY's CSV with a header).

mod archive;
mod engine;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantd_domain::export::{Export, ExportId, ExportState};
use tenantd_domain::ports::{
    ApiKeyRepository, Clock, EventLog, ExportArchives, ExportRepository, IdGenerator,
    TenantRepository, TenantSchemaDumps,
};
use tenantd_domain::provisioning::RetryPolicy;
use tenantd_domain::{Error, Reason, RepoError, TenantId};
use tokio::sync::Notify;
use tracing::instrument;

pub use archive::{FORMAT_VERSION, MANIFEST};
pub use engine::ExportEngine;

use crate::tenant_schemas::PlacementPolicy;

/// Bytes per DownloadExport message.
pub const CHUNK: usize = 64 * 1024;

/// Tunables of exports (their defaults are the server's configuration defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSettings {
    /// Workers per replica.
    pub workers: usize,
    /// How long a claim lasts without renewal (renewed every third of it while writing).
    pub lease: Duration,
    /// How often an idle worker looks for due work (a local request wakes one at once).
    pub poll_interval: Duration,
    /// Longest attempt.
    pub attempt_timeout: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// How long an export and its archive are kept.
    pub retention: chrono::Duration,
}

/// How exports show in metrics.
pub trait ExportObserver: Send + Sync {
    /// An attempt ended with `result` (`succeeded`, `failed`, `timeout`, `lost`).
    fn attempt(&self, result: &'static str, duration: Duration);
    /// An archive of `bytes` was written.
    fn written(&self, bytes: u64);
    /// Expired exports were deleted.
    fn expired(&self, n: u64);
}

/// What an export reads, besides its own store.
#[derive(Clone)]
pub struct ExportSources {
    /// The tenant record.
    pub tenants: Arc<dyn TenantRepository>,
    /// Its events.
    pub events: Arc<dyn EventLog>,
    /// Its API keys.
    pub api_keys: Arc<dyn ApiKeyRepository>,
    /// Its schema's tables.
    pub dumps: Arc<dyn TenantSchemaDumps>,
    /// Where its schema is.
    pub placement: Arc<PlacementPolicy>,
}

impl std::fmt::Debug for ExportSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSources").finish_non_exhaustive()
    }
}

/// The export use cases.
#[derive(Clone)]
pub struct ExportService {
    exports: Arc<dyn ExportRepository>,
    archives: Arc<dyn ExportArchives>,
    tenants: Arc<dyn TenantRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    settings: ExportSettings,
    observer: Arc<dyn ExportObserver>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for ExportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ExportService {
    /// A service over its ports.
    pub fn new(
        exports: Arc<dyn ExportRepository>,
        archives: Arc<dyn ExportArchives>,
        tenants: Arc<dyn TenantRepository>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        settings: ExportSettings,
        observer: Arc<dyn ExportObserver>,
    ) -> Self {
        Self {
            exports,
            archives,
            tenants,
            clock,
            ids,
            settings,
            observer,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The engine whose workers write archives from `sources`, on `exports` (background
    /// work's store); it wakes when this service starts an export.
    pub fn engine(
        &self,
        exports: Arc<dyn ExportRepository>,
        sources: ExportSources,
    ) -> ExportEngine {
        let service = Self {
            exports,
            ..self.clone()
        };
        ExportEngine::new(service, sources)
    }

    /// The settings.
    pub fn settings(&self) -> &ExportSettings {
        &self.settings
    }

    /// Starts an export of a tenant (ExportTenant), for `requested_by`. Any tenant whose
    /// purge has not started.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::FailedPrecondition`] (`PURGE_IN_PROGRESS`,
    /// `TENANT_PURGED`).
    #[instrument(skip_all, fields(tenant_id = %tenant_id))]
    pub async fn export(&self, requested_by: &str, tenant_id: &str) -> Result<Export, Error> {
        let id = TenantId::parse_field(tenant_id, "tenant_id")?;
        let tenant = self
            .tenants
            .get(id)
            .await?
            .ok_or_else(|| Error::tenant_not_found(id))?;
        // Being purged or purged: nothing is left (or soon will be) to export.
        tenant.ensure_not_purge()?;
        let now = self.clock.now();
        let export = Export::new(
            ExportId(self.ids.new_v7()),
            id,
            requested_by.to_owned(),
            now,
            self.settings.retention,
        );
        match self.exports.create(&export).await {
            Ok(()) => {}
            Err(RepoError::NotFound) => return Err(Error::tenant_not_found(id)),
            Err(err) => return Err(err.into()),
        }
        tracing::info!(tenant_id = %id, export_id = %export.id, requested_by, "export started");
        self.wake.notify_one();
        Ok(export)
    }

    /// One export of `tenant_id` (GetExport). An export of another tenant is not found, as
    /// one that does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for malformed ids; [`Error::NotFound`] (`EXPORT_NOT_FOUND`).
    #[instrument(skip_all, fields(tenant_id = %tenant_id, export_id = %export_id))]
    pub async fn get(&self, tenant_id: &str, export_id: &str) -> Result<Export, Error> {
        let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
        let id = uuid::Uuid::parse_str(export_id)
            .map(ExportId)
            .map_err(|_| Error::invalid("export_id", "must be a UUID"))?;
        match self.exports.get(id).await? {
            Some(export) if export.tenant_id == tenant => Ok(export),
            _ => Err(Error::not_found(Reason::ExportNotFound, "export", id)),
        }
    }

    /// The archive of a finished export (DownloadExport): its size and a reader of its
    /// chunks.
    ///
    /// # Errors
    /// As [`Self::get`]; [`Error::FailedPrecondition`] (`EXPORT_NOT_READY`) unless it
    /// succeeded.
    pub async fn download(&self, tenant_id: &str, export_id: &str) -> Result<Download, Error> {
        let export = self.get(tenant_id, export_id).await?;
        let archive = match (export.state, &export.archive) {
            (ExportState::Succeeded, Some(archive)) => archive.clone(),
            (state, _) => {
                return Err(Error::precondition(
                    Reason::ExportNotReady,
                    format!(
                        "the export is {}; only a succeeded export can be downloaded",
                        state.as_str()
                    ),
                ));
            }
        };
        Ok(Download {
            archives: self.archives.clone(),
            name: archive.name,
            size: archive.size,
            sha256: archive.sha256,
        })
    }

    /// One round of the sweeper: deletes exports past their expiry, archive first.
    /// Returns how many.
    ///
    /// # Errors
    /// Store failures (the next round tries again).
    pub async fn sweep(&self) -> Result<u64, Error> {
        let expired = self.exports.expired(self.clock.now(), 100).await?;
        let mut deleted = 0;
        for export in expired {
            if let Some(archive) = &export.archive
                && let Err(err) = self.archives.delete(&archive.name).await
            {
                // The next export's archive may still be deletable: one stuck file must not
                // stop expiry for all.
                tracing::warn!(export_id = %export.id, error = %err, "cannot delete an expired export's archive; retried at the next sweep");
                continue;
            }
            self.exports.delete(export.id).await?;
            deleted += 1;
        }
        if deleted > 0 {
            self.observer.expired(deleted);
        }
        self.sweep_strays().await?;
        Ok(deleted)
    }

    /// Deletes the export files no export records, once older than two attempts: partial
    /// files and spools of writers that died (a process killed mid-write) and archives whose
    /// export is gone or records another. Files not named as exports are never touched (the
    /// directory may hold others).
    async fn sweep_strays(&self) -> Result<(), Error> {
        let settle = chrono::Duration::from_std(self.settings.attempt_timeout * 2)
            .unwrap_or(chrono::Duration::hours(1));
        let before = self.now() - settle;
        for (name, modified) in self.archives.list().await? {
            if modified > before {
                continue;
            }
            // A writer's leftovers: its partial file or its spool.
            let partial = name.strip_prefix('.').and_then(|n| {
                n.strip_suffix(".partial")
                    .or_else(|| n.strip_suffix(".spool"))
            });
            let recorded = match (partial, archive_export(&name)) {
                // A partial file of ours: never recorded.
                (Some(archive), _) if archive_export(archive).is_some() => false,
                (_, Some(id)) => self
                    .exports
                    .get(id)
                    .await?
                    .and_then(|e| e.archive)
                    .is_some_and(|a| a.name == name),
                // Not an export's file.
                _ => true,
            };
            if !recorded {
                tracing::info!(file = %name, "deleting a stray file of the export directory");
                self.archives.delete(&name).await?;
            }
        }
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// The export an archive's name (`<export id>-<attempt>.tar.gz`) belongs to.
fn archive_export(name: &str) -> Option<ExportId> {
    let stem = name.strip_suffix(".tar.gz")?;
    let (id, attempt) = stem.rsplit_once('-')?;
    attempt.parse::<u32>().ok()?;
    uuid::Uuid::parse_str(id).ok().map(ExportId)
}

/// A finished export's archive, read chunk by chunk.
#[derive(Clone)]
pub struct Download {
    archives: Arc<dyn ExportArchives>,
    /// Its file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// The chunk at `offset` (at most [`CHUNK`] bytes; empty at the end).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the archive is gone (expired meanwhile);
    /// [`Error::Unavailable`] when it cannot be read.
    pub async fn chunk(&self, offset: u64) -> Result<Vec<u8>, Error> {
        match self.archives.read(&self.name, offset, CHUNK).await {
            Ok(bytes) => Ok(bytes),
            Err(RepoError::NotFound) => Err(Error::not_found(
                Reason::ExportNotFound,
                "export archive",
                &self.name,
            )),
            Err(err) => Err(err.into()),
        }
    }
}
