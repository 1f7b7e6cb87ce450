//! Audit settings: which calls leave an audit record (mutations and denied calls always).

use clap::Args;

use super::ConfigError;
use crate::audit::ReadAudit;

/// Which reads are audited.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Audit")]
pub struct AuditArgs {
    /// Reads (Get, List, Verify, Watch, health, reflection) that are audited besides every
    /// mutation and every denied call: none, all, or a fraction (0.01 = one in 100).
    #[arg(long, env = "TENANTD_AUDIT_READS", default_value = "none")]
    pub audit_reads: String,
}

impl AuditArgs {
    pub(super) fn resolve(self) -> Result<ReadAudit, ConfigError> {
        ReadAudit::parse(&self.audit_reads)
            .map_err(|problem| ConfigError::new("audit-reads", problem))
    }
}
