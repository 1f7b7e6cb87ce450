//! A rollout: one migration target applied to every tenant schema behind it, wave by wave
//! (a canary wave first, then the rest in creation order), a bounded number of tenants at
//! a time, paused by its error budget instead of failing more tenants.
//!
//! The rules live here, pure, so every store applies the same ones inside its transaction:
//! which tenant a worker may take next ([`Rollout::claimable_wave`]), what a finished
//! tenant does to the rollout ([`Rollout::after_finish`]) and what an operator's command
//! does ([`Rollout::command`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MigrationLimits, Placement};
use crate::event::{Event, EventId, EventKind, Subject};
use crate::ports::Lease;
use crate::provisioning::StepError;
use crate::{Reason, RepoError, TenantId};

/// Why a rollout refused a command (its state does not allow it); a store reports it as
/// [`RepoError::Precondition`] with [`Reason::RolloutStateInvalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandRefused(pub String);

impl From<CommandRefused> for RepoError {
    fn from(refused: CommandRefused) -> Self {
        Self::Precondition(Reason::RolloutStateInvalid, refused.0)
    }
}

/// A rollout's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RolloutId(pub Uuid);

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RolloutState {
    /// Workers migrate its tenants.
    Running,
    /// No tenant is started (those in flight finish); resumed on request.
    Paused,
    /// Every tenant is at the target.
    Succeeded,
    /// Every tenant was tried and some failed (retry them to go on).
    Failed,
    /// Cancelled on request: tenants not started stay as they were.
    Cancelled,
}

impl RolloutState {
    /// Every state.
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Paused,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether it still holds the fleet (only one active rollout at a time).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The state spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rollout's wave: the canary tenants first, then every other tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wave {
    /// The tenants tried first.
    Canary,
    /// Everyone else, in creation order.
    Rest,
}

impl Wave {
    /// Both waves, in order.
    pub const ALL: [Self; 2] = [Self::Canary, Self::Rest];

    /// The wave's number as stores keep it (0, 1).
    pub fn index(self) -> u8 {
        match self {
            Self::Canary => 0,
            Self::Rest => 1,
        }
    }

    /// The wave numbered `index`.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.index() == index)
    }

    /// The wave's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "CANARY",
            Self::Rest => "REST",
        }
    }
}

/// Which tenants make the canary wave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    /// No canary wave.
    None,
    /// These tenants (those behind the target; the others are not in the rollout).
    Tenants(Vec<TenantId>),
    /// Tenants carrying every one of these labels.
    Labels(BTreeMap<String, String>),
    /// The first N tenants in creation order.
    First(u32),
}

/// How many failures a rollout tolerates before it pauses itself: `max(count, ratio x
/// tenants in the rollout)`, counted since it last started or resumed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBudget {
    /// Failures tolerated whatever the rollout's size.
    pub count: u32,
    /// Failures tolerated as a share of the tenants, 0 to 1.
    pub ratio: f64,
}

impl ErrorBudget {
    /// Failures tolerated among `total` tenants.
    pub fn allowed(&self, total: u64) -> u64 {
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "tenant counts are far below 2^52 and the ratio is within [0, 1]"
        )]
        let share = (self.ratio.clamp(0.0, 1.0) * total as f64).floor() as u64;
        u64::from(self.count).max(share)
    }
}

/// What a rollout is asked to do.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutSpec {
    /// The version every tenant is brought to.
    pub target_version: u32,
    /// The canary wave.
    pub canary: Canary,
    /// Tenants migrated at once, over every replica.
    pub max_parallel: u32,
    /// Tenants migrated at once by one replica.
    pub max_parallel_per_replica: u32,
    /// Failures tolerated before the rollout pauses.
    pub error_budget: ErrorBudget,
    /// Each tenant's lock and statement timeouts.
    pub limits: MigrationLimits,
}

