//! [`ExportArchives`] on the file system: one gzip'd tar per export attempt in the export
//! directory. Files added to an archive are spooled, hashed as they come, into a hidden
//! `.<name>.spool/` directory (a dump never sits in memory); finishing writes the tar —
//! manifest first — to a hidden `.<name>.partial` file, flushes it to disk and renames it
//! into place, so a reader only ever finds complete archives. Everything is readable by its
//! owner only (it holds a tenant's personal data); a writer dropped unfinished removes what
//! it spooled.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use tenantd_domain::RepoError;
use tenantd_domain::export::ExportArchive;
use tenantd_domain::ports::{ArchiveFile, ArchiveWriter, ArchivedFile, ExportArchives, ManifestOf};
use tenantd_domain::provisioning::StepError;
use tokio::io::AsyncWriteExt as _;

/// Export archives under one directory.
#[derive(Debug, Clone)]
pub struct FsExportArchives {
    dir: PathBuf,
}

impl FsExportArchives {
    /// Archives in `dir` (made when the first one is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The path of archive `name`, which must be a plain file name.
    fn path(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        plain.then(|| self.dir.join(name))
    }
}

/// Whether `name` is a writer's spool directory, `.<archive>.spool` (our own names: the
/// case is exact).
fn is_spool(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".spool"))
        .is_some_and(|n| !n.is_empty())
}

/// Counts and hashes what goes through to the file.
struct Hashing {
    file: File,
    hash: Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The step error of an I/O failure while `doing` something in the export directory.
fn io_error(doing: &str, dir: &Path, err: &io::Error) -> StepError {
    let reason = match err.raw_os_error() {
        // ENOSPC, EDQUOT
        Some(28 | 122) => "EXPORT_DISK_FULL",
        // EACCES, EPERM, EROFS, ENOTDIR, EEXIST (a file where the directory should be)
        Some(13 | 1 | 30 | 20 | 17) => "EXPORT_DIR_UNWRITABLE",
        _ if err.kind() == io::ErrorKind::PermissionDenied => "EXPORT_DIR_UNWRITABLE",
        _ => "EXPORT_WRITE_FAILED",
    };
    StepError::new(reason, format!("{doing} in {}: {err}", dir.display()))
}

/// A spooled file: where it is in the archive, where its bytes wait, what they are.
struct Spooled {
    path: String,
    at: PathBuf,
    size: u64,
    sha256: String,
}

/// The file being appended to.
struct Open {
    path: String,
    at: PathBuf,
    /// Buffered: a table's rows come a row at a time.
    file: tokio::io::BufWriter<tokio::fs::File>,
    hash: Sha256,
    size: u64,
}

/// An archive being written under [`FsExportArchives`].
struct FsArchiveWriter {
    dir: PathBuf,
    name: String,
    spool: PathBuf,
    files: Vec<Spooled>,
    open: Option<Open>,
    finished: bool,
}

impl Drop for FsArchiveWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Unfinished (failed, or dropped mid-way): nothing of it stays.
            let partial = self.dir.join(format!(".{}.partial", self.name));
            remove_later(self.spool.clone(), Some(partial));
        }
    }
}

/// Bytes a spool file gathers before it is written.
const SPOOL_BUFFER: usize = 256 * 1024;

