//! The tenant schema's migrations: the application's SQL files `NNNN_name.sql`, applied in
//! version order to every tenant schema. A set is checked when it is read — file names,
//! versions from 1 without a gap, UTF-8 SQL — and what was applied before is checked
//! against it: a file changed or removed after it was applied is refused, as sqlx's
//! migrator refuses it for the control plane.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// One migration of the tenant schema.
#[derive(Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version: 1, 2, ... (the file's `NNNN`).
    pub version: u32,
    /// Its name (the file's `name`).
    pub name: String,
    /// The SQL, run with `search_path` set to the tenant schema.
    pub sql: String,
    /// SHA-256 of the file.
    pub checksum: [u8; 32],
}

impl Migration {
    /// The migration's file name, `NNNN_name.sql`.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// The checksum, hex (for messages and listings).
    pub fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("version", &self.version)
            .field("name", &self.name)
            .field("checksum", &self.checksum_hex())
            .finish_non_exhaustive()
    }
}

/// A migration as a tenant schema (or the control plane's registry) recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version.
    pub version: u32,
    /// Its name when it was applied.
    pub name: String,
    /// The SHA-256 of its file when it was applied (empty when the schema predates
    /// checksums: then it is not compared).
    pub checksum: Vec<u8>,
}

impl From<&Migration> for AppliedMigration {
    fn from(migration: &Migration) -> Self {
        Self {
            version: migration.version,
            name: migration.name.clone(),
            checksum: migration.checksum.to_vec(),
        }
    }
}

/// Why a directory of migrations was refused: each names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationSetError {
    /// A file that is not `*.sql` (or a directory).
    #[error("{0}: not a .sql file (the directory holds only NNNN_name.sql files)")]
    NotSql(String),
    /// A `.sql` file whose name is not `NNNN_name.sql`.
    #[error(
        "{0}: not named NNNN_name.sql (at least four digits, from 0001, then _ and letters, digits, _ or -)"
    )]
    BadName(String),
    /// Not UTF-8.
    #[error("{0}: not UTF-8 text")]
    NotUtf8(String),
    /// Nothing but white space.
    #[error("{0}: empty")]
    Empty(String),
    /// Two files of one version.
    #[error("{first} and {second}: both are version {version}")]
    Duplicate {
        /// The version.
        version: u32,
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// A version missing between 1 and the newest.
    #[error("version {missing} is missing (the versions run from 1 without a gap; {next} is next)")]
    Gap {
        /// The missing version.
        missing: u32,
        /// The file after the gap.
        next: String,
    },
    /// No migration at all.
    #[error("no NNNN_name.sql file")]
    NoMigrations,
}

/// A difference between what was applied and the set: a file edited after it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file} changed after it was applied (checksum {applied} then, {now} now); add a new migration instead"
)]
pub struct MigrationDrift {
    /// The file as the set has it.
    pub file: String,
    /// Checksum when applied, hex.
    pub applied: String,
    /// Checksum now, hex.
    pub now: String,
}

/// The migrations of the tenant schema, versions 1 to [`MigrationSet::newest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSet {
    migrations: Vec<Migration>,
}

impl MigrationSet {
    /// The set of `files` (name, content), as a directory holds them.
    ///
    /// # Errors
    /// [`MigrationSetError`] naming the first file that is not a migration, or the gap.
    pub fn parse(files: Vec<(String, Vec<u8>)>) -> Result<Self, MigrationSetError> {
        let mut migrations: Vec<(Migration, String)> = Vec::with_capacity(files.len());
        for (file, bytes) in files {
            let Some(stem) = file.strip_suffix(".sql") else {
                return Err(MigrationSetError::NotSql(file));
            };
            let Some((version, name)) = parse_stem(stem) else {
                return Err(MigrationSetError::BadName(file));
            };
            let Ok(sql) = String::from_utf8(bytes) else {
                return Err(MigrationSetError::NotUtf8(file));
            };
            if sql.trim().is_empty() {
                return Err(MigrationSetError::Empty(file));
            }
            let checksum = Sha256::digest(sql.as_bytes()).into();
            migrations.push((
                Migration {
                    version,
                    name: name.to_owned(),
                    sql,
                    checksum,
                },
                file,
            ));
        }
        migrations.sort_by(|a, b| a.0.version.cmp(&b.0.version).then(a.1.cmp(&b.1)));
        if migrations.is_empty() {
            return Err(MigrationSetError::NoMigrations);
        }
        if let Some(pair) = migrations
            .windows(2)
            .find(|pair| pair[0].0.version == pair[1].0.version)
        {
            return Err(MigrationSetError::Duplicate {
                version: pair[0].0.version,
                first: pair[0].1.clone(),
                second: pair[1].1.clone(),
            });
        }
        if let Some((missing, (_, next))) = (1..)
            .zip(&migrations)
            .find(|(expected, (migration, _))| migration.version != *expected)
        {
            return Err(MigrationSetError::Gap {
                missing,
                next: next.clone(),
            });
        }
        Ok(Self {
            migrations: migrations.into_iter().map(|(m, _)| m).collect(),
        })
    }

    /// The newest version.
    pub fn newest(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// Every migration, in version order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The migration of `version`.
    pub fn get(&self, version: u32) -> Option<&Migration> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.migrations.get(index)
    }

    /// The migrations after version `from` up to version `to` (both clamped to the set).
    pub fn between(&self, from: u32, to: u32) -> &[Migration] {
        let len = self.migrations.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let end = usize::try_from(to).unwrap_or(usize::MAX).min(len);
        if start >= end {
            &[]
        } else {
            &self.migrations[start..end]
        }
    }

