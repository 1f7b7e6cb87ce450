//! The tenant's own schema: the application's migrations ([`MigrationSet`]), where each
//! tenant's schema lives ([`Placement`]), and what the control plane records of it
//! ([`TenantSchema`]).

mod migrations;
mod placement;
mod rollout;

use chrono::{DateTime, Utc};

pub use migrations::{
    AppliedMigration, Migration, MigrationDrift, MigrationSet, MigrationSetError,
};
pub use placement::{DEFAULT_TENANT_DATABASE, Placement, PlacementRule};
pub use rollout::{
    Canary, ClaimedTenant, CommandRefused, ErrorBudget, Requeue, Rollout, RolloutCommand,
    RolloutCounts, RolloutId, RolloutSpec, RolloutState, RolloutTenant, StateCounts, TenantOutcome,
    TenantRolloutState, Wave,
};

use crate::TenantId;
use crate::provisioning::StepError;

/// What the control plane records of a tenant's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSchema {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Where it lives (`None`: a tenant made before placements were recorded, at the
    /// default placement).
    pub placement: Option<Placement>,
    /// The newest migration applied to it; 0 before provisioning made it (or when it was
    /// made before versions were recorded: a rollout then reads the schema itself).
    pub version: u32,
    /// When it last changed version.
    pub migrated_at: Option<DateTime<Utc>>,
    /// Why its last migration failed, until one succeeds.
    pub last_error: Option<StepError>,
}

/// Limits of one tenant's migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationLimits {
    /// Longest wait for a lock, in milliseconds (0: no limit).
    pub lock_timeout_ms: u64,
    /// Longest statement, in milliseconds (0: no limit).
    pub statement_timeout_ms: u64,
}

/// What migrating a tenant's schema did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version it was at.
    pub from: u32,
    /// The version it is at now.
    pub to: u32,
    /// The migrations applied (none when it was at the target already).
    pub applied: Vec<AppliedMigration>,
}
