//! [`Change`]: one change to a step of a run; [`CheckpointStore::apply`]
//! records several in one transaction.

use serde_json::{json, Value};

use super::StepStatus;
#[cfg(doc)]
use super::{CheckpointStore, StepStore};

/// One change to a step of a run, for [`CheckpointStore::apply`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Start an attempt (see [`StepStore::start_attempt`]).
    StartAttempt {
        /// Step id.
        step: &'a str,
        /// Attempt number.
        attempt: u32,
        /// The attempt's rendered input.
        input: &'a Value,
    },
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

impl Change<'_> {
    /// The journal entry that records this change, the same in every
    /// backend: its step, event kind and data.
    pub fn journal_entry(&self) -> (&str, String, Value) {
        match *self {
            Change::StartAttempt { step, attempt, .. } => (
                step,
                "step_started".to_string(),
                json!({ "attempt": attempt }),
            ),
            Change::FinishAttempt {
                step,
                attempt,
                status,
                outcome,
            } => {
                let kind = if status == StepStatus::Completed {
                    "step_completed"
                } else {
                    "step_failed"
                };
                let data = json!({ "attempt": attempt, "status": status.as_str(), "error": outcome.err() });
                (step, kind.to_string(), data)
            }
            Change::CompleteStep { step, .. } => (
                step,
                "step_completed".to_string(),
                json!({ "status": "completed" }),
            ),
            Change::SkipStep { step, reason } => (
                step,
                "step_skipped".to_string(),
                json!({ "reason": reason }),
            ),
            Change::SetStepStatus { step, status, note } => (
                step,
                format!("step_{}", status.as_str()),
                json!({ "status": status.as_str(), "note": note }),
            ),
            Change::ResetStep { step, reason } => {
                (step, "step_reset".to_string(), json!({ "reason": reason }))
            }
            Change::Event { step, kind, data } => (step, kind.to_string(), data.clone()),
        }
    }
}
