//! Exports: where archives are written and how long they are kept.

use std::path::PathBuf;

use clap::Args;

use super::ConfigError;

/// Longest an export is kept: a year.
const MAX_RETENTION_HOURS: u32 = 8_760;

/// Where exports are written and for how long.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Exports")]
pub struct ExportArgs {
    /// Directory the export archives are written to (made if missing; every replica must
    /// see the same one, e.g. a shared volume, to serve downloads of each other's exports).
    #[arg(long, env = "TENANTD_EXPORT_DIR", default_value = ".tenantd/exports")]
    pub export_dir: PathBuf,
    /// Hours an export and its archive are kept before they are deleted.
    #[arg(
        long,
        env = "TENANTD_EXPORT_RETENTION_HOURS",
        default_value_t = 72,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RETENTION_HOURS))
    )]
    pub export_retention_hours: u32,
    /// Export workers per replica (each writes one archive at a time).
    #[arg(
        long,
        env = "TENANTD_EXPORT_WORKERS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=16)
    )]
    pub export_workers: u32,
}

/// Exports, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportsConfig {
    /// Where archives go.
    pub dir: PathBuf,
    /// How long an export is kept.
    pub retention: chrono::Duration,
    /// Workers per replica.
    pub workers: usize,
}

impl ExportArgs {
    pub(super) fn resolve(self) -> Result<ExportsConfig, ConfigError> {
        if self.export_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("export-dir", "must not be empty"));
        }
        Ok(ExportsConfig {
            dir: self.export_dir,
            retention: chrono::Duration::hours(i64::from(self.export_retention_hours)),
            workers: usize::try_from(self.export_workers)
                .map_err(|_| ConfigError::new("export-workers", "does not fit this machine"))?,
        })
    }
}
