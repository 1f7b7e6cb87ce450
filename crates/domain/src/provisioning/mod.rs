//! Provisioning runs (DESIGN.md §4): the ordered steps that bring a new tenant to life,
//! each with its state, attempts and last error, and the rules of the run's state machine —
//! retries with backoff, failure with compensation in reverse order, cancellation, retry of
//! a failed or cancelled run. Pure state: the engine that executes steps and the stores that
//! keep runs build on it.

mod retry;
mod run;
mod states;
mod step;
#[cfg(test)]
mod tests;

pub use retry::{AfterFailure, RetryPolicy};
pub use run::{ProvisioningRun, RunId, RunSummary};
pub use states::{RunState, StepKind, StepState};
pub use step::{Step, StepError};
