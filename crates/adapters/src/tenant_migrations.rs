//! Where the tenant schema's migrations come from: the operator's directory of
//! `NNNN_name.sql` files, or the built-in example set (`migrations/tenant/`).

use std::path::Path;

use tenantd_domain::tenant_schema::{MigrationSet, MigrationSetError};

/// The built-in example set (`migrations/tenant/`): roles, users and an audit log. Used
/// when no `--tenant-migrations-dir` is given.
pub const BUILT_IN: [(&str, &str); 2] = [
    (
        "0001_roles_and_users.sql",
        include_str!("../../../migrations/tenant/0001_roles_and_users.sql"),
    ),
    (
        "0002_audit_logs.sql",
        include_str!("../../../migrations/tenant/0002_audit_logs.sql"),
    ),
];

/// The built-in example set.
pub fn built_in() -> MigrationSet {
    MigrationSet::parse(
        BUILT_IN
            .iter()
            .map(|(name, sql)| ((*name).to_owned(), sql.as_bytes().to_vec()))
            .collect(),
    )
    .unwrap_or_else(|err| unreachable!("the built-in tenant migrations are valid: {err}"))
}

/// Why a migrations directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory (or a file in it) cannot be read.
    #[error("{path}: {cause}")]
    Io {
        /// What could not be read.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A file is not a migration, or the versions have a gap.
    #[error(transparent)]
    Set(#[from] MigrationSetError),
}

/// The set in `dir`: every entry must be a `NNNN_name.sql` file (hidden files, such as an
/// editor's, are skipped; anything else is refused, naming it).
///
/// # Errors
/// [`ReadError`] naming the directory or the file.
pub fn read_dir(dir: &Path) -> Result<MigrationSet, ReadError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |cause| ReadError::Io { path, cause }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !entry.file_type().map_err(io(&path))?.is_file() {
            return Err(MigrationSetError::NotSql(name).into());
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        files.push((name, bytes));
    }
    Ok(MigrationSet::parse(files)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_is_the_example_schema() {
        let set = built_in();
        assert_eq!(set.newest(), 2);
        assert_eq!(set.get(1).unwrap().name, "roles_and_users");
    }

    #[test]
    fn a_directory_is_read_skipping_hidden_files_and_refusing_others() {
        let dir = std::env::temp_dir().join(format!("tenantd-migrations-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("0001_init.sql"), "CREATE TABLE a ();").unwrap();
        std::fs::write(dir.join(".0001_init.sql.swp"), "junk").unwrap();
        assert_eq!(read_dir(&dir).unwrap().newest(), 1);
        std::fs::create_dir(dir.join("0002_nested.sql")).unwrap();
        let err = read_dir(&dir).unwrap_err();
        assert!(err.to_string().starts_with("0002_nested.sql:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = read_dir(&dir).unwrap_err();
        assert!(
            missing.to_string().contains("tenantd-migrations-"),
            "{missing}"
        );
    }
}
