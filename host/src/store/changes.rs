//! [`Change`]: one change to a step of a run; [`CheckpointStore::apply`]
//! records several in one transaction.

use serde_json::Value;

#[cfg(doc)]
use super::CheckpointStore;
use super::StepStatus;

/// One change to a step of a run, for [`CheckpointStore::apply`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Finish an attempt (see [`CheckpointStore::finish_attempt`]).
    FinishAttempt {
        /// Step id.
        step: &'a str,
        /// Attempt number.
        attempt: u32,
        /// Its final status.
        status: StepStatus,
        /// The output, or the error message.
        outcome: std::result::Result<&'a Value, &'a str>,
    },
    /// Complete a step recorded item by item (see [`CheckpointStore::complete_step`]).
    CompleteStep {
        /// Step id.
        step: &'a str,
        /// The step's output.
        output: &'a Value,
    },
    /// Skip a step (see [`CheckpointStore::skip_step`]).
    SkipStep {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// Set a step's status (see [`CheckpointStore::set_step_status`]).
    SetStepStatus {
        /// Step id.
        step: &'a str,
        /// The new status.
        status: StepStatus,
        /// Why, if said.
        note: Option<&'a str>,
    },
    /// Make a step pending again (see [`CheckpointStore::reset_step`]).
    ResetStep {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// An event of a step.
    Event {
        /// Step id.
        step: &'a str,
        /// Event kind.
        kind: &'a str,
        /// Event data.
        data: &'a Value,
    },
}