/// Where one tenant of a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantRolloutState {
    /// Not started.
    Pending,
    /// A worker migrates it (under a lease).
    Running,
    /// At the target.
    Succeeded,
    /// Its schema was gone when its turn came (the tenant was offboarded).
    Skipped,
    /// Its migration failed; it is at its previous version.
    Failed,
    /// Not started before the rollout was cancelled.
    Cancelled,
}

impl TenantRolloutState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Skipped,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the tenant is still to be done.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Skipped => "SKIPPED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The state spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How many tenants of a wave are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Not started.
    pub pending: u64,
    /// In flight.
    pub running: u64,
    /// At the target.
    pub succeeded: u64,
    /// Schema gone.
    pub skipped: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled before they started.
    pub cancelled: u64,
}

impl StateCounts {
    /// Counts one more tenant in `state`.
    pub fn add(&mut self, state: TenantRolloutState, n: u64) {
        let slot = match state {
            TenantRolloutState::Pending => &mut self.pending,
            TenantRolloutState::Running => &mut self.running,
            TenantRolloutState::Succeeded => &mut self.succeeded,
            TenantRolloutState::Skipped => &mut self.skipped,
            TenantRolloutState::Failed => &mut self.failed,
            TenantRolloutState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// The tenants in `state`.
    pub fn get(&self, state: TenantRolloutState) -> u64 {
        match state {
            TenantRolloutState::Pending => self.pending,
            TenantRolloutState::Running => self.running,
            TenantRolloutState::Succeeded => self.succeeded,
            TenantRolloutState::Skipped => self.skipped,
            TenantRolloutState::Failed => self.failed,
            TenantRolloutState::Cancelled => self.cancelled,
        }
    }

    /// Every tenant counted.
    pub fn total(&self) -> u64 {
        self.pending + self.running + self.succeeded + self.skipped + self.failed + self.cancelled
    }

    /// Tenants still to be done.
    pub fn open(&self) -> u64 {
        self.pending + self.running
    }
}

/// A rollout's counts, wave by wave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolloutCounts {
    /// The canary wave.
    pub canary: StateCounts,
    /// The rest.
    pub rest: StateCounts,
}

impl RolloutCounts {
    /// The counts of `wave`.
    pub fn wave(&self, wave: Wave) -> &StateCounts {
        match wave {
            Wave::Canary => &self.canary,
            Wave::Rest => &self.rest,
        }
    }

    /// The counts of `wave`, to change.
    pub fn wave_mut(&mut self, wave: Wave) -> &mut StateCounts {
        match wave {
            Wave::Canary => &mut self.canary,
            Wave::Rest => &mut self.rest,
        }
    }

    /// Both waves together.
    pub fn all(&self) -> StateCounts {
        let (a, b) = (self.canary, self.rest);
        StateCounts {
            pending: a.pending + b.pending,
            running: a.running + b.running,
            succeeded: a.succeeded + b.succeeded,
            skipped: a.skipped + b.skipped,
            failed: a.failed + b.failed,
            cancelled: a.cancelled + b.cancelled,
        }
    }
}

/// An operator's command to an existing rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutCommand {
    /// Stop starting tenants.
    Pause,
    /// Start tenants again; the failures so far are accepted, those worth another try
    /// (a database that was unreachable) are queued again.
    Resume,
    /// Stop for good; tenants not started stay as they are.
    Cancel,
    /// Queue every failed tenant again and run.
    RetryFailed,
}

impl RolloutCommand {
    /// The command's name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
            Self::RetryFailed => "retry the failed tenants of",
        }
    }
}

/// Which failed tenants a command queues again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// None.
    Nothing,
    /// Those whose failure may pass (not permanent).
    Transient,
    /// All of them.
    AllFailed,
    /// None; the pending ones are cancelled instead.
    CancelPending,
}

/// A rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Id.
    pub id: RolloutId,
    /// What it was asked to do.
    pub spec: RolloutSpec,
    /// Where it is.
    pub state: RolloutState,
    /// Why it is paused, failed or cancelled.
    pub reason: Option<StepError>,
    /// Its tenants, by wave and state.
    pub counts: RolloutCounts,
    /// Failures accepted by the last resume (the budget counts those after).
    pub accepted_failures: u64,
    /// Who started it.
    pub created_by: String,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version, 1 on creation.
    pub version: u64,
}

