//! The local provisioning providers on PostgreSQL, one file per provider port: each
//! tenant's own schema on its tenant database (the DATABASE step, and rollouts), DNS records with the control plane as their
//! source of truth, and billing subscriptions. Every operation is idempotent, so a step
//! re-run after a crash is safe.

mod billing;
mod databases;
mod dns;
mod dumps;

pub use billing::PgBilling;
pub(crate) use databases::quoted;
pub use databases::{BadSchemaPrefix, PgTenantDatabases, is_valid_schema_prefix};
pub use dns::PgDns;

use tenantd_domain::RepoError;
use tenantd_domain::provisioning::StepError;

/// The step error of a store failure while `doing` something.
fn step_error(doing: &str, err: &RepoError) -> StepError {
    match err {
        RepoError::Unavailable(_) => StepError::new(
            "DATABASE_UNAVAILABLE",
            format!("{doing}: the database is unavailable"),
        ),
        other => StepError::new("DATABASE_ERROR", format!("{doing}: {other}")),
    }
}
