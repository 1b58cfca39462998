//! Controlling runs from any process (the CLI, the server): pause and
//! cancel requests go through the store, and the process driving the run
//! notices them within a second; a run nobody drives is cancelled here.

use crate::app::Invalid;
use crate::store::{EngineStore, RunRecord, RunStatus, StepStatus};

/// Whether a live process is driving the run (running, or blocked while an
/// agent waits for an approval).
pub fn driven(run: &RunRecord) -> bool {
    matches!(run.status, RunStatus::Running | RunStatus::Blocked)
        && !crate::store::is_stale(run.heartbeat_at.as_deref())
        && crate::store::driver_may_live(run.driver_pid, run.driver_host.as_deref())
}

/// What a control request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The driving process was asked; it acts within a second.
    Requested,
    /// Nobody drove the run: it was settled here.
    Settled,
}

/// Ask the process driving `run_id` to pause (no new step starts, running
/// ones finish). A run that is not being driven is [`Invalid`].
pub fn pause(store: &dyn EngineStore, run_id: &str) -> anyhow::Result<Done> {
    let run = store.run(run_id)?;
    if !driven(&run) {
        let why = if run.stale {
            "stale (its driver died; use `wfhost resume`)"
        } else {
            run.status.as_str()
        };
        return Err(Invalid(format!(
            "run {run_id} is {why}, not running: nothing to pause"
        ))
        .into());
    }
    store.set_request(run_id, Some("pause"))?;
    Ok(Done::Requested)
}

/// Cancel `run_id`: ask its driver, or, when nobody drives it, cancel its
/// unfinished steps and the run here. A finished run is [`Invalid`].
pub fn cancel(store: &dyn EngineStore, run_id: &str) -> anyhow::Result<Done> {
    let run = store.run(run_id)?;
    if run.status.is_final() {
        return Err(Invalid(format!("run {run_id} is already {}", run.status.as_str())).into());
    }
    if driven(&run) {
        store.set_request(run_id, Some("cancel"))?;
        return Ok(Done::Requested);
    }
    for step in store.steps(run_id)? {
        if !matches!(
            step.status,
            StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped
        ) {
            store.set_step_status(
                run_id,
                &step.id,
                StepStatus::Cancelled,
                Some("cancelled by request"),
            )?;
        }
    }
    store.set_run_status(run_id, RunStatus::Cancelled, Some("cancelled by request"))?;
    Ok(Done::Settled)
}

/// Check that `run_id` can be resumed by a new driver: not finished, and
/// nobody drives it. Problems are [`Invalid`].
pub fn check_resumable(store: &dyn EngineStore, run_id: &str) -> anyhow::Result<RunRecord> {
    let run = store.run(run_id)?;
    if run.status.is_final() {
        return Err(Invalid(format!(
            "run {run_id} is {}: there is nothing to resume",
            run.status.as_str()
        ))
        .into());
    }
    if driven(&run) {
        return Err(Invalid(format!(
            "run {run_id} is being driven by process {} (pause or cancel it instead)",
            run.driver_pid.unwrap_or_default()
        ))
        .into());
    }
    Ok(run)
}
