//! Translation of sqlx errors into [`RepoError`]: the only place that knows SQLSTATEs.

use tenantd_domain::RepoError;

use super::connect::connection_broke;

/// The unique indexes that keep a slug to one tenant: until its tombstone frees it, and
/// (kept for the previous release during a rolling upgrade) until its purge.
const SLUG_INDEXES: [&str; 2] = ["tenants_slug_reserved", "tenants_slug_unique"];

/// Translates a driver error; `slug` is the slug being written, for the SlugTaken case.
#[expect(clippy::needless_pass_by_value, reason = "shaped for map_err")]
pub(crate) fn translate(err: sqlx::Error, slug: Option<&str>) -> RepoError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // unique_violation
                "23505" if db.constraint().is_some_and(|c| SLUG_INDEXES.contains(&c)) => {
                    RepoError::SlugTaken(slug.unwrap_or_default().to_owned())
                }
                // serialization_failure, deadlock_detected: a concurrent writer won
                "40001" | "40P01" => RepoError::VersionConflict,
                // query_canceled (statement_timeout), admin/crash shutdown, cannot connect now,
                // too many connections, connection exceptions (class 08)
                "57014" | "57P03" | "53300" => RepoError::Unavailable(err.to_string()),
                // the server terminated the session (a restart), or it was lost
                c if c == "57P01" || c == "57P02" || c.starts_with("08") => {
                    connection_broke();
                    RepoError::Unavailable(err.to_string())
                }
                // data exceptions caller input can cause: NUL in text (22021), \u0000 in
                // jsonb (22P05), a timestamp out of range (22008), a value too long (22001);
                // other class-22 errors are our bugs and stay INTERNAL
                "22021" | "22P05" | "22008" | "22001" => RepoError::InvalidValue(err.to_string()),
                _ => RepoError::Internal(err.to_string()),
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            RepoError::Unavailable(err.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => {
            connection_broke();
            RepoError::Unavailable(err.to_string())
        }
        _ => RepoError::Internal(err.to_string()),
    }
}

/// [`translate`] for statements that write no slug.
pub(crate) fn db(err: sqlx::Error) -> RepoError {
    translate(err, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_exhaustion_and_lost_connections_are_unavailable() {
        assert!(matches!(
            db(sqlx::Error::PoolTimedOut),
            RepoError::Unavailable(_)
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(db(sqlx::Error::Io(io)), RepoError::Unavailable(_)));
        assert!(matches!(
            db(sqlx::Error::RowNotFound),
            RepoError::Internal(_)
        ));
    }
}