impl Rollout {
    /// A new rollout, RUNNING, version 1, with no tenants counted yet.
    pub fn start(id: RolloutId, spec: RolloutSpec, created_by: String, now: DateTime<Utc>) -> Self {
        Self {
            id,
            spec,
            state: RolloutState::Running,
            reason: None,
            counts: RolloutCounts::default(),
            accepted_failures: 0,
            created_by,
            created_at: now,
            updated_at: now,
            finished_at: None,
            version: 1,
        }
    }

    /// The wave a worker may take a pending tenant from: the canary wave while it has
    /// tenants to do, then the rest once the canary wave has none in flight either.
    /// `None` when the rollout is not running or nothing is pending.
    pub fn claimable_wave(&self) -> Option<Wave> {
        if self.state != RolloutState::Running {
            return None;
        }
        let canary = &self.counts.canary;
        if canary.pending > 0 {
            return Some(Wave::Canary);
        }
        (canary.running == 0 && self.counts.rest.pending > 0).then_some(Wave::Rest)
    }

    /// What the rollout does once a tenant of `wave` finished (`counts` already include
    /// it): pause when the canary wave failed or the budget is spent, end when no tenant
    /// is left. Returns whether the state changed.
    pub fn after_finish(&mut self, wave: Wave, failed: bool, now: DateTime<Utc>) -> bool {
        if self.state != RolloutState::Running {
            return false;
        }
        let all = self.counts.all();
        if failed {
            if wave == Wave::Canary && self.counts.rest.total() > 0 {
                let canary = self.counts.canary.total();
                self.change(
                    RolloutState::Paused,
                    Some(StepError::new(
                        "CANARY_FAILED",
                        format!(
                            "a tenant of the canary wave ({canary} tenants) failed; the rest waits (resume to go on anyway)"
                        ),
                    )),
                    now,
                );
                return true;
            }
            let allowed = self.spec.error_budget.allowed(all.total());
            let failures = all.failed.saturating_sub(self.accepted_failures);
            if failures > allowed {
                self.change(
                    RolloutState::Paused,
                    Some(StepError::new(
                        "ERROR_BUDGET_EXHAUSTED",
                        format!(
                            "{failures} tenants failed, more than the {allowed} the error budget allows; the rest waits"
                        ),
                    )),
                    now,
                );
                return true;
            }
        }
        self.settle(now)
    }

    /// Ends a running rollout with nothing left to do: SUCCEEDED, or FAILED when tenants
    /// failed. Returns whether the state changed.
    pub fn settle(&mut self, now: DateTime<Utc>) -> bool {
        let all = self.counts.all();
        if self.state != RolloutState::Running || all.open() > 0 {
            return false;
        }
        if all.failed > 0 {
            let failed = all.failed;
            self.change(
                RolloutState::Failed,
                Some(StepError::new(
                    "TENANTS_FAILED",
                    format!("{failed} tenants failed and are at their previous version (retry them once fixed)"),
                )),
                now,
            );
        } else {
            self.change(RolloutState::Succeeded, None, now);
        }
        true
    }

