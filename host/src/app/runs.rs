//! Starting a run from any front end: load and check the workflow (with
//! the home's agents), resolve its arguments, record the run.

use std::path::Path;

use serde_json::{Map, Value};

use crate::app::{Invalid, InvalidWorkflow};
use crate::store::{EngineStore, NewRun, RunRecord};
use crate::workflow::{self, LoadedWorkflow};

/// Load and validate the workflow at `path`; agents its steps name but it
/// does not define come from `<home>/agents.yaml`.
pub fn load_workflow(home: Option<&Path>, path: &Path) -> anyhow::Result<LoadedWorkflow> {
    let builtins = crate::runtime::builtin::names();
    let agents = home_agents(home)?;
    workflow::load_with(path, &builtins, agents.as_ref())
        .map_err(|diagnostics| InvalidWorkflow(diagnostics).into())
}

/// The definition run `run_id` started with (never the file as it is now).
pub fn pinned_workflow(store: &dyn EngineStore, run_id: &str) -> anyhow::Result<LoadedWorkflow> {
    workflow_of(store.home(), &store.run(run_id)?)
}

/// The definition pinned in `run` (agents it names from `home`).
pub fn workflow_of(home: &Path, run: &RunRecord) -> anyhow::Result<LoadedWorkflow> {
    let format = workflow::Format::from_path(Path::new(&run.workflow_path));
    let builtins = crate::runtime::builtin::names();
    let agents = home_agents(Some(home))?;
    workflow::load_from_source_with(
        &run.definition,
        &run.workflow_path,
        Path::new(&run.workflow_dir),
        format,
        &builtins,
        agents.as_ref(),
    )
    .map_err(|d| anyhow::anyhow!("the run's pinned definition no longer validates: {d}"))
}

/// The agents of `<home>/agents.yaml`, if the file exists.
pub fn home_agents(home: Option<&Path>) -> anyhow::Result<Option<workflow::seeds::HomeAgents>> {
    let Some(home) = home else {
        return Ok(None);
    };
    workflow::seeds::load_home_agents(&home.join(workflow::seeds::HOME_AGENTS_FILE))
        .map_err(|diagnostics| InvalidWorkflow(diagnostics).into())
}

/// Check `triggered_by` as people give it: 1 to 200 characters, no
/// control characters.
pub fn check_triggered_by(who: Option<&str>) -> anyhow::Result<()> {
    if let Some(who) = who {
        if who.is_empty() || who.chars().count() > 200 || who.chars().any(char::is_control) {
            return Err(Invalid(
                "triggered_by: give 1 to 200 characters without control characters".into(),
            )
            .into());
        }
    }
    Ok(())
}

/// A run to record.
pub struct NewRunRequest<'a> {
    /// The workflow file.
    pub path: &'a Path,
    /// Its arguments (defaults are applied, the schema checked).
    pub args: Map<String, Value>,
    /// Who or what starts it.
    pub triggered_by: Option<&'a str>,
    /// Its priority.
    pub priority: i64,
}

/// Load, check (grants against the ceiling, policies, arguments) and
/// record a new run; returns its id. Problems are [`Invalid`] or
/// [`InvalidWorkflow`].
pub fn create_run(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    request: NewRunRequest<'_>,
) -> anyhow::Result<String> {
    check_triggered_by(request.triggered_by)?;
    let workflow = load_workflow(Some(home), request.path)?;
    let ceiling = crate::app::load_ceiling(home, config)?;
    // A run in PostgreSQL is queued for workers, which resolve its grants
    // (and check them against their ceilings) where its steps run.
    if store.url().is_none() {
        crate::app::check_grants(home, &workflow, ceiling.as_ref())?;
    }
    let policies = crate::app::plugins::link_policies(&workflow);
    if !policies.is_empty() {
        return Err(InvalidWorkflow(policies).into());
    }
    let args = workflow::resolve_args(workflow.def.args.as_ref(), request.args)
        .map_err(InvalidWorkflow)?;
    let run_id = crate::store::new_run_id();
    let steps: Vec<&str> = workflow.def.steps.iter().map(|s| s.id.as_str()).collect();
    store.create_run(&NewRun {
        id: &run_id,
        workflow_name: &workflow.def.name,
        workflow_path: &workflow.file_name,
        workflow_dir: &workflow.dir.to_string_lossy(),
        definition: &workflow.source,
        args: &args,
        steps: &steps,
        triggered_by: request.triggered_by,
        priority: request.priority,
    })?;
    Ok(run_id)
}
