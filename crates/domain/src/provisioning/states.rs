//! Where steps and runs are: the kinds of step in execution order and the states of a
//! step and of a run.

use std::fmt;

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
