//! Control from any process: `wfhost pause`, `resume`, `cancel`. Requests
//! go through the store; the process driving the run notices them within
//! a second. `resume` drives the run itself.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;

use super::say::err_line;
use super::Invalid;
use crate::app::control::{self, driven};
use crate::engine::driver::ResumeOptions;
use crate::store::{EngineStore, StepStatus};
use crate::workflow::LoadedWorkflow;

/// Arguments of `wfhost pause` and `wfhost cancel`.
#[derive(Debug, clap::Args)]
pub struct RunRef {
    /// Run id or a unique prefix of one.
    run: String,
    /// Print what was done as JSON: `{"run_id", "request"|"status"}`.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Run this interrupted step again (repeatable).
    #[arg(long, value_name = "STEP")]
    rerun: Vec<String>,
    /// Skip this interrupted step; the steps that need it are skipped too (repeatable).
    #[arg(long, value_name = "STEP")]
    skip: Vec<String>,
    /// Re-read the workflow file and continue with its current definition
    /// (steps are mapped by id; what changed is printed). Without it, a run
    /// always continues with the definition it started with.
    #[arg(long)]
    upgrade: bool,
    /// Print the run as JSON when it stops (same shape as `status --json`).
    #[arg(long)]
    json: bool,
    /// Print no progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost pause`: no new step starts; running steps finish; then `paused`.
pub fn pause(home: &Path, args: RunRef) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    control::pause(&*store, &run_id)?;
    if args.json {
        return done_json(json!({ "run_id": run_id, "request": "pause" }));
    }
    eprintln!("pause requested for run {run_id}: running steps finish, then it stops (resume with `wfhost resume {run_id}`)");
    Ok(ExitCode::SUCCESS)
}

