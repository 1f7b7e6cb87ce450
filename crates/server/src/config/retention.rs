//! Retention of the append-only tables: published outbox events and audit records.

use std::time::Duration;

use clap::Args;
use tenantd_application::RetentionSettings;

use super::{ConfigError, millis};

/// Longest retention of events and audit records: a hundred years.
const MAX_DAYS: u32 = 36_500;

/// Most batches of one table per round (with the batch size, what one round may delete).
const MAX_BATCHES: usize = 100;

/// How long events and audit records are kept.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionArgs {
    /// Days a published outbox event is kept (by when it occurred); 0 keeps events
    /// forever. Unpublished events are never deleted.
    #[arg(
        long,
        env = "TENANTD_EVENT_RETENTION_DAYS",
        default_value_t = 90,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DAYS))
    )]
    pub event_retention_days: u32,
    /// Days an audit record is kept; 0 keeps them forever.
    #[arg(
        long,
        env = "TENANTD_AUDIT_RETENTION_DAYS",
        default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DAYS))
    )]
    pub audit_retention_days: u32,
    /// How often each replica trims what is past retention, in milliseconds.
    #[arg(
        long,
        env = "TENANTD_RETENTION_INTERVAL_MS",
        default_value_t = 600_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub retention_interval_ms: u64,
    /// Most rows one delete statement removes (a round deletes batches until one is
    /// short, at most 100 per table).
    #[arg(
        long,
        env = "TENANTD_RETENTION_BATCH",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub retention_batch: u32,
}

/// Retention, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// What is kept, and the batches.
    pub settings: RetentionSettings,
    /// How often a round runs.
    pub interval: Duration,
}

impl RetentionArgs {
    pub(super) fn resolve(self) -> Result<RetentionConfig, ConfigError> {
        let days = |d: u32| (d > 0).then(|| chrono::Duration::days(i64::from(d)));
        Ok(RetentionConfig {
            settings: RetentionSettings {
                events: days(self.event_retention_days),
                audit: days(self.audit_retention_days),
                batch: usize::try_from(self.retention_batch).map_err(|_| {
                    ConfigError::new("retention-batch", "does not fit this machine")
                })?,
                max_batches: MAX_BATCHES,
            },
            interval: millis(self.retention_interval_ms),
        })
    }
}
