//! [`Change`]: one change to a step of a run, and [`Store::apply`], which
//! records several in one transaction.

use rusqlite::{params, TransactionBehavior};
use serde_json::Value;

use super::events::{insert_event, mirrored};
use super::{now, Result, StepStatus, Store};

/// One change to a step of a run, for [`Store::apply`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Finish an attempt (see [`Store::finish_attempt`]).
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
    /// Complete a step recorded item by item (see [`Store::complete_step`]).
    CompleteStep {
        /// Step id.
        step: &'a str,
        /// The step's output.
        output: &'a Value,
    },
    /// Skip a step (see [`Store::skip_step`]).
    SkipStep {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// Set a step's status (see [`Store::set_step_status`]).
    SetStepStatus {
        /// Step id.
        step: &'a str,
        /// The new status.
        status: StepStatus,
        /// Why, if said.
        note: Option<&'a str>,
    },
    /// Make a step pending again (see [`Store::reset_step`]).
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
    /// The output this change records, for the run folder.
    fn output(&self) -> Option<&Value> {
        match self {
            Change::FinishAttempt {
                outcome: Ok(output),
                ..
            }
            | Change::CompleteStep { output, .. } => Some(output),
            _ => None,
        }
    }

    /// Write the change inside `tx`; returns its event (step, kind, data).
    fn write(
        &self,
        tx: &rusqlite::Transaction<'_>,
        run_id: &str,
        now: &str,
    ) -> rusqlite::Result<(String, String, Value)> {
        let (step, kind, data) = match *self {
            Change::FinishAttempt {
                step,
                attempt,
                status,
                outcome,
            } => {
                let (output, error) = match outcome {
                    Ok(output) => (Some(output.to_string()), None),
                    Err(message) => (None, Some(message.to_string())),
                };
                tx.execute(
                    "UPDATE step_attempts SET status = ?4, finished_at = ?5, output = ?6, error = ?7
                     WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
                    params![run_id, step, attempt, status.as_str(), now, output, error],
                )?;
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?4, output = ?5, error = ?6
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, status.as_str(), now, output, error],
                )?;
                let kind = if status == StepStatus::Completed {
                    "step_completed"
                } else {
                    "step_failed"
                };
                let data = serde_json::json!({ "attempt": attempt, "status": status.as_str(), "error": error });
                (step, kind.to_string(), data)
            }
            Change::CompleteStep { step, output } => {
                tx.execute(
                    "UPDATE steps SET status = 'completed', finished_at = ?3, output = ?4, error = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, now, output.to_string()],
                )?;
                let data = serde_json::json!({ "status": "completed" });
                (step, "step_completed".to_string(), data)
            }
            Change::SkipStep { step, reason } => {
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?4, error = ?5 WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, StepStatus::Skipped.as_str(), now, reason],
                )?;
                let data = serde_json::json!({ "reason": reason });
                (step, "step_skipped".to_string(), data)
            }
            Change::SetStepStatus { step, status, note } => {
                let finished =
                    matches!(status, StepStatus::Cancelled | StepStatus::Skipped).then_some(now);
                tx.execute(
                    "UPDATE steps SET status = ?3, error = ?4, finished_at = ?5, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, status.as_str(), note, finished],
                )?;
                if matches!(status, StepStatus::Interrupted | StepStatus::Cancelled) {
                    tx.execute(
                        "UPDATE step_attempts SET status = ?3, finished_at = ?4, error = ?5
                         WHERE run_id = ?1 AND step_id = ?2 AND status = 'running'",
                        params![run_id, step, status.as_str(), now, note],
                    )?;
                }
                let data = serde_json::json!({ "status": status.as_str(), "note": note });
                (step, format!("step_{}", status.as_str()), data)
            }
            Change::ResetStep { step, reason } => {
                tx.execute(
                    "UPDATE steps SET status = 'pending', started_at = NULL, finished_at = NULL, output = NULL,
                                      error = NULL, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step],
                )?;
                let data = serde_json::json!({ "reason": reason });
                (step, "step_reset".to_string(), data)
            }
            Change::Event { step, kind, data } => (step, kind.to_string(), data.clone()),
        };
        insert_event(tx, run_id, Some(step), now, &kind, &data)?;
        Ok((step.to_string(), kind, data))
    }
}

impl Store {
    /// Make several changes to a run's steps in one transaction: a
    /// decision made of several parts (a loop going back, a failure
    /// escalated to a skip) is recorded whole or not at all.
    pub fn apply(&self, run_id: &str, changes: &[Change<'_>]) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            events.push(change.write(&tx, run_id, &now)?);
        }
        tx.commit()?;
        drop(conn);
        for (change, (step, kind, data)) in changes.iter().zip(&events) {
            if let Some(output) = change.output() {
                let written = self
                    .run_files(run_id)
                    .write_step_json(step, "output.json", output);
                mirrored(run_id, written);
            }
            self.mirror_event(run_id, Some(step), &now, kind, data)?;
        }
        Ok(())
    }
}
