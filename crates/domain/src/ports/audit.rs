//! The audit log of calls.

use async_trait::async_trait;

use crate::{AuditQuery, AuditRecord, RepoError};

/// The audit log: appended in batches by a write-behind writer, read by operators.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends records (ids are unique; appending one twice stores it once).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]; nothing is stored on error.
    async fn append(&self, records: &[AuditRecord]) -> Result<(), RepoError>;

    /// Records matching `query`, newest first.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, RepoError>;
}
