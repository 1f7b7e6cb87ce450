//! Provisioning runs (DESIGN.md §4): the ordered steps that bring a new tenant to life,
//! each with its state, attempts and last error, and the rules of the run's state machine —
//! retries with backoff, failure with compensation in reverse order, cancellation, retry of
//! a failed or cancelled run. Pure state: the engine that executes steps and the stores that
//! keep runs build on it.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::{Error, TenantId};

/// What a step does, in execution order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepKind {
    /// The tenant's own PostgreSQL schema and its migrations.
    Database,
    /// DNS records for `<slug>.<base domain>`.
    Dns,
    /// The tenant's first admin API key.
    Credentials,
    /// Billing customer and subscription for the plan.
    Billing,
    /// The welcome notification request.
    Notification,
}

impl StepKind {
    /// Every step, in execution order.
    pub const ORDER: [Self; 5] = [
        Self::Database,
        Self::Dns,
        Self::Credentials,
        Self::Billing,
        Self::Notification,
    ];

    /// The step's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "DATABASE",
            Self::Dns => "DNS",
            Self::Credentials => "CREDENTIALS",
            Self::Billing => "BILLING",
            Self::Notification => "NOTIFICATION",
        }
    }

    /// The step spelled `name` (as [`StepKind::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ORDER.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepState {
    /// Waiting for its turn or its next attempt.
    Pending,
    /// Being executed by a worker.
    Running,
    /// Done.
    Succeeded,
    /// Exhausted its attempts.
    Failed,
    /// Never run: the run failed or was cancelled first.
    Cancelled,
    /// Was done, then undone.
    Compensated,
}

impl StepState {
    /// Every state.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Compensated,
    ];

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Compensated => "COMPENSATED",
        }
    }

    /// The state spelled `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Steps are pending or running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step exhausted its attempts.
    Failed,
    /// Cancelled on request or by the deadline.
    Cancelled,
}

impl RunState {
    /// Every state.
    pub const ALL: [Self; 4] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the run has ended (until a retry).
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }

    /// The state's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
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

/// A machine-readable failure: a stable UPPER_SNAKE_CASE reason and a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepError {
    /// Stable reason code, e.g. `DNS_PROVIDER_UNAVAILABLE`.
    pub reason: String,
    /// Human-readable detail (never a secret or an email).
    pub message: String,
    /// Whether trying again cannot help (a name held by another tenant, a quota used up):
    /// the run fails at once instead of spending its attempts. Decided by whoever failed;
    /// not stored with the step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
}

impl StepError {
    /// A failure with this reason and message, worth retrying.
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure that no retry can mend.
    pub fn permanent(reason: &str, message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(reason, message)
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub kind: StepKind,
    /// Where it is.
    pub state: StepState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<StepError>,
    /// When it first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it may be attempted (again), while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

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

/// Exponential backoff with full jitter, capped, for a limited number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Attempts a step gets before the run fails.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`, after `attempts` failed ones; `jitter` in
    /// [0, 1] scales it (full jitter spreads retries of many runs apart). `None` when no
    /// attempt is left.
    pub fn delay_after(&self, attempts: u32, jitter: f64) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exponent = attempts.saturating_sub(1).min(30);
        let ceiling = self
            .base
            .checked_mul(1 << exponent)
            .map_or(self.max_delay, |d| d.min(self.max_delay));
        let millis = ceiling.num_milliseconds();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_precision_loss,
            reason = "delays are milliseconds far below 2^52"
        )]
        let jittered = (millis as f64 * jitter.clamp(0.0, 1.0)) as i64;
        Some(Duration::milliseconds(jittered))
    }
}

/// What the engine must do after a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the step again at this time.
    RetryAt(DateTime<Utc>),
    /// The run failed: undo these steps, in this order.
    Compensate(Vec<StepKind>),
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
            _ => Err(Error::FailedPrecondition(format!(
                "step {kind} is not {state:?} and current in this run"
            ))),
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
            return Err(Error::FailedPrecondition(format!(
                "the run is {:?}; only a running run can be cancelled",
                self.state
            )));
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
            return Err(Error::FailedPrecondition(format!(
                "step {kind} is not waiting to be compensated"
            )));
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
            return Err(Error::FailedPrecondition(
                "nothing is waiting to be compensated".into(),
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
            return Err(Error::FailedPrecondition(format!(
                "the run is {:?}; only a failed or cancelled run can be retried",
                self.state
            )));
        }
        if !self.pending_compensation.is_empty() {
            return Err(Error::FailedPrecondition(
                "the run's compensation has not finished yet; retry once it has".into(),
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

#[cfg(test)]
mod tests;
