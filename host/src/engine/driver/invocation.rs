//! Invocation preparation: the template context and the rendered config
//! (the parts that depend on the kind of step are its
//! [`StepType`](crate::engine::step_types::StepType)'s).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::Driver;
use crate::engine::grants;
use crate::engine::step_types::{Attach, StepType};
use crate::step::executor::{ResolvedGrants, StepFailure, StepInvocation};
use crate::workflow::model::Step;
use crate::workflow::{LoadedWorkflow, Templates};

/// The template context: `args`, `steps.<id>.output`, `run`, `workflow`
/// (`workflow.dir`: the workflow file's directory, absolute).
pub fn template_context(
    run_id: &str,
    workflow: &str,
    workflow_dir: &std::path::Path,
    args: &Value,
    outputs: &BTreeMap<String, Value>,
) -> Value {
    let steps: Map<String, Value> = outputs
        .iter()
        .map(|(id, output)| {
            (
                id.clone(),
                json!({ "output": output, "status": "completed" }),
            )
        })
        .collect();
    json!({
        "args": args,
        "steps": steps,
        "run": { "id": run_id, "workflow": workflow },
        "workflow": { "name": workflow, "dir": workflow_dir.to_string_lossy() },
        // Set when a step's failure went back to an earlier step
        // (`on_failure.retry_step`): why, which time, from where.
        "retry": { "error": "", "attempt": 0, "from": "" },
        // The run's progress log (each completed step's short output), for
        // workflows that use `{{ progress }}`.
        "progress": "",
    })
}

/// What a run offers the invocations of its steps.
pub(super) struct RunView<'a> {
    /// The run.
    pub(super) run_id: &'a str,
    /// Its workflow.
    pub(super) workflow: &'a LoadedWorkflow,
    /// Its arguments.
    pub(super) args: &'a Value,
    /// Outputs of the steps completed so far.
    pub(super) outputs: &'a BTreeMap<String, Value>,
    /// The template context (for a `for_each` item, with `item`, `index`).
    pub(super) context: &'a Value,
    /// The template engine.
    pub(super) templates: &'a Templates,
}

/// One attempt of one step, to be prepared.
pub(super) struct AttemptPlan<'a> {
    /// The step.
    pub(super) step: &'a Step,
    /// Its type.
    pub(super) kind: &'a dyn StepType,
    /// The component it runs.
    pub(super) component: &'a str,
    /// The attempt's number (1 for the first).
    pub(super) attempt: u32,
    /// Its resolved grants.
    pub(super) grants: ResolvedGrants,
    /// Its scratch directory.
    pub(super) scratch_dir: PathBuf,
}

/// The invocation of `plan` in `run`: config rendered, inputs gathered,
/// timeout from the grants.
pub(super) fn prepare_invocation(
    run: &RunView<'_>,
    plan: AttemptPlan<'_>,
) -> Result<StepInvocation, StepFailure> {
    let RunView {
        run_id,
        workflow,
        args,
        outputs,
        context,
        templates,
    } = *run;
    let AttemptPlan {
        step,
        kind,
        component,
        attempt,
        grants,
        scratch_dir,
    } = plan;
    let rendered_with = match &step.with {
        Some(with) => templates
            .render_value(with, context)
            .map_err(|e| StepFailure::permanent(format!("template in `with`: {e}")))?,
        None => json!({}),
    };
    let config = kind.config(workflow, step, rendered_with, context, templates)?;
    let inputs: Map<String, Value> = step
        .needs
        .iter()
        .filter_map(|need| {
            outputs
                .get(need)
                .map(|output| (need.clone(), output.clone()))
        })
        .collect();
    let timeout = grants::step_timeout(workflow, step, &grants);
    Ok(StepInvocation {
        run_id: run_id.to_string(),
        step_id: step.id.clone(),
        component: component.to_string(),
        function: step.function.clone(),
        attempt,
        idempotency_key: crate::step::executor::idempotency_key(run_id, &step.id, 0, attempt),
        config,
        inputs: Value::Object(inputs),
        args: args.clone(),
        workdir: workflow.dir.clone(),
        cwd: working_directory(workflow, step),
        grants,
        timeout,
        scratch_dir,
        agent: None,
        cancel: Default::default(),
        lease: Default::default(),
        resume: None,
    })
}

/// Where the step's programs start: its `working_directory` (else the
/// workflow's `defaults.working_directory`) under the workflow's directory,
/// or that directory itself.
pub(crate) fn working_directory(workflow: &LoadedWorkflow, step: &Step) -> PathBuf {
    let configured =
        step.working_directory
            .as_deref()
            .or(workflow.def.defaults.working_directory.as_deref());
    match configured {
        Some(dir) => workflow.dir.join(dir),
        None => workflow.dir.clone(),
    }
}

impl Driver {
    /// What the engine offers step types when they attach what an
    /// invocation needs (see [`StepType::attach`]).
    pub(super) fn attach_context(&self) -> Attach<'_> {
        Attach {
            store: &self.store,
            agents: self.agents.as_ref(),
        }
    }
}
