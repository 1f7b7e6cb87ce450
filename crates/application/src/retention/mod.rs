//! Retention: every replica trims published outbox events and audit records past their
//! retention, in bounded batches, and reports how old the oldest row of each table is.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tenantd_domain::RepoError;
use tenantd_domain::ports::{Clock, RetainedTable, Retention};

/// How long rows are kept; `None` keeps a table's rows forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Published events older than this are deleted.
    pub events: Option<Duration>,
    /// Audit records older than this are deleted.
    pub audit: Option<Duration>,
    /// Most rows one statement deletes (a round deletes batches until one is short).
    pub batch: usize,
    /// Most batches of one table per round, so one round stays bounded; the rest waits
    /// for the next round.
    pub max_batches: usize,
}

impl RetentionSettings {
    /// How long rows of `table` are kept.
    pub fn keep(&self, table: RetainedTable) -> Option<Duration> {
        match table {
            RetainedTable::Events => self.events,
            RetainedTable::Audit => self.audit,
        }
    }
}

/// How retention shows in metrics.
pub trait RetentionObserver: Send + Sync {
    /// `n` rows of `table` were deleted.
    fn deleted(&self, table: RetainedTable, n: u64);
    /// The oldest row of `table` was written at `oldest` (`None`: the table is empty),
    /// measured at `now`.
    fn oldest(&self, table: RetainedTable, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>);
}

/// What one round did to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// The table.
    pub table: RetainedTable,
    /// Rows deleted.
    pub deleted: u64,
    /// Whether rows past retention may be left for the next round (the round stopped at
    /// `max_batches`).
    pub more: bool,
}

/// Trims the retained tables.
#[derive(Clone)]
pub struct RetentionService {
    store: Arc<dyn Retention>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn RetentionObserver>,
    settings: RetentionSettings,
}

impl std::fmt::Debug for RetentionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RetentionService {
    /// Retention over `store` as `settings` say.
    pub fn new(
        store: Arc<dyn Retention>,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn RetentionObserver>,
        settings: RetentionSettings,
    ) -> Self {
        Self {
            store,
            clock,
            observer,
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RetentionSettings {
        &self.settings
    }

    /// One round: each table with a retention is trimmed of rows past it (at most
    /// `max_batches` batches), then the oldest row of every table is measured.
    ///
    /// # Errors
    /// The store's first failure; batches deleted before it stay deleted (and counted).
    pub async fn round(&self) -> Result<Vec<Trimmed>, RepoError> {
        let mut trimmed = Vec::new();
        for table in RetainedTable::ALL {
            let Some(keep) = self.settings.keep(table) else {
                continue;
            };
            let before = self.clock.now() - keep;
            let mut round = Trimmed {
                table,
                deleted: 0,
                more: false,
            };
            let limit = self.settings.batch.max(1);
            for batch in 0..self.settings.max_batches.max(1) {
                let deleted = self.store.trim(table, before, limit).await;
                let deleted = match deleted {
                    Ok(n) => n,
                    Err(err) => {
                        self.observer.deleted(table, round.deleted);
                        return Err(err);
                    }
                };
                round.deleted += deleted;
                if deleted < limit as u64 {
                    break;
                }
                round.more = batch + 1 == self.settings.max_batches.max(1);
            }
            self.observer.deleted(table, round.deleted);
            if round.deleted > 0 {
                tracing::info!(table = %table, rows = round.deleted, "trimmed rows past retention");
            }
            trimmed.push(round);
        }
        for table in RetainedTable::ALL {
            let oldest = self.store.oldest(table).await?;
            self.observer.oldest(table, oldest, self.clock.now());
        }
        Ok(trimmed)
    }
}

#[cfg(test)]
mod tests;
