//! Agent steps (`type: agent`): the built-in `agent` component, given the
//! rendered prompts and limits, with a session serving its `model` and
//! `tools` imports.

use serde_json::{json, Value};

use super::{template_error, Attach, StepType};
use crate::engine::agents::SessionContext;
use crate::step::executor::{StepFailure, StepInvocation};
use crate::store::EngineStore;
use crate::workflow::model::{SessionMode, Step};
use crate::workflow::reach::{reach, ModelReach};
use crate::workflow::{LoadedWorkflow, Templates};

/// An agent step.
pub(super) struct Agent;

/// The workflow's agent that `step` names.
fn agent_of<'a>(
    workflow: &'a LoadedWorkflow,
    step: &Step,
) -> Result<&'a crate::workflow::model::Agent, StepFailure> {
    let name = step.agent.as_deref().unwrap_or_default();
    workflow
        .def
        .agents
        .iter()
        .find(|a| a.id == name)
        .ok_or_else(|| StepFailure::permanent(format!("unknown agent '{name}'")))
}

impl StepType for Agent {
    /// The model of the agent the step names.
    fn model_reach(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
    ) -> Option<Result<ModelReach, String>> {
        let name = step.agent.as_deref()?;
        let agent = workflow.def.agents.iter().find(|a| a.id == name)?;
        Some(reach(agent))
    }

    fn component(&self, _workflow: &LoadedWorkflow) -> String {
        "agent".to_string()
    }

    /// The rendered prompt and system prompt, limits and the output mode;
    /// `with` is not used. The history is attached by [`Agent::attach`].
    fn config(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
        _rendered_with: Value,
        context: &Value,
        templates: &Templates,
    ) -> Result<Value, StepFailure> {
        let agent = agent_of(workflow, step)?;
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

    /// The earlier conversation (`session: reuse`) and the session serving
    /// the step's `model` and `tools` imports.
    fn attach(
        &self,
        engine: &Attach<'_>,
        workflow: &LoadedWorkflow,
        step: &Step,
        mut invocation: StepInvocation,
    ) -> Result<StepInvocation, StepFailure> {
        let agent = agent_of(workflow, step)?;
        let name = agent.id.as_str();
        let agents = engine.agents.ok_or_else(|| {
            StepFailure::permanent(format!(
                "agent '{name}': this host was not set up to serve agent steps"
            ))
        })?;
        if step.session == Some(SessionMode::Reuse) {
            let history = agents.history(&**engine.store, &invocation.run_id, name);
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
                store: engine.store.clone(),
            })
            .map_err(|e| StepFailure::permanent(format!("agent '{name}': {e}")))?;
        invocation.agent = Some(session);
        Ok(invocation)
    }

    fn summary(&self, store: &dyn EngineStore, run_id: &str, step_id: &str) -> Option<String> {
        Some(audit(store, run_id, step_id))
    }
}

/// The audit section of an agent step's summary: model calls with token
/// usage, and each tool call with its decision and who made it.
fn audit(store: &dyn EngineStore, run_id: &str, step_id: &str) -> String {
    let Ok(events) = store.events(run_id, Some(step_id)) else {
        return String::new();
    };
    let (mut calls, mut prompt, mut completion) = (0u64, 0u64, 0u64);
    let mut rows = Vec::new();
    for event in &events {
        match event.kind.as_str() {
            "model_call" => {
                calls += 1;
                prompt += event.data["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                completion += event.data["usage"]["completion_tokens"]
                    .as_u64()
                    .unwrap_or(0);
            }
            "tool_decision" => {
                let reason = event.data["reason"]
                    .as_str()
                    .or(event.data["prompt"].as_str())
                    .unwrap_or_default()
                    .replace('|', "\\|")
                    .replace('\n', " ");
                rows.push(format!(
                    "| {} | {} | {} | {} |",
                    event.data["tool"].as_str().unwrap_or_default(),
                    event.data["decision"].as_str().unwrap_or_default(),
                    event.data["decided_by"].as_str().unwrap_or_default(),
                    reason
                ));
            }
            _ => {}
        }
    }
    let mut text = format!(
        "\n## Agent audit\n\n- model calls: {calls} ({prompt} prompt + {completion} completion tokens)\n"
    );
    if !rows.is_empty() {
        text.push_str("\n| tool | decision | decided by | reason |\n|---|---|---|---|\n");
        text.push_str(&rows.join("\n"));
        text.push('\n');
    }
    text
}
