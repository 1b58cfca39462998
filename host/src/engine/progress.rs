//! The run's `progress.md`: a table of steps, rewritten as the run moves
//! (at most every [`FLUSH_EVERY`], the first time [`FLUSH_EVERY`] after the
//! board is made, and always at the end: a short run writes it once),
//! followed by the
//! progress log: each completed step's short output under a timestamped
//! heading, as the run service writes it. Templates read the log as
//! `{{ progress }}`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::store::{RunFiles, RunStatus};
use crate::workflow::model::Workflow;

/// Minimum time between two rewrites of `progress.md`.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The most characters of one step's output in the log.
const ENTRY_CHARS: usize = 2000;

/// The most bytes the log keeps; the oldest entries go first.
const LOG_BYTES: usize = 256 << 10;

struct Row {
    id: String,
    phase: String,
    status: &'static str,
    duration: Option<Duration>,
}

/// In-memory picture of the run, rendered to markdown.
pub struct ProgressBoard {
    run_id: String,
    workflow: String,
    status: &'static str,
    rows: Vec<Row>,
    files: RunFiles,
    /// When `progress.md` was last written (or the board made).
    last_flush: Instant,
    dirty: bool,
    /// The progress log, and the length of each entry in it (oldest first).
    log: String,
    entries: VecDeque<usize>,
    dropped: usize,
}

impl ProgressBoard {
    /// A board with every step pending.
    pub fn new(run_id: &str, workflow: &Workflow, files: RunFiles) -> ProgressBoard {
        ProgressBoard {
            run_id: run_id.to_string(),
            workflow: workflow.name.clone(),
            status: "running",
            rows: workflow
                .steps
                .iter()
                .map(|step| Row {
                    id: step.id.clone(),
                    phase: step.phase.clone().unwrap_or_default(),
                    status: "pending",
                    duration: None,
                })
                .collect(),
            files,
            last_flush: Instant::now(),
            dirty: true,
            log: String::new(),
            entries: VecDeque::new(),
            dropped: 0,
        }
    }

    /// A step completed with `output`: its short form goes to the log.
    pub fn note_output(&mut self, index: usize, output: &Value) {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let entry = format!(
            "## Step: {} ({now})\n\n{}\n\n---\n\n",
            self.rows[index].id,
            short_output(output)
        );
        self.entries.push_back(entry.len());
        self.log.push_str(&entry);
        while self.log.len() > LOG_BYTES && self.entries.len() > 1 {
            let first = self.entries.pop_front().unwrap_or(0);
            self.log.drain(..first);
            self.dropped += 1;
        }
        self.dirty = true;
    }

    /// The progress log (what `{{ progress }}` reads).
    pub fn log(&self) -> &str {
        &self.log
    }

    /// A step started.
    pub fn started(&mut self, index: usize) {
        self.rows[index].status = "running";
        self.dirty = true;
    }

    /// A step finished with `status` after `elapsed`.
    pub fn finished(&mut self, index: usize, status: &'static str, elapsed: Duration) {
        self.rows[index].status = status;
        self.rows[index].duration = Some(elapsed);
        self.dirty = true;
    }

    /// An attempt failed; another is scheduled.
    pub fn retrying(&mut self, index: usize) {
        self.rows[index].status = "retrying";
        self.dirty = true;
    }

    /// A step will run again.
    pub fn reset(&mut self, index: usize) {
        self.rows[index].status = "pending";
        self.rows[index].duration = None;
        self.dirty = true;
    }

    /// A step was skipped.
    pub fn skipped(&mut self, index: usize) {
        self.rows[index].status = "skipped";
        self.dirty = true;
    }

    /// The run reached a final status.
    pub fn set_status(&mut self, status: RunStatus) {
        self.status = status.as_str();
        self.dirty = true;
    }

    /// Rewrite `progress.md` if something changed and enough time passed
    /// (or `force`).
    pub fn flush(&mut self, force: bool) {
        let due = self.last_flush.elapsed() >= FLUSH_EVERY;
        if !self.dirty || !(force || due) {
            return;
        }
        if let Err(error) = self.files.write_progress(&self.render()) {
            tracing::warn!("cannot write progress.md: {error}");
        }
        self.last_flush = Instant::now();
        self.dirty = false;
    }

    fn render(&self) -> String {
        let done = self
            .rows
            .iter()
            .filter(|row| matches!(row.status, "completed" | "failed" | "skipped"))
            .count();
        let mut text = format!(
            "# Run `{}` of `{}`\n\nstatus: **{}** · {done}/{} steps finished\n\n| step | phase | status | duration |\n|---|---|---|---|\n",
            self.run_id,
            self.workflow,
            self.status,
            self.rows.len()
        );
        for row in &self.rows {
            let duration = row
                .duration
                .map(crate::step::units::humanize)
                .unwrap_or_default();
            text.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.id, row.phase, row.status, duration
            ));
        }
        if !self.log.is_empty() {
            text.push_str("\n# Progress\n\n");
            if self.dropped > 0 {
                text.push_str(&format!(
                    "({} earlier entries dropped: the log keeps the last {} KiB)\n\n",
                    self.dropped,
                    LOG_BYTES >> 10
                ));
            }
            text.push_str(&self.log);
        }
        text
    }
}

/// A step's output as the log shows it: an agent's answer, a script's
/// output fields or stdout, else the JSON; at most [`ENTRY_CHARS`].
fn short_output(output: &Value) -> String {
    let text = match output {
        Value::String(text) => text.clone(),
        Value::Object(map) => match ["text", "result", "summary", "stdout"]
            .iter()
            .find_map(|key| map.get(*key))
        {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => output.to_string(),
        },
        other => other.to_string(),
    };
    let text = text.trim();
    if text.chars().count() <= ENTRY_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(ENTRY_CHARS).collect();
    cut.push_str(" …");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(dir: &std::path::Path) -> ProgressBoard {
        let workflow: Workflow = serde_yaml::from_str(
            "name: p\nsteps:\n  - id: a\n    type: function\n    component: echo\n",
        )
        .unwrap();
        ProgressBoard::new("r1", &workflow, RunFiles::new(dir.to_path_buf()))
    }

    #[test]
    fn progress_is_written_at_most_every_interval_and_always_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("progress.md");
        let mut board = board(dir.path());
        board.started(0);
        board.flush(false);
        assert!(!file.exists(), "not within the first interval");
        board.flush(true);
        let first = std::fs::read_to_string(&file).unwrap();
        assert!(first.contains("| a |"), "{first}");
        board.finished(0, "completed", Duration::from_millis(5));
        board.flush(false);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "too soon");
        std::thread::sleep(FLUSH_EVERY + Duration::from_millis(10));
        board.flush(false);
        let later = std::fs::read_to_string(&file).unwrap();
        assert!(later.contains("completed"), "{later}");
    }
}
