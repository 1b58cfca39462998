//! Tool calls held for a person.
//!
//! When the policy chain says `ask`, the call is stored as a pending
//! approval (the store's `approvals` table, with an `approval_requested`
//! event), the run shows `blocked`, and the call waits, polling the store,
//! until someone answers from any process: `wfhost approve RUN ID [--note]`
//! or `wfhost deny RUN ID --reason TEXT`. Then the run is `running` again
//! (once no other approval of it is pending) and the call goes on, or is
//! refused with the person's reason.
//!
//! An approval belongs to one attempt of a step (and one `for_each` item of
//! it): it is looked up by (run, step, attempt, iteration, SHA-256 of the
//! tool and its canonical arguments). Within the attempt an answered call
//! is not asked again and a pending one is waited for rather than asked
//! twice. Another attempt (after `wfhost retry`, a crash, or in a new loop
//! iteration, which always run as a new attempt) asks again; a question
//! still pending from an attempt that ended is closed as denied.

use std::time::Duration;

use serde_json::json;

use super::record::Recorder;
use crate::store::{ApprovalRecord, ApprovalStatus, NewApproval, RunStatus};

/// How often a waiting call looks at the store.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A person's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Go ahead (with the approver's note, if any).
    Approved {
        /// The approval's id.
        id: i64,
        /// What the approver wrote.
        note: Option<String>,
    },
    /// Refused, with the reason.
    Denied {
        /// The approval's id.
        id: i64,
        /// Why.
        reason: String,
    },
}

fn answer_of(record: &ApprovalRecord) -> Option<Answer> {
    match record.status {
        ApprovalStatus::Pending => None,
        ApprovalStatus::Approved => Some(Answer::Approved {
            id: record.id,
            note: record.note.clone(),
        }),
        ApprovalStatus::Denied => Some(Answer::Denied {
            id: record.id,
            reason: record
                .note
                .clone()
                .unwrap_or_else(|| "no reason given".to_string()),
        }),
    }
}

/// Ask a person about this call (or find their earlier answer) and wait
/// for the answer. `arguments` must be the canonical JSON text.
pub async fn ask(
    recorder: &Recorder,
    call_id: &str,
    tool: &str,
    arguments: &str,
    prompt: &str,
) -> Result<Answer, String> {
    let store = &recorder.store;
    let run_id = recorder.run_id.as_str();
    let db = |e: crate::store::StoreError| format!("cannot record the approval: {e}");
    let hash = crate::store::call_hash(tool, arguments);
    let existing = store
        .find_approval(
            run_id,
            &recorder.step_id,
            (recorder.attempt, recorder.iteration),
            &hash,
        )
        .map_err(db)?;
    let record = match existing {
        Some(record) => {
            if let Some(answer) = answer_of(&record) {
                return Ok(answer);
            }
            record
        }
        None => store
            .create_approval(&NewApproval {
                run_id,
                step_id: &recorder.step_id,
                agent_id: &recorder.agent_id,
                attempt: recorder.attempt,
                iteration: recorder.iteration,
                call_hash: &hash,
                call_id,
                tool,
                arguments,
                prompt,
            })
            .map_err(db)?,
    };
    recorder.event(
        "log",
        json!({
            "level": "warn",
            "message": format!(
                "waiting for approval {id} ({tool}): `wfhost approve {run_id} {id}` or `wfhost deny {run_id} {id} --reason TEXT`",
                id = record.id
            ),
        }),
    );
    if let Ok(run) = store.run(run_id) {
        if run.status == RunStatus::Running {
            store
                .set_run_status(run_id, RunStatus::Blocked, None)
                .map_err(db)?;
        }
    }
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let current = store.approval(record.id).map_err(db)?;
        let Some(current) = current else {
            return Err(format!("approval {} disappeared from the store", record.id));
        };
        if let Some(answer) = answer_of(&current) {
            if store.pending_approvals(run_id).unwrap_or(0) == 0 {
                if let Ok(run) = store.run(run_id) {
                    if run.status == RunStatus::Blocked {
                        store
                            .set_run_status(run_id, RunStatus::Running, None)
                            .map_err(db)?;
                    }
                }
            }
            return Ok(answer);
        }
        if let Ok(run) = store.run(run_id) {
            if run.status.is_final() {
                return Err(format!(
                    "the run is {} while approval {} was pending",
                    run.status.as_str(),
                    record.id
                ));
            }
        }
    }
}
