//! [`ExportArchives`] on the file system: one gzip'd tar per export attempt in the export
//! directory, written to a hidden `.partial` file, flushed to disk and renamed into place,
//! so a reader only ever finds complete archives; files are readable by their owner only
//! (they hold a tenant's personal data).

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
use tenantd_domain::ports::{ArchiveFile, ExportArchives};
use tenantd_domain::provisioning::StepError;

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

fn write_archive(
    dir: &Path,
    partial: &Path,
    path: &Path,
    files: &[ArchiveFile],
) -> Result<(u64, String), StepError> {
    fs::create_dir_all(dir).map_err(|e| io_error("cannot make the export directory", dir, &e))?;
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
    for entry in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        tar.append_data(&mut header, &entry.path, entry.bytes.as_slice())
            .map_err(|e| io_error("cannot write the archive", dir, &e))?;
    }
    let hashing = tar
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(|e| io_error("cannot write the archive", dir, &e))?;
    let Hashing {
        mut file,
        hash,
        size,
    } = hashing;
    file.flush()
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot flush the archive", dir, &e))?;
    fs::rename(partial, path).map_err(|e| io_error("cannot move the archive in place", dir, &e))?;
    // The rename itself, on disk.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot flush the export directory", dir, &e))?;
    Ok((size, hex(&hash.finalize())))
}

#[async_trait]
impl ExportArchives for FsExportArchives {
    async fn write(&self, name: &str, files: Vec<ArchiveFile>) -> Result<ExportArchive, StepError> {
        let path = self
            .path(name)
            .ok_or_else(|| StepError::permanent("EXPORT_WRITE_FAILED", "not a plain file name"))?;
        let partial = self.dir.join(format!(".{name}.partial"));
        let dir = self.dir.clone();
        let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
        let written = tokio::task::spawn_blocking(move || {
            let result = write_archive(&dir, &partial, &path, &files);
            if result.is_err() {
                // Nothing half-written stays behind.
                let _gone = fs::remove_file(&partial);
            }
            result
        })
        .await
        .map_err(|e| StepError::new("EXPORT_WRITE_FAILED", format!("the writer stopped: {e}")))??;
        Ok(ExportArchive {
            name: name.to_owned(),
            size: written.0,
            sha256: written.1,
            files: count,
        })
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
                if meta.is_file() {
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

    fn files() -> Vec<ArchiveFile> {
        vec![
            ArchiveFile {
                path: "manifest.json".into(),
                bytes: b"{}\n".to_vec(),
            },
            ArchiveFile {
                path: "schema/users.csv".into(),
                bytes: b"id,name\n1,ada\n".to_vec(),
            },
        ]
    }

    #[tokio::test]
    async fn an_archive_is_written_whole_hashed_and_read_back_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let archives = FsExportArchives::new(dir.path().join("exports"));
        let archive = archives.write("e1-1.tar.gz", files()).await.unwrap();
        let on_disk = fs::read(dir.path().join("exports/e1-1.tar.gz")).unwrap();
        assert_eq!(archive.size, on_disk.len() as u64);
        assert_eq!(archive.sha256, hex(&Sha256::digest(&on_disk)));
        assert_eq!(archive.files, 2);
        let mode = fs::metadata(dir.path().join("exports/e1-1.tar.gz"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let mut read = Vec::new();
        let mut offset = 0;
        loop {
            let chunk = archives.read("e1-1.tar.gz", offset, 7).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 7);
            offset += chunk.len() as u64;
            read.extend(chunk);
        }
        assert_eq!(read, on_disk);
        let mut entries = Vec::new();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(read.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            entries.push((entry.path().unwrap().display().to_string(), body));
        }
        assert_eq!(
            entries,
            [
                ("manifest.json".to_owned(), "{}\n".to_owned()),
                ("schema/users.csv".to_owned(), "id,name\n1,ada\n".to_owned())
            ]
        );
        let left: Vec<_> = fs::read_dir(dir.path().join("exports"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["e1-1.tar.gz"], "no partial file left");

        archives.delete("e1-1.tar.gz").await.unwrap();
        archives.delete("e1-1.tar.gz").await.unwrap();
        assert_eq!(
            archives.read("e1-1.tar.gz", 0, 7).await.unwrap_err(),
            RepoError::NotFound
        );
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_written_fails_with_its_reason_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"a file").unwrap();
        let archives = FsExportArchives::new(blocker.join("exports"));
        let err = archives.write("e2-1.tar.gz", files()).await.unwrap_err();
        assert_eq!(err.reason, "EXPORT_DIR_UNWRITABLE", "{err}");
        assert!(!err.message.contains("id,name"), "no data in the message");
        assert_eq!(fs::read(&blocker).unwrap(), b"a file");
    }

    #[tokio::test]
    async fn a_full_disk_fails_with_its_reason_and_leaves_no_partial_file() {
        // /dev/full answers every write with ENOSPC: the archive's directory is a link to a
        // directory whose partial file is a link to it.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".e3-1.tar.gz.partial")).unwrap();
        let archives = FsExportArchives::new(dir.path());
        let err = archives.write("e3-1.tar.gz", files()).await.unwrap_err();
        assert_eq!(err.reason, "EXPORT_DISK_FULL", "{err}");
        assert!(!dir.path().join("e3-1.tar.gz").exists());
        assert!(
            fs::symlink_metadata(dir.path().join(".e3-1.tar.gz.partial")).is_err(),
            "the partial file is removed"
        );
    }

    #[tokio::test]
    async fn archives_and_partial_files_are_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let archives = FsExportArchives::new(dir.path().join("exports"));
        assert_eq!(
            archives.list().await.unwrap(),
            Vec::new(),
            "no directory yet"
        );
        archives.write("e4-1.tar.gz", files()).await.unwrap();
        fs::write(dir.path().join("exports/.e4-2.tar.gz.partial"), b"half").unwrap();
        let names: Vec<String> = archives
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, [".e4-2.tar.gz.partial", "e4-1.tar.gz"]);
        archives.delete(".e4-2.tar.gz.partial").await.unwrap();
        archives.delete("../e4-1.tar.gz").await.unwrap();
        let names: Vec<String> = archives
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["e4-1.tar.gz"], "a name outside is never deleted");
    }

    #[tokio::test]
    async fn names_that_are_not_plain_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archives = FsExportArchives::new(dir.path());
        for name in ["../escape.tar.gz", ".hidden", "a/b.tar.gz", ""] {
            assert!(archives.write(name, files()).await.is_err(), "{name}");
            assert_eq!(
                archives.read(name, 0, 1).await.unwrap_err(),
                RepoError::NotFound
            );
        }
    }
}
