//! One step of a run, and how a step fails: a stable reason and a message.

use std::fmt;

use chrono::{DateTime, Utc};

use super::{StepKind, StepState};

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
