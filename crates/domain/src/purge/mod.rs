//! Purges: the durable run that takes a deleted tenant apart — its schema, DNS records,
//! billing subscription, API keys, idempotency records and exports — and leaves its
//! tombstone.
//! Pure state; the service that drives purges and the stores that keep them build on it.
//!
//! A purge undoes provisioning, so nothing undoes a purge: a failed step is retried with
//! backoff until it succeeds (every step is idempotent), its error shown on the step.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::provisioning::{RetryPolicy, StepError};
use crate::{Error, Reason, TenantId};

#[cfg(test)]
mod tests;

/// What a purge step does, in execution order (the reverse of provisioning, then the
/// tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PurgeStepKind {
    /// Drops the tenant's schema (or database) and forgets its version.
    Database,
    /// Deletes the DNS records made for it.
    Dns,
    /// Cancels its billing subscription.
    Billing,
    /// Revokes every API key and deletes the unclaimed first key's sealed secret.
    ApiKeys,
    /// Deletes its idempotency records (they hold the tenant as first created).
    Idempotency,
    /// Deletes its exports and their archives (they hold its data).
    Exports,
    /// Destroys its data key: what was sealed with it (its contact email, in rows and in
    /// backups alike) can never be opened again.
    DataKey,
    /// Turns the tenant into its tombstone and writes `TenantPurged`.
    Tombstone,
}

impl PurgeStepKind {
    /// Every step, in execution order.
    pub const ORDER: [Self; 8] = [
        Self::Database,
        Self::Dns,
        Self::Billing,
        Self::ApiKeys,
        Self::Idempotency,
        Self::Exports,
        Self::DataKey,
        Self::Tombstone,
    ];

    /// The step's name as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "DATABASE",
            Self::Dns => "DNS",
            Self::Billing => "BILLING",
            Self::ApiKeys => "API_KEYS",
            Self::Idempotency => "IDEMPOTENCY",
            Self::Exports => "EXPORTS",
            Self::DataKey => "DATA_KEY",
            Self::Tombstone => "TOMBSTONE",
        }
    }

    /// The step spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ORDER.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for PurgeStepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a purge step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeStepState {
    /// Waiting for its turn or its next attempt.
    Pending,
    /// Being executed by a worker.
    Running,
    /// Done.
    Succeeded,
}

impl PurgeStepState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Running, Self::Succeeded];

    /// The state's name as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
        }
    }

    /// The state spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One step of a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeStep {
    /// What it does.
    pub kind: PurgeStepKind,
    /// Where it is.
    pub state: PurgeStepState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last failure (kept after a later success, for the record).
    pub last_error: Option<StepError>,
    /// When it first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it succeeded.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it may be attempted (again), while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A tenant's purge (at most one per tenant: a purge never fails for good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// The tenant purged.
    pub tenant_id: TenantId,
    /// Whether it was forced before the tenant's purge time.
    pub forced: bool,
    /// Who asked for it: a principal's id, or `retention` for the sweeper.
    pub requested_by: String,
    /// The steps, in execution order.
    pub steps: Vec<PurgeStep>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When its last step succeeded.
    pub finished_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version: 1 on creation, +1 per stored change.
    pub version: u64,
}

impl Purge {
    /// A new purge: every step pending, the first due at once.
    pub fn new(
        tenant_id: TenantId,
        forced: bool,
        requested_by: String,
        now: DateTime<Utc>,
    ) -> Self {
        let steps = PurgeStepKind::ORDER
            .iter()
            .map(|kind| PurgeStep {
                kind: *kind,
                state: PurgeStepState::Pending,
                attempts: 0,
                last_error: None,
                started_at: None,
                finished_at: None,
                next_attempt_at: (*kind == PurgeStepKind::Database).then_some(now),
            })
            .collect();
        Self {
            tenant_id,
            forced,
            requested_by,
            steps,
            created_at: now,
            finished_at: None,
            version: 1,
        }
    }

    /// Whether every step succeeded.
    pub fn is_done(&self) -> bool {
        self.finished_at.is_some()
    }

    /// The step to work on: the first that has not succeeded.
    pub fn current(&self) -> Option<&PurgeStep> {
        self.steps
            .iter()
            .find(|s| s.state != PurgeStepState::Succeeded)
    }

    /// When a worker should next look at it: the current step's attempt time (or its start,
    /// if a worker holds it), or never once done.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        let step = self.current()?;
        match step.state {
            PurgeStepState::Running => step.started_at.or(Some(self.created_at)),
            _ => step.next_attempt_at,
        }
    }

    /// The step of this kind.
    pub fn step(&self, kind: PurgeStepKind) -> &PurgeStep {
        &self.steps[Self::index(kind)]
    }

    fn index(kind: PurgeStepKind) -> usize {
        PurgeStepKind::ORDER
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0)
    }

    fn current_mut(
        &mut self,
        kind: PurgeStepKind,
        state: PurgeStepState,
    ) -> Result<&mut PurgeStep, Error> {
        match self.current() {
            Some(step) if step.kind == kind && step.state == state => {
                Ok(&mut self.steps[Self::index(kind)])
            }
            _ => Err(Error::precondition(
                Reason::InvalidTransition,
                format!("purge step {kind} is not {state:?} and current"),
            )),
        }
    }

    /// The current step starts an attempt.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, pending step.
    pub fn start(&mut self, kind: PurgeStepKind, now: DateTime<Utc>) -> Result<(), Error> {
        let step = self.current_mut(kind, PurgeStepState::Pending)?;
        step.state = PurgeStepState::Running;
        step.attempts = step.attempts.saturating_add(1);
        step.started_at.get_or_insert(now);
        step.next_attempt_at = None;
        Ok(())
    }

    /// The running step succeeded: the next is due now, or the purge is done.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, running step.
    pub fn succeed(&mut self, kind: PurgeStepKind, now: DateTime<Utc>) -> Result<(), Error> {
        let step = self.current_mut(kind, PurgeStepState::Running)?;
        step.state = PurgeStepState::Succeeded;
        step.finished_at = Some(now);
        match self
            .steps
            .iter_mut()
            .find(|s| s.state == PurgeStepState::Pending)
        {
            Some(next) => next.next_attempt_at = Some(now),
            None => self.finished_at = Some(now),
        }
        Ok(())
    }

    /// The running step failed with `error`: it is tried again after the policy's delay,
    /// however many attempts it took (a purge never gives up; at the longest delay once the
    /// policy's attempts are spent). Returns when.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, running step.
    pub fn fail(
        &mut self,
        kind: PurgeStepKind,
        error: StepError,
        policy: &RetryPolicy,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Error> {
        let step = self.current_mut(kind, PurgeStepState::Running)?;
        let unbounded = RetryPolicy {
            max_attempts: u32::MAX,
            ..*policy
        };
        let delay = unbounded
            .delay_after(step.attempts, jitter)
            .unwrap_or(policy.max_delay);
        step.state = PurgeStepState::Pending;
        step.last_error = Some(error);
        step.next_attempt_at = Some(now + delay);
        Ok(now + delay)
    }
}