/// `wfhost cancel`: running steps are interrupted and their programs killed.
pub fn cancel(home: &Path, args: RunRef) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    match control::cancel(&*store, &run_id)? {
        control::Done::Requested => {
            if args.json {
                return done_json(json!({ "run_id": run_id, "request": "cancel" }));
            }
            eprintln!("cancel requested for run {run_id}: its driver stops it within a second");
        }
        control::Done::Settled => {
            if args.json {
                return done_json(json!({ "run_id": run_id, "status": "cancelled" }));
            }
            eprintln!("run {run_id} cancelled");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a control command's result as JSON on stdout.
fn done_json(value: serde_json::Value) -> Result<ExitCode> {
    super::say::out_line(&serde_json::to_string(&value)?);
    Ok(ExitCode::SUCCESS)
}

/// `wfhost resume`: continue a paused, blocked or stale run in this process.
pub fn resume(home: &Path, config: Option<&Path>, args: ResumeArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let run = control::check_resumable(&*store, &run_id)?;
    let ceiling = super::load_ceiling(home, config)?;
    let workflow = if args.upgrade {
        upgrade(&store, &run_id, ceiling.as_ref())?
    } else {
        pinned_workflow(&store, &run_id)?
    };
    let mut driver = super::driver(home, &store, ceiling, args.quiet, true)?;
    // A worker's driver: its steps go to the workers through the store.
    if std::env::var_os(crate::app::worker::PLACE_STEPS_VARIABLE).is_some() {
        driver = driver.with_placement(crate::engine::placement::Placement::new(store.clone()));
    }
    let options = ResumeOptions {
        rerun: args.rerun,
        skip: args.skip,
    };
    let drive = driver.drive_with(&run_id, &workflow, &run.args, &options);
    let driven = super::interrupt::drive(&*store, &run_id, !args.quiet, drive)?;
    super::run::finish_and_exit(&*store, &run_id, args.json, args.quiet, driven)
}

/// Arguments of `wfhost retry`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["from", "only"])))]
pub struct RetryArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Re-run this step and everything downstream of it, reusing upstream outputs.
    #[arg(long, value_name = "STEP")]
    from: Option<String>,
    /// Re-run only this step.
    #[arg(long, value_name = "STEP")]
    only: Option<String>,
    /// Print the run as JSON when it stops.
    #[arg(long)]
    json: bool,
    /// Print no progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost retry`: re-run a step (and what follows it) in the same run,
/// keeping the attempt history.
pub fn retry(home: &Path, config: Option<&Path>, args: RetryArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let run = store.run(&run_id)?;
    if driven(&run) {
        return Err(Invalid(format!(
            "run {run_id} is still running: wait for it, or cancel it first"
        ))
        .into());
    }
    let workflow = pinned_workflow(&store, &run_id)?;
    let target = args
        .from
        .as_deref()
        .or(args.only.as_deref())
        .unwrap_or_default();
    let Some(index) = workflow.graph.index_of(target) else {
        return Err(Invalid(format!("run {run_id} has no step '{target}'")).into());
    };
    let mut reset = vec![index];
    if args.from.is_some() {
        reset.extend(workflow.graph.descendants(index));
    }
    let reason = match &args.from {
        Some(step) => format!("re-run requested from '{step}'"),
        None => format!("re-run of '{target}' requested"),
    };
    for index in reset {
        store.reset_step(&run_id, &workflow.def.steps[index].id, &reason)?;
    }
    let ceiling = super::load_ceiling(home, config)?;
    let driver = super::driver(home, &store, ceiling, args.quiet, true)?;
    let drive = driver.drive(&run_id, &workflow, &run.args);
    let driven = super::interrupt::drive(&*store, &run_id, !args.quiet, drive)?;
    super::run::finish_and_exit(&*store, &run_id, args.json, args.quiet, driven)
}

/// Load the workflow file as it is now, print how it differs from the
/// run's pinned definition (steps mapped by id) and pin it.
fn upgrade(
    store: &Arc<dyn EngineStore>,
    run_id: &str,
    ceiling: Option<&crate::engine::ceiling::Ceiling>,
) -> Result<LoadedWorkflow> {
    let run = store.run(run_id)?;
    let pinned = pinned_workflow(store, run_id)?;
    let file_name = Path::new(&run.workflow_path)
        .file_name()
        .unwrap_or_default();
    let path = Path::new(&run.workflow_dir).join(file_name);
    let current = super::run::load_workflow(Some(store.home()), &path)?;
    super::check_grants(store.home(), &current, ceiling)?;
    let old: std::collections::BTreeMap<&str, &crate::workflow::Step> = pinned
        .def
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let new: std::collections::BTreeMap<&str, &crate::workflow::Step> = current
        .def
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let added: Vec<&str> = new
        .keys()
        .filter(|id| !old.contains_key(*id))
        .copied()
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .copied()
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|(id, step)| old.get(*id).is_some_and(|before| before != *step))
        .map(|(id, _)| *id)
        .collect();
    let done: Vec<String> = store
        .steps(run_id)?
        .into_iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| s.id)
        .collect();
    err_line(&format!(
        "upgrading run {run_id} to the current {}:",
        path.display()
    ));
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        err_line("  no step changed");
    }
    for id in &added {
        err_line(&format!("  + {id} (new step)"));
    }
    for id in &removed {
        err_line(&format!("  - {id} (removed)"));
    }
    for id in &changed {
        let note = if done.iter().any(|d| d == id) {
            " (already completed: keeps its output; `wfhost retry --from` re-runs it)"
        } else {
            ""
        };
        err_line(&format!("  ~ {id} (changed){note}"));
    }
    let ids: Vec<&str> = current.def.steps.iter().map(|s| s.id.as_str()).collect();
    let summary = serde_json::json!({ "added": added, "removed": removed, "changed": changed });
    store.upgrade_definition(run_id, &current.source, &ids, &summary)?;
    Ok(current)
}

/// The definition a run started with (never the file as it is now).
pub fn pinned_workflow(store: &Arc<dyn EngineStore>, run_id: &str) -> Result<LoadedWorkflow> {
    crate::app::runs::pinned_workflow(&**store, run_id)
}
