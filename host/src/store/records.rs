//! Records read back from the store: plain data, whatever the backend.

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
    /// Finished, but optional steps failed.
    CompletedWithErrors,
    /// A step failed (or the run could not proceed).
    Failed,
    /// Stopped on request; `wfhost resume` continues it.
    Paused,
    /// Waiting for an operator decision (`wfhost resume --rerun/--skip`).
    Blocked,
    /// Cancelled on request.
    Cancelled,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::CompletedWithErrors => "completed_with_errors",
            RunStatus::Failed => "failed",
            RunStatus::Paused => "paused",
            RunStatus::Blocked => "blocked",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "completed_with_errors" => RunStatus::CompletedWithErrors,
            "failed" => RunStatus::Failed,
            "paused" => RunStatus::Paused,
            "blocked" => RunStatus::Blocked,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
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
    /// An attempt failed; the next one is due at `next_attempt_at`.
    Retrying,
    /// Its process died while it ran; decided on resume.
    Interrupted,
    /// Stopped by `wfhost cancel`.
    Cancelled,
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
            StepStatus::Retrying => "retrying",
            StepStatus::Interrupted => "interrupted",
            StepStatus::Cancelled => "cancelled",
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
            "retrying" => StepStatus::Retrying,
            "interrupted" => StepStatus::Interrupted,
            "cancelled" => StepStatus::Cancelled,
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
    /// Last sign of life from the driving process.
    pub heartbeat_at: Option<String>,
    /// Process id of the driving process.
    pub driver_pid: Option<i64>,
    /// The machine it runs on, where the store is shared (PostgreSQL);
    /// `None`: this machine.
    pub driver_host: Option<String>,
    /// A pending control request (`pause` or `cancel`).
    pub request: Option<String>,
    /// True when the run claims to be running but its driver stopped
    /// beating: it died (`wfhost resume` continues the run).
    pub stale: bool,
    /// The pinned definition text (not serialised in listings).
    #[serde(skip)]
    pub definition: String,
    /// Who or what started it (`--triggered-by`).
    pub triggered_by: Option<String>,
    /// Its priority (`--priority`).
    pub priority: i64,
}

/// A file a step produced, kept in the run folder (`artifacts:`).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ArtifactRecord {
    /// Its id within the store (what the API and `--get` take).
    pub id: i64,
    /// The step that produced it.
    pub step: String,
    /// Its path as matched, relative to the workflow's directory.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of its content (hex); also its file name in the run folder.
    pub sha256: String,
    /// Media type guessed from its extension.
    pub media_type: String,
    /// When it was kept.
    pub created_at: String,
}

/// A comment on a run or one of its steps.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct CommentRecord {
    /// Its id.
    pub id: i64,
    /// The step it is about, if any.
    pub step: Option<String>,
    /// Who wrote it.
    pub author: String,
    /// What it says.
    pub text: String,
    /// When.
    pub created_at: String,
}

/// How long a driver may stay silent before its run counts as stale.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(5);

/// Whether a heartbeat is missing or older than [`STALE_AFTER`].
pub fn is_stale(heartbeat_at: Option<&str>) -> bool {
    let Some(at) = heartbeat_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return true;
    };
    chrono::Utc::now().signed_duration_since(at) > STALE_AFTER
}

/// Whether the driver `pid` on `host` may still be alive: checked on this
/// machine (`host` is this machine's name, or `None`), assumed elsewhere
/// (its heartbeat decides).
pub fn driver_may_live(pid: Option<i64>, host: Option<&str>) -> bool {
    match host {
        Some(host) if host != host_name() => pid.is_some(),
        _ => driver_alive(pid),
    }
}

/// This machine's name, recorded with a driver's pid: a pid says whether
/// a driver is alive only on the machine it runs on.
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether the process that claimed a run on this machine still exists (a
/// dead pid means a dead driver).
pub fn driver_alive(pid: Option<i64>) -> bool {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let result = unsafe { libc::kill(pid, 0) };
    let exists = result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `pid` has exited and waits to be reaped: a driver that died
/// whose parent is gone too stays a zombie where nothing reaps orphans
/// (a container whose first process does not), and a zombie drives nothing.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may hold any
    // character, ')' included).
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
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
    /// When the next attempt is due (status `retrying`).
    pub next_attempt_at: Option<String>,
    /// Attempts the retry policy allows.
    pub max_attempts: u32,
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

#[cfg(test)]
mod tests {
    use super::driver_alive;

    #[test]
    fn a_driver_that_exited_but_was_not_reaped_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = Some(i64::from(child.id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Exited, not yet waited for: a zombie.
        while driver_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie counted as alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(driver_alive(Some(i64::from(std::process::id()))));
        assert!(!driver_alive(None));
    }

    #[test]
    fn a_pid_is_checked_only_on_the_machine_it_runs_on() {
        use super::{driver_may_live, host_name};
        let gone = Some(i64::from(i32::MAX));
        assert!(!driver_may_live(gone, None));
        assert!(!driver_may_live(gone, Some(host_name())));
        assert!(
            driver_may_live(gone, Some("another-machine")),
            "its heartbeat decides"
        );
        assert!(!driver_may_live(None, Some("another-machine")));
    }
}
