//! The in-memory side of a run being driven.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::invocation::template_context;
use crate::engine::progress::ProgressBoard;
use crate::engine::scheduler::Scheduler;
use crate::step::executor::{FailureKind, StepFailure};
use crate::step::stop::StopTrigger;
use crate::store::{EngineStore, StepRecord};
use crate::workflow::model::{Step, Workflow};
use crate::workflow::parse_duration;

/// The in-memory side of a run being driven.
pub(super) struct RunState {
    pub(super) scheduler: Scheduler,
    pub(super) outputs: BTreeMap<String, Value>,
    /// Grown as steps complete, so dispatching a step never copies the
    /// outputs of the whole run.
    pub(super) context: Value,
    pub(super) attempts: Vec<u32>,
    /// Waits in `host.suspend` a crashed process left, by step: the step's
    /// next attempt goes on with it.
    pub(super) left_waits: Vec<Option<crate::step::executor::Resume>>,
    pub(super) running: std::collections::HashSet<usize>,
    pub(super) due_later: Vec<(usize, Duration)>,
    pub(super) board: ProgressBoard,
    pub(super) failed_any: bool,
    pub(super) tolerated_any: bool,
    pub(super) cancelled: bool,
    /// Why the run is parking as `blocked` (an `on_failure: block` step).
    pub(super) blocked: Option<String>,
    /// Why the run was cancelled.
    pub(super) cancel_reason: String,
    /// When each step's first attempt started (for `total_timeout`).
    pub(super) first_started: Vec<Option<Instant>>,
    /// Steps waiting for a retry timer.
    pub(super) waiting: std::collections::HashSet<usize>,
    /// The attempt counters of running `for_each` steps (item retries
    /// take attempt numbers as they go).
    pub(super) item_attempts: std::collections::HashMap<usize, Arc<std::sync::atomic::AtomicU32>>,
    pub(super) ids: Vec<String>,
    /// Fired on cancel: running steps stop their programs gracefully.
    pub(super) stop: StopTrigger,
    /// Whether templates may read `{{ progress }}` (else it is not kept up
    /// to date in the context: copying the log per step costs).
    pub(super) wants_progress: bool,
}

impl RunState {
    pub(super) fn new(
        run_id: &str,
        def: &Workflow,
        workflow_dir: &std::path::Path,
        args: &Value,
        store: &dyn EngineStore,
    ) -> RunState {
        RunState {
            scheduler: Scheduler::new(
                def.steps
                    .iter()
                    .map(|s| (s.id.as_str(), s.needs.as_slice())),
            ),
            outputs: BTreeMap::new(),
            context: template_context(run_id, &def.name, workflow_dir, args, &BTreeMap::new()),
            attempts: vec![0; def.steps.len()],
            left_waits: vec![None; def.steps.len()],
            item_attempts: std::collections::HashMap::new(),
            running: Default::default(),
            due_later: Vec::new(),
            board: ProgressBoard::new(run_id, def, store.run_files(run_id)),
            failed_any: false,
            tolerated_any: false,
            cancelled: false,
            blocked: None,
            cancel_reason: "cancelled by request".to_string(),
            first_started: vec![None; def.steps.len()],
            waiting: Default::default(),
            ids: def.steps.iter().map(|s| s.id.clone()).collect(),
            stop: StopTrigger::new(),
            wants_progress: def.steps.iter().any(mentions_progress),
        }
    }

    /// A step completed just now (not restored): its short output goes to
    /// the progress log, and to `{{ progress }}` when the workflow uses it.
    pub(super) fn note_completion(&mut self, index: usize, output: &Value) {
        self.board.note_output(index, output);
        if self.wants_progress {
            self.context["progress"] = Value::String(self.board.log().to_string());
        }
    }

    /// The step failure that sent the run back to an earlier step, for
    /// `{{ retry.error }}`, `{{ retry.attempt }}` and `{{ retry.from }}`.
    pub(super) fn set_retry_context(&mut self, error: &str, attempt: u32, from: &str) {
        self.context["retry"] = json!({ "error": error, "attempt": attempt, "from": from });
    }

    /// Make a step that did not complete visible to templates and
    /// conditions as `steps.<id>.status` (its output is null).
    pub(super) fn record_status(&mut self, index: usize, status: &str) {
        let id = self.ids[index].clone();
        self.context["steps"][&id] = json!({ "output": null, "status": status });
    }

    pub(super) fn complete(&mut self, index: usize, output: Value) {
        let id = self.ids[index].clone();
        self.context["steps"][&id] = json!({ "output": output, "status": "completed" });
        self.outputs.insert(id, output);
        self.scheduler.complete(index);
    }
}

/// Whether a step's templates may read `{{ progress }}`.
fn mentions_progress(step: &Step) -> bool {
    let in_text = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains("progress"));
    in_text(&step.run)
        || in_text(&step.prompt)
        || in_text(&step.condition)
        || step
            .with
            .as_ref()
            .is_some_and(|with| with.to_string().contains("progress"))
}

/// A run's step records by step id (a search of the list per step is
/// quadratic in a wide run).
pub(super) fn records_by_id(records: &[StepRecord]) -> HashMap<&str, &StepRecord> {
    records.iter().map(|r| (r.id.as_str(), r)).collect()
}

pub(super) fn describe_failure(failure: &StepFailure) -> String {
    match failure.kind {
        FailureKind::Timeout => format!("timeout: {}", failure.message),
        FailureKind::Interrupted => format!("interrupted: {}", failure.message),
        _ => failure.message.clone(),
    }
}

/// Whether a retry after `delay` still fits the step's `total_timeout`.
pub(super) fn within_total(step: &Step, state: &RunState, index: usize, delay: Duration) -> bool {
    let Some(total) = step
        .total_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
    else {
        return true;
    };
    state.first_started[index].is_none_or(|first| first.elapsed() + delay < total)
}