    /// Checks an operator's command and applies its state change; the store then queues
    /// or cancels tenants as the returned [`Requeue`] says, recounts, and [`Self::settle`]s.
    ///
    /// # Errors
    /// [`CommandRefused`] when the rollout's state does not allow the command.
    pub fn command(
        &mut self,
        command: RolloutCommand,
        now: DateTime<Utc>,
    ) -> Result<Requeue, CommandRefused> {
        let (allowed, next, requeue) = match command {
            RolloutCommand::Pause => (
                self.state == RolloutState::Running,
                RolloutState::Paused,
                Requeue::Nothing,
            ),
            RolloutCommand::Resume => (
                self.state == RolloutState::Paused,
                RolloutState::Running,
                Requeue::Transient,
            ),
            RolloutCommand::Cancel => (
                self.state.is_active(),
                RolloutState::Cancelled,
                Requeue::CancelPending,
            ),
            RolloutCommand::RetryFailed => (
                matches!(self.state, RolloutState::Paused | RolloutState::Failed)
                    && self.counts.all().failed > 0,
                RolloutState::Running,
                Requeue::AllFailed,
            ),
        };
        if !allowed {
            return Err(CommandRefused(format!(
                "cannot {} a {} rollout{}",
                command.as_str(),
                self.state,
                if command == RolloutCommand::RetryFailed && self.counts.all().failed == 0 {
                    " without failed tenants"
                } else {
                    ""
                }
            )));
        }
        let reason = match command {
            RolloutCommand::Pause => {
                Some(StepError::new("PAUSED_BY_OPERATOR", "paused on request"))
            }
            RolloutCommand::Cancel => Some(StepError::new(
                "CANCELLED_BY_OPERATOR",
                "cancelled on request",
            )),
            RolloutCommand::Resume | RolloutCommand::RetryFailed => None,
        };
        self.change(next, reason, now);
        Ok(requeue)
    }

    /// After the store applied a command's [`Requeue`] and recounted: the failures left
    /// are accepted (the budget counts new ones only).
    pub fn accept_failures(&mut self) {
        self.accepted_failures = self.counts.all().failed;
    }

    fn change(&mut self, state: RolloutState, reason: Option<StepError>, now: DateTime<Utc>) {
        self.state = state;
        self.reason = reason;
        self.updated_at = now;
        self.finished_at = (!state.is_active()).then_some(now);
    }

    /// The event describing the rollout's state now.
    pub fn state_event(&self, id: EventId, now: DateTime<Utc>) -> Event {
        let all = self.counts.all();
        Event {
            id,
            subject: Subject::Rollout(self.id),
            occurred_at: now,
            kind: EventKind::RolloutStateChanged {
                rollout_id: self.id.to_string(),
                state: self.state.as_str().to_owned(),
                target_version: self.spec.target_version,
                reason: self.reason.clone(),
                tenants: all.total(),
                succeeded: all.succeeded,
                failed: all.failed,
            },
        }
    }
}

/// One tenant of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutTenant {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its wave.
    pub wave: Wave,
    /// Its place in the wave (0, 1, ...).
    pub position: u32,
    /// Where it is.
    pub state: TenantRolloutState,
    /// Attempts started (a worker lost mid-way counts one).
    pub attempts: u32,
    /// The version its schema was recorded at when the rollout started (or, for an entry
    /// stored without one, when its migration ran).
    pub from_version: Option<u32>,
    /// The version it is at after it.
    pub to_version: Option<u32>,
    /// Why it failed.
    pub error: Option<StepError>,
    /// When its (first) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A tenant a worker claimed from the running rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTenant {
    /// The rollout as stored when claimed.
    pub rollout: Rollout,
    /// The tenant's entry, RUNNING.
    pub tenant: RolloutTenant,
    /// Where its schema lives (`None`: a tenant made before placements were recorded).
    pub placement: Option<Placement>,
    /// The worker's lease on the entry.
    pub lease: Lease,
}

/// How a tenant's turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantOutcome {
    /// Migrated (or found at the target already).
    Migrated {
        /// The version before.
        from: u32,
        /// The version after.
        to: u32,
    },
    /// Its schema no longer exists.
    Gone,
    /// The migration failed; the schema is at its previous version.
    Failed(StepError),
}

impl TenantOutcome {
    /// The entry state the outcome leads to.
    pub fn state(&self) -> TenantRolloutState {
        match self {
            Self::Migrated { .. } => TenantRolloutState::Succeeded,
            Self::Gone => TenantRolloutState::Skipped,
            Self::Failed(_) => TenantRolloutState::Failed,
        }
    }
}

#[cfg(test)]
mod tests;