/// Removes `spool` (a directory) and `partial` (a file) on the blocking pool when there is
/// a runtime (a spool may hold gigabytes, slow to unlink), else at once.
fn remove_later(spool: PathBuf, partial: Option<PathBuf>) {
    let remove = move || {
        let _gone = fs::remove_dir_all(&spool);
        if let Some(partial) = partial {
            let _gone = fs::remove_file(&partial);
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

impl FsArchiveWriter {
    fn failed(&self, doing: &str, err: &io::Error) -> StepError {
        io_error(doing, &self.dir, err)
    }

    /// Closes the open file, if any, into the spooled list.
    async fn close(&mut self) -> Result<(), StepError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        open.file
            .flush()
            .await
            .map_err(|e| self.failed("cannot spool an export file", &e))?;
        self.files.push(Spooled {
            path: open.path,
            at: open.at,
            size: open.size,
            sha256: hex(&open.hash.finalize()),
        });
        Ok(())
    }
}

#[async_trait]
impl ArchiveWriter for FsArchiveWriter {
    async fn file(&mut self, path: &str, bytes: &[u8]) -> Result<(), StepError> {
        self.open(path).await?;
        self.append(bytes).await?;
        self.close().await
    }

    async fn open(&mut self, path: &str) -> Result<(), StepError> {
        self.close().await?;
        let at = self.spool.join(self.files.len().to_string());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&at)
            .await
            .map_err(|e| self.failed("cannot spool an export file", &e))?;
        self.open = Some(Open {
            path: path.to_owned(),
            at,
            file: tokio::io::BufWriter::with_capacity(SPOOL_BUFFER, file),
            hash: Sha256::new(),
            size: 0,
        });
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        let dir = self.dir.clone();
        let Some(open) = self.open.as_mut() else {
            return Err(StepError::new(
                "EXPORT_WRITE_FAILED",
                "bytes for an archive with no file open",
            ));
        };
        open.file
            .write_all(bytes)
            .await
            .map_err(|e| io_error("cannot spool an export file", &dir, &e))?;
        open.hash.update(bytes);
        open.size += bytes.len() as u64;
        Ok(())
    }

    async fn finish(
        mut self: Box<Self>,
        manifest: &ManifestOf,
    ) -> Result<ExportArchive, StepError> {
        self.close().await?;
        let listed: Vec<ArchivedFile> = self
            .files
            .iter()
            .map(|f| ArchivedFile {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect();
        let first = manifest(&listed);
        let files: Vec<(String, PathBuf)> = self
            .files
            .iter()
            .map(|f| (f.path.clone(), f.at.clone()))
            .collect();
        let (dir, name) = (self.dir.clone(), self.name.clone());
        let written = tokio::task::spawn_blocking(move || write_tar(&dir, &name, &first, &files))
            .await
            .map_err(|e| {
                StepError::new("EXPORT_WRITE_FAILED", format!("the writer stopped: {e}"))
            })??;
        // In place: what is left of it is the spool, which goes now.
        self.finished = true;
        remove_later(self.spool.clone(), None);
        Ok(ExportArchive {
            name: self.name.clone(),
            size: written.0,
            sha256: written.1,
            files: u32::try_from(self.files.len() + 1).unwrap_or(u32::MAX),
        })
    }
}

/// Writes archive `name` in `dir`: `first`, then each spooled file, to its partial file;
/// flushes it and renames it into place. Its size and SHA-256.
fn write_tar(
    dir: &Path,
    name: &str,
    first: &ArchiveFile,
    files: &[(String, PathBuf)],
) -> Result<(u64, String), StepError> {
    let partial = dir.join(format!(".{name}.partial"));
    let written = write_partial(dir, &partial, first, files);
    match written {
        Ok(written) => {
            fs::rename(&partial, dir.join(name))
                .map_err(|e| io_error("cannot move the archive in place", dir, &e))?;
            // The rename itself, on disk.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("cannot flush the export directory", dir, &e))?;
            Ok(written)
        }
        Err(err) => {
            // Nothing half-written stays behind.
            let _gone = fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Writes `first` and the spooled `files` as a tar.gz to `partial`, flushed to disk; its
/// size and SHA-256.
fn write_partial(
    dir: &Path,
    partial: &Path,
    first: &ArchiveFile,
    files: &[(String, PathBuf)],
) -> Result<(u64, String), StepError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(partial)
        .map_err(|e| io_error("cannot create the archive", dir, &e))?;
    let hashing = Hashing {
        file,
        hash: Sha256::new(),
        size: 0,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(hashing, Compression::default()));
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header
    };
    let written = |e: io::Error| io_error("cannot write the archive", dir, &e);
    tar.append_data(
        &mut header(first.bytes.len() as u64),
        &first.path,
        first.bytes.as_slice(),
    )
    .map_err(written)?;
    for (path, at) in files {
        let spooled = File::open(at).map_err(written)?;
        let size = spooled.metadata().map_err(written)?.len();
        tar.append_data(&mut header(size), path, spooled)
            .map_err(written)?;
    }
    let hashing = tar
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(written)?;
    let Hashing {
        mut file,
        hash,
        size,
    } = hashing;
    file.flush()
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot flush the archive", dir, &e))?;
    Ok((size, hex(&hash.finalize())))
}

#[async_trait]
impl ExportArchives for FsExportArchives {
    async fn begin(&self, name: &str) -> Result<Box<dyn ArchiveWriter>, StepError> {
        if self.path(name).is_none() {
            return Err(StepError::permanent(
                "EXPORT_WRITE_FAILED",
                "not a plain file name",
            ));
        }
        let spool = self.dir.join(format!(".{name}.spool"));
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io_error("cannot make the export directory", &self.dir, &e))?;
        tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&spool)
            .await
            .map_err(|e| io_error("cannot make a spool directory", &self.dir, &e))?;
        Ok(Box::new(FsArchiveWriter {
            dir: self.dir.clone(),
            name: name.to_owned(),
            spool,
            files: Vec::new(),
            open: None,
            finished: false,
        }))
    }

    async fn read(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, RepoError> {
        let path = self.path(name).ok_or(RepoError::NotFound)?;
        tokio::task::spawn_blocking(move || {
            let mut file = File::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => RepoError::NotFound,
                _ => RepoError::Unavailable(format!("cannot open an export archive: {e}")),
            })?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| {
                RepoError::Unavailable(format!("cannot read an export archive: {e}"))
            })?;
            let mut chunk = Vec::with_capacity(len);
            file.take(len as u64).read_to_end(&mut chunk).map_err(|e| {
                RepoError::Unavailable(format!("cannot read an export archive: {e}"))
            })?;
            Ok(chunk)
        })
        .await
        .map_err(|e| RepoError::Internal(format!("the reader stopped: {e}")))?
    }

    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, RepoError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(RepoError::Unavailable(format!(
                        "cannot list the export directory: {e}"
                    )));
                }
            };
            let mut files = Vec::new();
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let name = entry.file_name();
                let (Some(name), Ok(modified)) = (name.to_str(), meta.modified()) else {
                    continue;
                };
                if meta.is_file() || (meta.is_dir() && is_spool(name)) {
                    files.push((name.to_owned(), DateTime::<Utc>::from(modified)));
                }
            }
            files.sort();
            Ok(files)
        })
        .await
        .map_err(|e| RepoError::Internal(format!("the lister stopped: {e}")))?
    }

    async fn delete(&self, name: &str) -> Result<(), RepoError> {
        if is_spool(name) && !name.contains('/') {
            return match tokio::fs::remove_dir_all(self.dir.join(name)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(RepoError::Unavailable(format!(
                    "cannot delete an export spool: {e}"
                ))),
            };
        }
        let partial = name.starts_with('.') && name.ends_with(".partial");
        let path = if partial && !name.contains('/') {
            Some(self.dir.join(name))
        } else {
            self.path(name)
        };
        let Some(path) = path else {
            return Ok(());
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RepoError::Unavailable(format!(
                "cannot delete an export archive: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// The manifest the tests' archives start with: each file's path, size and hash.
    fn manifest(files: &[ArchivedFile]) -> ArchiveFile {
        let lines: Vec<String> = files
            .iter()
            .map(|f| format!("{} {} {}", f.path, f.size, f.sha256))
            .collect();
        ArchiveFile {
            path: "manifest.txt".into(),
            bytes: lines.join("\n").into_bytes(),
        }
    }

    /// Writes archive `name`: `tenant.json` whole, `schema/users.csv` in two parts.
    async fn write(archives: &FsExportArchives, name: &str) -> Result<ExportArchive, StepError> {
        let mut writer = archives.begin(name).await?;
        writer.file("tenant.json", b"{}").await?;
        writer.open("schema/users.csv").await?;
        writer.append(b"id,name\n").await?;
        writer.append(b"1,ada\n").await?;
        writer.finish(&manifest).await
    }

    fn entries(archive: &[u8]) -> Vec<(String, String)> {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        tar.entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut body = String::new();
                entry.read_to_string(&mut body).unwrap();
                (entry.path().unwrap().display().to_string(), body)
            })
            .collect()
    }

    /// The names in `dir` once what writers remove in the background is gone (at most a
    /// second).
    async fn settled(dir: &Path) -> Vec<String> {
        for _ in 0..100 {
            let left = names(dir);
            if left.iter().all(|n| !n.starts_with('.')) {
                return left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        names(dir)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn an_archive_is_written_whole_hashed_and_read_back_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let exports = dir.path().join("exports");
        let archives = FsExportArchives::new(&exports);
        let archive = write(&archives, "e1-1.tar.gz").await.unwrap();
        let on_disk = fs::read(exports.join("e1-1.tar.gz")).unwrap();
        assert_eq!(archive.size, on_disk.len() as u64);
        assert_eq!(archive.sha256, hex(&Sha256::digest(&on_disk)));
        assert_eq!(archive.files, 3);
        let mode = fs::metadata(exports.join("e1-1.tar.gz"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let mut read = Vec::new();
        loop {
            let chunk = archives
                .read("e1-1.tar.gz", read.len() as u64, 7)
                .await
                .unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 7);
            read.extend(chunk);
        }
        assert_eq!(read, on_disk);
        let csv_hash = hex(&Sha256::digest(b"id,name\n1,ada\n"));
        assert_eq!(
            entries(&read),
            [
                (
                    "manifest.txt".to_owned(),
                    format!(
                        "tenant.json 2 {}\nschema/users.csv 14 {csv_hash}",
                        hex(&Sha256::digest(b"{}"))
                    )
                ),
                ("tenant.json".to_owned(), "{}".to_owned()),
                ("schema/users.csv".to_owned(), "id,name\n1,ada\n".to_owned())
            ],
            "the manifest first, the files in order, the parts joined"
        );
        assert_eq!(
            settled(&exports).await,
            ["e1-1.tar.gz"],
            "no spool or partial file left"
        );

        archives.delete("e1-1.tar.gz").await.unwrap();
        archives.delete("e1-1.tar.gz").await.unwrap();
        assert_eq!(
            archives.read("e1-1.tar.gz", 0, 7).await.unwrap_err(),
            RepoError::NotFound
        );
    }

    #[tokio::test]
    async fn a_writer_dropped_unfinished_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let archives = FsExportArchives::new(dir.path());
        let mut writer = archives.begin("e5-1.tar.gz").await.unwrap();
        writer.open("schema/big.csv").await.unwrap();
        writer.append(b"a,b\n").await.unwrap();
        assert_eq!(names(dir.path()), [".e5-1.tar.gz.spool"]);
        drop(writer);
        assert_eq!(settled(dir.path()).await, Vec::<String>::new());
        let mut writer = archives.begin("e5-2.tar.gz").await.unwrap();
        let err = writer.append(b"orphan").await.unwrap_err();
        assert_eq!(err.reason, "EXPORT_WRITE_FAILED");
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_written_fails_with_its_reason_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"a file").unwrap();
        let archives = FsExportArchives::new(blocker.join("exports"));
        let err = write(&archives, "e2-1.tar.gz").await.unwrap_err();
        assert_eq!(err.reason, "EXPORT_DIR_UNWRITABLE", "{err}");
        assert!(!err.message.contains("id,name"), "no data in the message");
        assert_eq!(fs::read(&blocker).unwrap(), b"a file");
    }

    #[tokio::test]
    async fn a_full_disk_fails_with_its_reason_and_leaves_no_partial_file() {
        // /dev/full answers every write with ENOSPC: the archive's partial file is a link
        // to it.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".e3-1.tar.gz.partial")).unwrap();
        let archives = FsExportArchives::new(dir.path());
        let err = write(&archives, "e3-1.tar.gz").await.unwrap_err();
        assert_eq!(err.reason, "EXPORT_DISK_FULL", "{err}");
        assert_eq!(
            settled(dir.path()).await,
            Vec::<String>::new(),
            "no archive, partial file or spool left"
        );
    }

    #[tokio::test]
    async fn archives_spools_and_partial_files_are_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let exports = dir.path().join("exports");
        let archives = FsExportArchives::new(&exports);
        assert_eq!(
            archives.list().await.unwrap(),
            Vec::new(),
            "no directory yet"
        );
        write(&archives, "e4-1.tar.gz").await.unwrap();
        // The writer's own spool goes on the blocking pool: gone before ours are made.
        assert_eq!(settled(&exports).await, ["e4-1.tar.gz"]);
        fs::write(exports.join(".e4-2.tar.gz.partial"), b"half").unwrap();
        fs::create_dir(exports.join(".e4-3.tar.gz.spool")).unwrap();
        fs::write(exports.join(".e4-3.tar.gz.spool/0"), b"spooled").unwrap();
        let listed: Vec<String> = archives
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            listed,
            [".e4-2.tar.gz.partial", ".e4-3.tar.gz.spool", "e4-1.tar.gz"]
        );
        archives.delete(".e4-2.tar.gz.partial").await.unwrap();
        archives.delete(".e4-3.tar.gz.spool").await.unwrap();
        archives.delete("../e4-1.tar.gz").await.unwrap();
        assert_eq!(
            names(&exports),
            ["e4-1.tar.gz"],
            "a name outside is never deleted"
        );
    }

    #[tokio::test]
    async fn names_that_are_not_plain_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archives = FsExportArchives::new(dir.path());
        for name in ["../escape.tar.gz", ".hidden", "a/b.tar.gz", ""] {
            assert!(archives.begin(name).await.is_err(), "{name}");
            assert_eq!(
                archives.read(name, 0, 1).await.unwrap_err(),
                RepoError::NotFound
            );
        }
    }
}
