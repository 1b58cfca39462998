//! Agent steps' records in the store: recordings of model replies and tool results
//! (`agent_records`, replayed when a step runs again after a crash) and
//! tool calls held for a person's approval (`approvals`).

use serde::Serialize;
use serde_json::Value;

#[cfg(doc)]
use super::AgentStore;

/// One recording of an agent step.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRecord {
    /// Global sequence number (recording order).
    pub seq: i64,
    /// The step.
    pub step_id: String,
    /// The agent.
    pub agent_id: String,
    /// The attempt that recorded it.
    pub attempt: u32,
    /// `completion`, `model_error`, `tool_started` or `tool_result`.
    pub kind: String,
    /// Completions: a hash of the request; tool records: the call id.
    pub key: String,
    /// What was recorded.
    pub payload: Value,
    /// When.
    pub at: String,
}

/// A new recording, as handed to [`AgentStore::append_agent_record`].
#[derive(Debug, Clone, Copy)]
pub struct NewAgentRecord<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The step.
    pub step_id: &'a str,
    /// The agent.
    pub agent_id: &'a str,
    /// The attempt recording it.
    pub attempt: u32,
    /// What kind of recording.
    pub kind: &'a str,
    /// Its lookup key.
    pub key: &'a str,
    /// What to record.
    pub payload: &'a Value,
}

/// State of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person allowed the call.
    Approved,
    /// A person refused the call.
    Denied,
}

impl ApprovalStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
        }
    }

    /// Parse the stored spelling (anything unknown is pending).
    pub fn parse(text: &str) -> ApprovalStatus {
        match text {
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            _ => ApprovalStatus::Pending,
        }
    }
}

/// A tool call held for (or answered by) a person.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRecord {
    /// Number people type in `wfhost approve RUN ID`.
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The agent.
    pub agent_id: String,
    /// The attempt that asked.
    pub attempt: u32,
    /// The model's id for the call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// Its arguments (JSON text).
    pub arguments: String,
    /// What the policy wants the person to consider.
    pub prompt: String,
    /// Pending, approved or denied.
    pub status: ApprovalStatus,
    /// The approver's note, or the reason of a denial.
    pub note: Option<String>,
    /// When it was asked.
    pub created_at: String,
    /// When it was answered.
    pub answered_at: Option<String>,
}

/// A call to hold, as handed to [`AgentStore::create_approval`].
#[derive(Debug, Clone, Copy)]
pub struct NewApproval<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The step.
    pub step_id: &'a str,
    /// The agent.
    pub agent_id: &'a str,
    /// The attempt asking.
    pub attempt: u32,
    /// The `for_each` item of that attempt (0 for other steps).
    pub iteration: u32,
    /// [`call_hash`] of the tool and its arguments.
    pub call_hash: &'a str,
    /// The model's id for the call.
    pub call_id: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// Its arguments (JSON text).
    pub arguments: &'a str,
    /// Shown to the person.
    pub prompt: &'a str,
}

/// The key of a held call within its attempt: SHA-256 (hex) of the tool
/// name and its canonical JSON arguments.
pub fn call_hash(tool: &str, arguments: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update([0u8]);
    hasher.update(arguments.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl NewApproval<'_> {
    /// The data of the `approval_requested` event that records it as
    /// approval `id`, the same in every backend.
    pub fn requested_event(&self, id: i64) -> Value {
        serde_json::json!({
            "approval": id,
            "call_id": self.call_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "prompt": self.prompt,
        })
    }
}

impl ApprovalRecord {
    /// The approval `id` of `run_id` as found (or not) when a person
    /// answers it, if it can be answered; else why not (a person's
    /// mistake, said the same in every backend).
    pub fn answerable(
        run_id: &str,
        id: i64,
        found: Option<ApprovalRecord>,
    ) -> Result<ApprovalRecord, String> {
        match found {
            None => Err(format!(
                "run {run_id} has no approval {id} (see `wfhost approvals {run_id}`)"
            )),
            Some(found) if found.status != ApprovalStatus::Pending => Err(format!(
                "approval {id} of run {run_id} is already {}",
                found.status.as_str()
            )),
            Some(found) => Ok(found),
        }
    }

    /// The data of the `approval_answered` event that records its answer.
    pub fn answered_event(&self, status: ApprovalStatus, note: Option<&str>) -> Value {
        serde_json::json!({
            "approval": self.id,
            "call_id": self.call_id,
            "tool": self.tool,
            "status": status.as_str(),
            "note": note,
        })
    }
}
