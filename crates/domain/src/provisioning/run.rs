//! A tenant's provisioning run and the rules of its state machine: start, succeed, fail
//! (retry or compensate), cancel, compensate in reverse order, retry a failed or cancelled
//! run.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{AfterFailure, RetryPolicy, RunState, Step, StepError, StepKind, StepState};
use crate::{Error, Reason, TenantId};

/// A run's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub Uuid);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the tenant resource shows of its latest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Its state.
    pub state: RunState,
    /// The step running, waiting or failed, if any.
    pub current_step: Option<StepKind>,
    /// Steps that succeeded.
    pub completed_steps: u32,
    /// Steps in the run.
    pub total_steps: u32,
}

/// A tenant's provisioning run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningRun {
    /// Id.
    pub id: RunId,
    /// The tenant provisioned.
    pub tenant_id: TenantId,
    /// Where the run is.
    pub state: RunState,
    /// The steps, in execution order.
    pub steps: Vec<Step>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the sweeper cancels it if still running.
    pub deadline: DateTime<Utc>,
    /// Why it failed or was cancelled.
    pub error: Option<StepError>,
    /// The step whose failure failed the run.
    pub failed_step: Option<StepKind>,
    /// Steps of an ended run still to be undone, latest first: every step that succeeded,
    /// failed or was in flight (its effects may be partial; undoing is idempotent).
    pub pending_compensation: Vec<StepKind>,
    /// Failed attempts to undo the next pending step.
    pub compensation_attempts: u32,
    /// When the next undo may be attempted, after one failed.
    pub compensation_retry_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version: 1 on creation, +1 per stored change.
    pub version: u64,
}

impl ProvisioningRun {
    /// A new run: every step pending, the first due at once.
    pub fn new(id: RunId, tenant_id: TenantId, now: DateTime<Utc>, timeout: Duration) -> Self {
        let steps = StepKind::ORDER
            .iter()
            .map(|kind| Step {
                kind: *kind,
                state: StepState::Pending,
                attempts: 0,
                last_error: None,
                started_at: None,
                finished_at: None,
                next_attempt_at: (*kind == StepKind::Database).then_some(now),
            })
            .collect();
        Self {
            id,
            tenant_id,
            state: RunState::Running,
            steps,
            created_at: now,
            finished_at: None,
            deadline: now + timeout,
            error: None,
            failed_step: None,
            pending_compensation: Vec::new(),
            compensation_attempts: 0,
            compensation_retry_at: None,
            version: 1,
        }
    }

