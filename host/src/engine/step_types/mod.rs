//! Step types: what each kind of step runs, how its invocation is
//! prepared and what the engine attaches to it. The driver asks a step's
//! [`StepType`] (looked up once per step by [`of`]) and names none of the
//! kinds itself. A new step type is one new file here plus its line in
//! [`of`] (and its checks in `workflow::validate`).

mod agent;
mod function;
mod plugin;
mod script;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::engine::agents::AgentSessions;
use crate::step::executor::{StepFailure, StepInvocation};
use crate::store::Store;
use crate::workflow::model::Step;
use crate::workflow::{step_kind, LoadedWorkflow, StepKind, Templates};

/// What the engine offers a step type when it attaches what an invocation
/// needs beyond its config.
pub(crate) struct Attach<'a> {
    /// The run store.
    pub(crate) store: &'a Arc<Store>,
    /// The agent sessions, when this host serves agent steps.
    pub(crate) agents: Option<&'a Arc<dyn AgentSessions>>,
}

/// One kind of step (script, function, plugin, agent).
pub(crate) trait StepType: Send + Sync {
    /// The component the step runs: a built-in name or an absolute `.wasm`
    /// path.
    fn component(&self, workflow: &LoadedWorkflow) -> String;

    /// The config the component receives, from `with` rendered into
    /// `rendered_with` (`{}` without `with`); by default that unchanged.
    fn config(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
        rendered_with: Value,
        context: &Value,
        templates: &Templates,
    ) -> Result<Value, StepFailure> {
        let _ = (workflow, step, context, templates);
        Ok(rendered_with)
    }

    /// Attach what the invocation needs from the engine before it runs
    /// (once per attempt, not per `for_each` item); by default nothing.
    fn attach(
        &self,
        engine: &Attach<'_>,
        workflow: &LoadedWorkflow,
        step: &Step,
        invocation: StepInvocation,
    ) -> Result<StepInvocation, StepFailure> {
        let _ = (engine, workflow, step);
        Ok(invocation)
    }

    /// A section for the step's `summary.md` (in Markdown), if this kind
    /// has one.
    fn summary(&self, store: &Store, run_id: &str, step_id: &str) -> Option<String> {
        let _ = (store, run_id, step_id);
        None
    }
}

/// The step type of (a validated) `step`.
pub(crate) fn of(step: &Step) -> Box<dyn StepType> {
    match step_kind(step) {
        StepKind::Script => Box::new(script::Script),
        StepKind::Function { component } => Box::new(function::Function { component }),
        StepKind::Plugin { name } => Box::new(plugin::Plugin { name }),
        StepKind::Agent => Box::new(agent::Agent),
    }
}

/// The component a step runs: a built-in name or an absolute `.wasm` path.
pub fn component_of(workflow: &LoadedWorkflow, step: &Step) -> String {
    of(step).component(workflow)
}

/// `path` relative to `base`, made canonical when it exists.
fn absolute(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    std::fs::canonicalize(&joined).unwrap_or(joined)
}

/// The failure of a template in `what`.
fn template_error(what: &str, error: String) -> StepFailure {
    StepFailure::permanent(format!("template in {what}: {error}"))
}
