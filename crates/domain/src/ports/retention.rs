//! Retention: trimming the append-only tables (published outbox events, audit records) of
//! rows past their retention, in bounded batches.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::RepoError;

/// A table whose old rows are trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetainedTable {
    /// The outbox (`tenant_events`): only events already published are ever trimmed.
    Events,
    /// The audit log (`audit_records`).
    Audit,
}

impl RetainedTable {
    /// Every retained table.
    pub const ALL: [Self; 2] = [Self::Events, Self::Audit];

    /// The name metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "tenant_events",
            Self::Audit => "audit_records",
        }
    }
}

impl fmt::Display for RetainedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The trimming side of the event log and the audit log.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Retention: Send + Sync {
    /// Deletes at most `limit` rows of `table` from before `before` (events by when they
    /// occurred, and only published ones; audit records by when the call was made),
    /// skipping rows another replica's trim holds and every row about a tenant under legal
    /// hold. Returns how many it deleted.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`]; what was deleted stays deleted.
    async fn trim(
        &self,
        table: RetainedTable,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, RepoError>;

    /// When the oldest row of `table` was written, if any: for events, the oldest published
    /// one (the age of unpublished events is the outbox's backlog); rows of tenants under
    /// legal hold count.
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] / [`RepoError::Internal`].
    async fn oldest(&self, table: RetainedTable) -> Result<Option<DateTime<Utc>>, RepoError>;
}
