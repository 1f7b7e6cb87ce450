//! How a failing step is retried: exponential backoff with full jitter, capped, for a
//! limited number of attempts.

use chrono::{DateTime, Duration, Utc};

use super::StepKind;

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
    /// [0, 1] scales it (full jitter spreads retries of many runs apart), to 1 ms at least.
    /// `None` when no attempt is left.
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
        // Never zero: a retry is always a later claim, never the same pass of the worker.
        Some(Duration::milliseconds(jittered.max(1)))
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
