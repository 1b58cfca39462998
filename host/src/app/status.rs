//! A run at a glance, for every front end: the status document of
//! `wfhost status --json` and `GET /api/runs/{id}`.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use crate::store::EngineStore;

/// The JSON document of `wfhost status --json` (and `run --json`).
pub fn status_json(store: &dyn EngineStore, run_id: &str) -> Result<Value> {
    let run = store.run(run_id)?;
    let steps = store.steps(run_id)?;
    let summary = Summary::of(&run, &steps);
    Ok(json!({
        "id": run.id,
        "workflow": run.workflow,
        "workflow_path": run.workflow_path,
        "status": if run.stale { serde_json::json!("stale") } else { serde_json::json!(run.status) },
        "stale": run.stale,
        "driver_pid": run.driver_pid,
        "heartbeat_at": run.heartbeat_at,
        "request": run.request,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "definition_hash": run.definition_hash,
        "args": run.args,
        "triggered_by": run.triggered_by,
        "priority": run.priority,
        "counts": summary.counts,
        "current_phase": summary.current_phase,
        "running": summary.running,
        "phases": summary.phases,
        "phase_of": summary.phase_of,
        "run_dir": store.run_files(run_id).dir(),
        "steps": steps,
        "pending_approvals": store.approvals(Some(run_id), false)?,
        "artifacts": store.artifacts(run_id, None)?,
        "comments": store.comments(run_id)?,
    }))
}

/// A run at a glance, as the seed systems show it: step counts, the phase
/// it is in and the steps running now.
pub struct Summary {
    /// Steps by status, and the total.
    pub counts: Value,
    /// The phase the run is in.
    pub current_phase: Option<String>,
    /// The steps running now.
    pub running: Vec<String>,
    /// The workflow's phases, in order.
    pub phases: Vec<String>,
    /// Each step's phase.
    pub phase_of: serde_json::Map<String, Value>,
}

impl Summary {
    /// The summary of `run` with its `steps`.
    pub fn of(run: &crate::store::RunRecord, steps: &[crate::store::StepRecord]) -> Summary {
        use crate::store::StepStatus;
        let count =
            |wanted: &[StepStatus]| steps.iter().filter(|s| wanted.contains(&s.status)).count();
        let counts = json!({
            "total": steps.len(),
            "completed": count(&[StepStatus::Completed]),
            "failed": count(&[StepStatus::Failed]),
            "skipped": count(&[StepStatus::Skipped]),
            "cancelled": count(&[StepStatus::Cancelled]),
            "running": count(&[StepStatus::Running, StepStatus::Retrying, StepStatus::Interrupted]),
            "pending": count(&[StepStatus::Pending]),
        });
        let running: Vec<String> = steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Running | StepStatus::Retrying))
            .map(|s| s.id.clone())
            .collect();
        // The phase of the first running step (in file order), else of the
        // first pending one, else of the step that finished last.
        let phases = step_phases(run);
        let phase_of = |id: &str| {
            phases
                .iter()
                .find(|(s, _)| s == id)
                .and_then(|(_, p)| p.clone())
        };
        let current_phase = steps
            .iter()
            .find(|s| matches!(s.status, StepStatus::Running | StepStatus::Retrying))
            .or_else(|| steps.iter().find(|s| s.status == StepStatus::Pending))
            .or_else(|| {
                steps
                    .iter()
                    .filter(|s| s.finished_at.is_some())
                    .max_by(|a, b| a.finished_at.cmp(&b.finished_at))
            })
            .and_then(|s| phase_of(&s.id));
        let (phase_list, phase_of) = phase_layout(run);
        Summary {
            counts,
            current_phase,
            running,
            phases: phase_list,
            phase_of,
        }
    }
}

/// The workflow's phases (declared, then any only steps name) and each
/// step's phase.
fn phase_layout(run: &crate::store::RunRecord) -> (Vec<String>, serde_json::Map<String, Value>) {
    let format = crate::workflow::Format::from_path(Path::new(&run.workflow_path));
    let Ok(def) = crate::workflow::parse::parse_str(&run.definition, &run.workflow_path, format)
    else {
        return (Vec::new(), serde_json::Map::new());
    };
    let mut phases: Vec<String> = def.phases.iter().map(|p| p.id.clone()).collect();
    let mut phase_of = serde_json::Map::new();
    for step in &def.steps {
        if let Some(phase) = &step.phase {
            if !phases.contains(phase) {
                phases.push(phase.clone());
            }
            phase_of.insert(step.id.clone(), json!(phase));
        }
    }
    (phases, phase_of)
}

/// Each step's phase, from the run's pinned definition (parsed only).
fn step_phases(run: &crate::store::RunRecord) -> Vec<(String, Option<String>)> {
    let format = crate::workflow::Format::from_path(Path::new(&run.workflow_path));
    match crate::workflow::parse::parse_str(&run.definition, &run.workflow_path, format) {
        Ok(def) => def.steps.into_iter().map(|s| (s.id, s.phase)).collect(),
        Err(_) => Vec::new(),
    }
}
