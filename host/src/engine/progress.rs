//! The run's `progress.md`: a table of steps, rewritten as the run moves
//! (at most every [`FLUSH_EVERY`], and always at the end).

use std::time::{Duration, Instant};

use crate::store::{RunFiles, RunStatus};
use crate::workflow::model::Workflow;

/// Minimum time between two rewrites of `progress.md`.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

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
    last_flush: Option<Instant>,
    dirty: bool,
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
            last_flush: None,
            dirty: true,
        }
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
        let due = self.last_flush.is_none_or(|at| at.elapsed() >= FLUSH_EVERY);
        if !self.dirty || !(force || due) {
            return;
        }
        if let Err(error) = self.files.write_progress(&self.render()) {
            tracing::warn!("cannot write progress.md: {error}");
        }
        self.last_flush = Some(Instant::now());
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
        text
    }
}