    /// Checks what was applied against the set: each applied version the set has must
    /// have the checksum it had (a record without a checksum is not compared). Versions
    /// beyond the set's newest are not drift: they come from a newer set (a replica of an
    /// older release leaves them alone).
    ///
    /// # Errors
    /// The first [`MigrationDrift`].
    pub fn check_applied(&self, applied: &[AppliedMigration]) -> Result<(), MigrationDrift> {
        for record in applied {
            let Some(migration) = self.get(record.version) else {
                continue;
            };
            if !record.checksum.is_empty() && record.checksum != migration.checksum {
                return Err(MigrationDrift {
                    file: migration.file_name(),
                    applied: hex(&record.checksum),
                    now: migration.checksum_hex(),
                });
            }
        }
        Ok(())
    }
}

/// `(version, name)` of a file stem `NNNN_name`.
fn parse_stem(stem: &str) -> Option<(u32, &str)> {
    let (digits, name) = stem.split_once('_')?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) || !name_ok {
        return None;
    }
    let version: u32 = digits.parse().ok()?;
    (version > 0).then_some((version, name))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _infallible = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, sql: &str) -> (String, Vec<u8>) {
        (name.to_owned(), sql.as_bytes().to_vec())
    }

    fn set(files: &[(&str, &str)]) -> Result<MigrationSet, MigrationSetError> {
        MigrationSet::parse(files.iter().map(|(n, s)| file(n, s)).collect())
    }

    #[test]
    fn a_directory_of_numbered_files_is_a_set_in_version_order() {
        let set = set(&[
            ("0002_users.sql", "CREATE TABLE users (id int);"),
            ("0001_roles.sql", "CREATE TABLE roles (id int);"),
            ("0003_index-users.sql", "CREATE INDEX ON users (id);"),
        ])
        .unwrap();
        assert_eq!(set.newest(), 3);
        let names: Vec<_> = set.migrations().iter().map(Migration::file_name).collect();
        assert_eq!(
            names,
            ["0001_roles.sql", "0002_users.sql", "0003_index-users.sql"]
        );
        assert_eq!(
            set.between(1, 3)
                .iter()
                .map(|m| m.version)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(set.between(3, 3).is_empty());
        assert!(set.between(5, 9).is_empty());
        assert_eq!(set.get(2).unwrap().name, "users");
        assert_eq!(set.get(0), None);
    }

    #[test]
    fn names_gaps_duplicates_and_content_are_checked_naming_the_file() {
        let cases: [(&[(&str, &str)], MigrationSetError); 8] = [
            (
                &[("0001_a.sql", "x"), ("README.md", "x")],
                MigrationSetError::NotSql("README.md".into()),
            ),
            (
                &[("1_a.sql", "x")],
                MigrationSetError::BadName("1_a.sql".into()),
            ),
            (
                &[("0001-a.sql", "x")],
                MigrationSetError::BadName("0001-a.sql".into()),
            ),
            (
                &[("0000_zero.sql", "x")],
                MigrationSetError::BadName("0000_zero.sql".into()),
            ),
            (
                &[("0001_a.sql", "  \n")],
                MigrationSetError::Empty("0001_a.sql".into()),
            ),
            (
                &[("0001_a.sql", "x"), ("0001_b.sql", "y")],
                MigrationSetError::Duplicate {
                    version: 1,
                    first: "0001_a.sql".into(),
                    second: "0001_b.sql".into(),
                },
            ),
            (
                &[("0001_a.sql", "x"), ("0003_c.sql", "y")],
                MigrationSetError::Gap {
                    missing: 2,
                    next: "0003_c.sql".into(),
                },
            ),
            (&[], MigrationSetError::NoMigrations),
        ];
        for (files, expected) in cases {
            assert_eq!(set(files).unwrap_err(), expected, "{files:?}");
        }
        assert_eq!(
            set(&[("0002_b.sql", "y")]).unwrap_err(),
            MigrationSetError::Gap {
                missing: 1,
                next: "0002_b.sql".into()
            }
        );
        let not_utf8 = MigrationSet::parse(vec![("0001_a.sql".into(), vec![0xff, 0xfe])]);
        assert_eq!(
            not_utf8.unwrap_err(),
            MigrationSetError::NotUtf8("0001_a.sql".into())
        );
    }

    #[test]
    fn an_applied_version_edited_is_drift_and_a_newer_one_is_not() {
        let set = set(&[("0001_a.sql", "CREATE TABLE a ();")]).unwrap();
        let applied = AppliedMigration::from(&set.migrations()[0]);
        assert_eq!(set.check_applied(std::slice::from_ref(&applied)), Ok(()));
        let legacy = AppliedMigration {
            checksum: Vec::new(),
            ..applied.clone()
        };
        assert_eq!(
            set.check_applied(&[legacy]),
            Ok(()),
            "no checksum: not compared"
        );
        let edited = AppliedMigration {
            checksum: vec![0; 32],
            ..applied
        };
        assert!(matches!(
            set.check_applied(&[edited]),
            Err(MigrationDrift { file, .. }) if file == "0001_a.sql"
        ));
        let newer = AppliedMigration {
            version: 2,
            name: "b".into(),
            checksum: vec![1; 32],
        };
        assert_eq!(
            set.check_applied(&[newer]),
            Ok(()),
            "a version of a newer set is not drift"
        );
    }
}
