//! Invocation preparation: the component a step runs, the template
//! context, the rendered config and the agent session it is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::Driver;
use crate::engine::agents::SessionContext;
use crate::engine::grants;
use crate::step::executor::{ResolvedGrants, StepFailure, StepInvocation};
use crate::workflow::model::{SessionMode, Step};
use crate::workflow::{step_kind, LoadedWorkflow, StepKind, Templates};

/// The component a step runs: a built-in name or an absolute `.wasm` path.
pub fn component_of(workflow: &LoadedWorkflow, step: &Step) -> String {
    match step_kind(step) {
        StepKind::Script => "script".to_string(),
        StepKind::Agent => "agent".to_string(),
        StepKind::Function { component } => {
            if crate::step::builtin::builtin(&component).is_some() {
                component
            } else {
                absolute(&workflow.dir, &component)
                    .to_string_lossy()
                    .into_owned()
            }
        }
        StepKind::Plugin { name } => {
            let path = workflow.def.plugins.get(&name).cloned().unwrap_or(name);
            absolute(&workflow.dir, &path)
                .to_string_lossy()
                .into_owned()
        }
    }
}

fn absolute(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    std::fs::canonicalize(&joined).unwrap_or(joined)
}

/// The template context: `args`, `steps.<id>.output`, `run`.
pub fn template_context(
    run_id: &str,
    workflow: &str,
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
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn prepare_invocation(
    workflow: &LoadedWorkflow,
    step: &Step,
    component: &str,
    run_id: &str,
    attempt: u32,
    args: &Value,
    outputs: &BTreeMap<String, Value>,
    context: &Value,
    templates: &Templates,
    grants: ResolvedGrants,
    scratch_dir: PathBuf,
) -> Result<StepInvocation, StepFailure> {
    let template_error =
        |what: &str, error: String| StepFailure::permanent(format!("template in {what}: {error}"));
    let mut config = match &step.with {
        Some(with) => templates
            .render_value(with, context)
            .map_err(|e| template_error("`with`", e))?,
        None => json!({}),
    };
    if step_kind(step) == StepKind::Agent {
        config = agent_config(workflow, step, run_id, context, templates)?;
    }
    if step_kind(step) == StepKind::Script {
        if let Some(script) = &step.run {
            let rendered = templates
                .render_str(script, context)
                .map_err(|e| template_error("`run`", e))?;
            if let Value::Object(map) = &mut config {
                map.insert("run".into(), Value::String(rendered));
            }
        }
    }
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
        attempt,
        idempotency_key: crate::step::executor::idempotency_key(run_id, &step.id, 0, attempt),
        config,
        inputs: Value::Object(inputs),
        args: args.clone(),
        workdir: workflow.dir.clone(),
        grants,
        timeout,
        scratch_dir,
        agent: None,
        cancel: Default::default(),
    })
}

/// The config the built-in `agent` component receives: the rendered prompt
/// and system prompt, limits, the output mode and, for `session: reuse`,
/// the agent's earlier conversation in this run.
fn agent_config(
    workflow: &LoadedWorkflow,
    step: &Step,
    run_id: &str,
    context: &Value,
    templates: &Templates,
) -> Result<Value, StepFailure> {
    let template_error =
        |what: &str, error: String| StepFailure::permanent(format!("template in {what}: {error}"));
    let name = step.agent.as_deref().unwrap_or_default();
    let agent = workflow
        .def
        .agents
        .iter()
        .find(|a| a.id == name)
        .ok_or_else(|| StepFailure::permanent(format!("unknown agent '{name}'")))?;
    let prompt = templates
        .render_str(step.prompt.as_deref().unwrap_or_default(), context)
        .map_err(|e| template_error("`prompt`", e))?;
    let system = match agent.system.as_deref().or(agent.role.as_deref()) {
        Some(text) => Some(
            templates
                .render_str(text, context)
                .map_err(|e| template_error("the agent's `system`", e))?,
        ),
        None => None,
    };
    let _ = run_id;
    Ok(json!({
        "prompt": prompt,
        "system": system,
        "max_turns": step.max_turns.unwrap_or(20),
        "output": step.output.as_deref().unwrap_or("text"),
        "output_schema": step.output_schema,
        "history": [],
        "agent": { "id": agent.id, "name": agent.name, "role": agent.role },
    }))
}

impl Driver {
    /// For an agent step: the earlier conversation (`session: reuse`) and
    /// the session serving its `model` and `tools` imports.
    pub(super) fn attach_agent(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
        mut invocation: StepInvocation,
    ) -> std::result::Result<StepInvocation, StepFailure> {
        if step_kind(step) != StepKind::Agent {
            return Ok(invocation);
        }
        let name = step.agent.as_deref().unwrap_or_default();
        let agent = workflow
            .def
            .agents
            .iter()
            .find(|a| a.id == name)
            .ok_or_else(|| StepFailure::permanent(format!("unknown agent '{name}'")))?;
        let agents = self.agents.as_ref().ok_or_else(|| {
            StepFailure::permanent(format!(
                "agent '{name}': this host was not set up to serve agent steps"
            ))
        })?;
        if step.session == Some(SessionMode::Reuse) {
            let history = agents.history(&self.store, &invocation.run_id, name);
            invocation.config["history"] = Value::Array(history);
        }
        let session = agents
            .open(SessionContext {
                run_id: invocation.run_id.clone(),
                step_id: invocation.step_id.clone(),
                attempt: invocation.attempt,
                // `run:step:iteration:attempt`.
                iteration: invocation
                    .idempotency_key
                    .rsplit(':')
                    .nth(1)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0),
                agent: agent.clone(),
                grants: invocation.grants.clone(),
                workdir: invocation.workdir.clone(),
                store: self.store.clone(),
            })
            .map_err(|e| StepFailure::permanent(format!("agent '{name}': {e}")))?;
        invocation.agent = Some(session);
        Ok(invocation)
    }
}
