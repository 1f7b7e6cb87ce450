//! Exports: the durable export runs (with the leases workers claim them under), the
//! archives they write, and what a tenant schema holds, read for an archive.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::export::{Export, ExportArchive, ExportId, ExportProgress};
use crate::ports::Lease;
use crate::provisioning::StepError;
use crate::tenant_schema::Placement;
use crate::{RepoError, TenantId};

/// An export a worker claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedExport {
    /// The export as stored when claimed.
    pub export: Export,
    /// The worker's lease on it.
    pub lease: Lease,
}

/// Durable exports and the queue workers claim them from. (Not mocked: the service's tests
/// run on the in-memory adapter, which passes the same contract suite as PostgreSQL.)
#[async_trait]
pub trait ExportRepository: Send + Sync {
    /// Stores a new export.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when its tenant does not exist; [`RepoError::Unavailable`] /
    /// [`RepoError::Internal`].
    async fn create(&self, export: &Export) -> Result<(), RepoError>;

    /// One export.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn get(&self, id: ExportId) -> Result<Option<Export>, RepoError>;

    /// Claims the export due longest ago (due at or before `now`, no live lease on it) for
    /// `owner` until `now + lease_for`. Concurrent claimers never get the same export.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: chrono::Duration,
    ) -> Result<Option<ClaimedExport>, RepoError>;

    /// Extends a lease to `until` while the export is still at `version`; `false` when the
    /// lease is no longer held (the worker must stop).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn renew(
        &self,
        id: ExportId,
        version: u64,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<bool, RepoError>;

    /// Gives a lease up (a no-op when it is no longer held).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn release(&self, id: ExportId, lease: &Lease) -> Result<(), RepoError>;

    /// Records how far the attempt in flight got, under its lease; `false` when the lease is
    /// no longer held (nothing is recorded).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn progress(
        &self,
        id: ExportId,
        lease: &Lease,
        progress: ExportProgress,
    ) -> Result<bool, RepoError>;

    /// Stores a worker's change to an export (its `version` is the stored one plus one),
    /// renewing the lease until `renew_until`.
    ///
    /// # Errors
    /// [`RepoError::LeaseLost`] when the lease is no longer held;
    /// [`RepoError::VersionConflict`] when the stored version is not `expected_version`;
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]. Nothing is stored on error.
    async fn save(
        &self,
        export: &Export,
        expected_version: u64,
        lease: &Lease,
        renew_until: DateTime<Utc>,
    ) -> Result<(), RepoError>;

    /// Every export of `tenant`, oldest first.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn of_tenant(&self, tenant: TenantId) -> Result<Vec<Export>, RepoError>;

    /// Exports whose expiry is before `now`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Export>, RepoError>;

    /// Forgets an export (its archive deleted first).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn delete(&self, id: ExportId) -> Result<(), RepoError>;
}

/// One file of an archive: its path in the archive and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Path in the archive (`tenant.json`, `schema/users.csv`).
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// A file an archive holds, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Path in the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// The first file of an archive, made from every other file's path, size and hash.
pub type ManifestOf = dyn Fn(&[ArchivedFile]) -> ArchiveFile + Send + Sync;

/// An archive being written: files are added in order, each whole or in parts, without
/// holding them in memory; nothing of it is visible until [`ArchiveWriter::finish`]. A
/// writer dropped unfinished leaves nothing behind.
#[async_trait]
pub trait ArchiveWriter: Send {
    /// Adds a file with all of its bytes.
    ///
    /// # Errors
    /// A [`StepError`]: `EXPORT_DIR_UNWRITABLE`, `EXPORT_DISK_FULL`, `EXPORT_WRITE_FAILED`.
    async fn file(&mut self, path: &str, bytes: &[u8]) -> Result<(), StepError>;

    /// Starts a file whose bytes come in parts ([`ArchiveWriter::append`]).
    ///
    /// # Errors
    /// As [`ArchiveWriter::file`].
    async fn open(&mut self, path: &str) -> Result<(), StepError>;

    /// Adds bytes to the file last opened.
    ///
    /// # Errors
    /// As [`ArchiveWriter::file`]; `EXPORT_WRITE_FAILED` when no file is open.
    async fn append(&mut self, bytes: &[u8]) -> Result<(), StepError>;

    /// Writes the archive — the file `manifest` makes of the others first, then the others
    /// in the order they were added — and makes it visible complete, in one rename.
    ///
    /// # Errors
    /// As [`ArchiveWriter::file`]; nothing is left behind on error.
    async fn finish(self: Box<Self>, manifest: &ManifestOf) -> Result<ExportArchive, StepError>;
}

/// Where export archives live: written whole or not at all, read in chunks, deleted.
#[async_trait]
pub trait ExportArchives: Send + Sync {
    /// Starts archive `name` (a file name, unique per attempt).
    ///
    /// # Errors
    /// A [`StepError`]: `EXPORT_DIR_UNWRITABLE`, `EXPORT_DISK_FULL`, `EXPORT_WRITE_FAILED`.
    async fn begin(&self, name: &str) -> Result<Box<dyn ArchiveWriter>, StepError>;

    /// Up to `len` bytes of archive `name` from `offset` (fewer at its end, none past it).
    ///
    /// # Errors
    /// [`RepoError::NotFound`] when there is no such archive; [`RepoError::Unavailable`]
    /// when it cannot be read.
    async fn read(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, RepoError>;

    /// Every file in the archives' place (archives and partial files), with when each
    /// last changed: for the sweeper, which deletes what no export records.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when the place cannot be listed.
    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, RepoError>;

    /// Deletes archive (or partial file) `name` (a no-op when it is gone).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when it cannot be deleted.
    async fn delete(&self, name: &str) -> Result<(), RepoError>;
}

/// Where a dump's tables go as they are read: each table's DDL, then its rows in parts.
#[async_trait]
pub trait DumpSink: Send {
    /// A table starts: its name and its `CREATE TABLE` statement (columns, types, defaults,
    /// not-null, constraints).
    ///
    /// # Errors
    /// The sink's own failure (say, a full disk), which ends the dump.
    async fn table(&mut self, name: &str, ddl: &str) -> Result<(), StepError>;

    /// More of the current table's rows: CSV, the first part starting with the header.
    ///
    /// # Errors
    /// As [`DumpSink::table`].
    async fn rows(&mut self, csv: &[u8]) -> Result<(), StepError>;
}

/// What a tenant schema holds, for exports.
#[async_trait]
pub trait TenantSchemaDumps: Send + Sync {
    /// Every table of the tenant's schema, in name order, from one snapshot, into `sink`
    /// (nothing when it has none or does not exist).
    ///
    /// # Errors
    /// A [`StepError`] with a stable reason when the database cannot be read, or the
    /// sink's.
    async fn dump(
        &self,
        tenant: TenantId,
        placement: &Placement,
        sink: &mut dyn DumpSink,
    ) -> Result<(), StepError>;
}