    /// When a worker should next look at the run: the current step's attempt time (or its
    /// start, if a worker holds it), the next undo, or never.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if let Some(step) = self.current() {
            return match step.state {
                StepState::Running => step.started_at.or(Some(self.created_at)),
                _ => step.next_attempt_at,
            };
        }
        if self.pending_compensation.is_empty() {
            None
        } else {
            Some(
                self.compensation_retry_at
                    .or(self.finished_at)
                    .unwrap_or(self.created_at),
            )
        }
    }

    /// Whether nothing more will happen to the run: it ended and its undo (if any) is done
    /// (until a retry).
    pub fn is_settled(&self) -> bool {
        self.state.is_terminal() && self.pending_compensation.is_empty()
    }

    /// The summary the tenant resource carries.
    pub fn summary(&self) -> RunSummary {
        // While running, the step being worked on; once failed, the step that failed.
        let current_step = self.current().map(|s| s.kind).or(self.failed_step);
        RunSummary {
            run_id: self.id,
            state: self.state,
            current_step,
            completed_steps: u32::try_from(self.completed()).unwrap_or(u32::MAX),
            total_steps: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
        }
    }

    /// The step of this kind.
    pub fn step(&self, kind: StepKind) -> &Step {
        let index = StepKind::ORDER.iter().position(|k| *k == kind).unwrap_or(0);
        &self.steps[index]
    }

    /// The step to work on: the first that has not succeeded, while the run is running.
    pub fn current(&self) -> Option<&Step> {
        if self.state != RunState::Running {
            return None;
        }
        self.steps.iter().find(|s| s.state != StepState::Succeeded)
    }

    /// Steps that succeeded.
    pub fn completed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded)
            .count()
    }

    /// The step of this kind, to change.
    fn step_mut(&mut self, kind: StepKind) -> &mut Step {
        let index = StepKind::ORDER.iter().position(|k| *k == kind).unwrap_or(0);
        &mut self.steps[index]
    }

    fn require_current(&self, kind: StepKind, state: StepState) -> Result<(), Error> {
        match self.current() {
            Some(step) if step.kind == kind && step.state == state => Ok(()),
            _ => Err(Error::precondition(
                Reason::InvalidTransition,
                format!("step {kind} is not {state:?} and current in this run"),
            )),
        }
    }

    /// The current step starts an attempt.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, pending step.
    pub fn start(&mut self, kind: StepKind, now: DateTime<Utc>) -> Result<(), Error> {
        self.require_current(kind, StepState::Pending)?;
        let step = self.step_mut(kind);
        step.state = StepState::Running;
        step.attempts += 1;
        step.started_at.get_or_insert(now);
        step.next_attempt_at = None;
        Ok(())
    }

    /// The running step succeeded; the next becomes due, or the run succeeds.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, running step.
    pub fn succeed(&mut self, kind: StepKind, now: DateTime<Utc>) -> Result<(), Error> {
        self.require_current(kind, StepState::Running)?;
        let step = self.step_mut(kind);
        step.state = StepState::Succeeded;
        step.finished_at = Some(now);
        step.last_error = None;
        if let Some(next) = self
            .steps
            .iter_mut()
            .find(|s| s.state == StepState::Pending)
        {
            next.next_attempt_at = Some(now);
        } else {
            self.state = RunState::Succeeded;
            self.finished_at = Some(now);
        }
        Ok(())
    }

    /// The running step failed: it is retried after the policy's delay, or — out of
    /// attempts, or failed for good ([`StepError::permanent`]) — the run fails and the steps done so far are to be compensated, latest
    /// first.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless `kind` is the current, running step.
    pub fn fail(
        &mut self,
        kind: StepKind,
        error: StepError,
        policy: &RetryPolicy,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Result<AfterFailure, Error> {
        self.require_current(kind, StepState::Running)?;
        let step = self.step_mut(kind);
        step.last_error = Some(error.clone());
        let retry = policy
            .delay_after(step.attempts, jitter)
            .filter(|_| !error.permanent);
        if let Some(delay) = retry {
            step.state = StepState::Pending;
            step.next_attempt_at = Some(now + delay);
            return Ok(AfterFailure::RetryAt(now + delay));
        }
        step.state = StepState::Failed;
        step.finished_at = Some(now);
        self.failed_step = Some(kind);
        Ok(AfterFailure::Compensate(self.end(
            RunState::Failed,
            error,
            now,
        )))
    }

    /// Cancels a running run: pending steps are cancelled and the steps done so far are to
    /// be compensated, latest first.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when the run is not running.
    pub fn cancel(
        &mut self,
        reason: StepError,
        now: DateTime<Utc>,
    ) -> Result<Vec<StepKind>, Error> {
        if self.state != RunState::Running {
            return Err(Error::precondition(
                Reason::RunNotRunning,
                format!(
                    "the run is {:?}; only a running run can be cancelled",
                    self.state
                ),
            ));
        }
        Ok(self.end(RunState::Cancelled, reason, now))
    }

    fn end(&mut self, state: RunState, error: StepError, now: DateTime<Utc>) -> Vec<StepKind> {
        // Whatever was done or attempted may have left something behind: an attempt that
        // timed out or whose worker was lost (now waiting for a retry) may have finished
        // its work all the same.
        let undo: Vec<StepKind> = self
            .steps
            .iter()
            .rev()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Succeeded | StepState::Failed | StepState::Running
                ) || (s.state == StepState::Pending && s.attempts > 0)
            })
            .map(|s| s.kind)
            .collect();
        for step in &mut self.steps {
            if matches!(step.state, StepState::Pending | StepState::Running) {
                step.state = StepState::Cancelled;
                step.next_attempt_at = None;
                step.finished_at = Some(now);
            }
        }
        self.state = state;
        self.error = Some(error);
        self.finished_at = Some(now);
        self.pending_compensation.clone_from(&undo);
        undo
    }

    /// A step of an ended run was undone.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless the step is pending compensation.
    pub fn compensated(&mut self, kind: StepKind, now: DateTime<Utc>) -> Result<(), Error> {
        let Some(position) = self.pending_compensation.iter().position(|k| *k == kind) else {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                format!("step {kind} is not waiting to be compensated"),
            ));
        };
        self.pending_compensation.remove(position);
        self.compensation_attempts = 0;
        self.compensation_retry_at = None;
        let step = self.step_mut(kind);
        step.state = StepState::Compensated;
        step.finished_at = Some(now);
        Ok(())
    }

    /// Undoing the next pending step failed with `error` (kept as the step's last error):
    /// it is tried again after the policy's delay
    /// (compensation never gives up: leaving a half-provisioned tenant behind is worse than
    /// retrying at the longest delay forever). Returns when.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] when nothing is pending compensation.
    pub fn compensation_failed(
        &mut self,
        error: StepError,
        policy: &RetryPolicy,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Error> {
        let Some(kind) = self.pending_compensation.first().copied() else {
            return Err(Error::precondition(
                Reason::InvalidTransition,
                "nothing is waiting to be compensated",
            ));
        };
        // Shown on the step, so an operator sees why the undo does not finish.
        self.step_mut(kind).last_error = Some(error);
        self.compensation_attempts = self.compensation_attempts.saturating_add(1);
        let unbounded = RetryPolicy {
            max_attempts: u32::MAX,
            ..*policy
        };
        let delay = unbounded
            .delay_after(self.compensation_attempts, jitter)
            .unwrap_or(policy.max_delay);
        let at = now + delay;
        self.compensation_retry_at = Some(at);
        Ok(at)
    }

    /// Restarts a failed or cancelled run: every step not done (compensated ones included,
    /// since compensation undid them) is pending again, from the first such step.
    ///
    /// # Errors
    /// [`Error::FailedPrecondition`] unless the run failed or was cancelled and its
    /// compensation has finished (a retry must not race an undo or an abandoned attempt).
    pub fn retry(&mut self, now: DateTime<Utc>, timeout: Duration) -> Result<(), Error> {
        if !matches!(self.state, RunState::Failed | RunState::Cancelled) {
            return Err(Error::precondition(
                Reason::RunNotRetryable,
                format!(
                    "the run is {:?}; only a failed or cancelled run can be retried",
                    self.state
                ),
            ));
        }
        if !self.pending_compensation.is_empty() {
            return Err(Error::precondition(
                Reason::CompensationInProgress,
                "the run's compensation has not finished yet; retry once it has",
            ));
        }
        let mut first = true;
        for step in &mut self.steps {
            if step.state != StepState::Succeeded {
                step.state = StepState::Pending;
                step.attempts = 0;
                step.last_error = None;
                step.started_at = None;
                step.finished_at = None;
                step.next_attempt_at = first.then_some(now);
                first = false;
            }
        }
        self.state = RunState::Running;
        self.error = None;
        self.failed_step = None;
        self.finished_at = None;
        self.deadline = now + timeout;
        Ok(())
    }
}
