//! Rows read back from the store.

use rusqlite::Row;
use serde::Serialize;
use serde_json::Value;

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Recorded, not started.
    Pending,
    /// A process is driving it.
    Running,
    /// Every step completed.
    Completed,
    /// A step failed (or the run could not proceed).
    Failed,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed)
    }
}

/// Lifecycle of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its needs.
    Pending,
    /// An attempt is executing.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Will not run (a step it needs did not complete).
    Skipped,
}

impl StepStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(text: &str) -> Option<StepStatus> {
        Some(match text {
            "pending" => StepStatus::Pending,
            "running" => StepStatus::Running,
            "completed" => StepStatus::Completed,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            _ => return None,
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Workflow `name`.
    pub workflow: String,
    /// Workflow file as given.
    pub workflow_path: String,
    /// Absolute directory of the workflow file.
    pub workflow_dir: String,
    /// SHA-256 of the pinned definition.
    pub definition_hash: String,
    /// Arguments, defaults applied.
    pub args: Value,
    /// Current status.
    pub status: RunStatus,
    /// Why the run failed, if it did.
    pub error: Option<String>,
    /// When it was recorded.
    pub created_at: String,
    /// When a process started driving it.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The pinned definition text (not serialised in listings).
    #[serde(skip)]
    pub definition: String,
}

impl RunRecord {
    pub(crate) const COLUMNS: &'static str = "id, workflow_name, workflow_path, workflow_dir, \
        definition_hash, args, status, error, created_at, started_at, finished_at, definition";

    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
        let status: String = row.get(6)?;
        Ok(RunRecord {
            id: row.get(0)?,
            workflow: row.get(1)?,
            workflow_path: row.get(2)?,
            workflow_dir: row.get(3)?,
            definition_hash: row.get(4)?,
            args: parse_json(row.get::<_, String>(5)?),
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
            error: row.get(7)?,
            created_at: row.get(8)?,
            started_at: row.get(9)?,
            finished_at: row.get(10)?,
            definition: row.get(11)?,
        })
    }
}

/// A step of a run with its latest state.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Step id.
    pub id: String,
    /// Current status.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// When the first attempt started.
    pub started_at: Option<String>,
    /// When the step reached its final state.
    pub finished_at: Option<String>,
    /// Output of the completed attempt.
    pub output: Option<Value>,
    /// Error of the failed attempt, or why the step was skipped.
    pub error: Option<String>,
}

impl StepRecord {
    pub(crate) const COLUMNS: &'static str =
        "step_id, status, attempts, started_at, finished_at, output, error";

    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
        let status: String = row.get(1)?;
        Ok(StepRecord {
            id: row.get(0)?,
            status: StepStatus::parse(&status).unwrap_or(StepStatus::Failed),
            attempts: row.get(2)?,
            started_at: row.get(3)?,
            finished_at: row.get(4)?,
            output: row.get::<_, Option<String>>(5)?.map(parse_json),
            error: row.get(6)?,
        })
    }
}

/// One line of the append-only journal.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Global sequence number.
    pub seq: i64,
    /// The step, for step events.
    pub step: Option<String>,
    /// When it happened.
    pub at: String,
    /// What happened: `step_started`, `log`, ...
    pub kind: String,
    /// Details.
    pub data: Value,
}

impl EventRecord {
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
        Ok(EventRecord {
            seq: row.get(0)?,
            step: row.get(1)?,
            at: row.get(2)?,
            kind: row.get(3)?,
            data: parse_json(row.get::<_, String>(4)?),
        })
    }
}

fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
