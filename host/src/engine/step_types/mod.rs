//! Step types: what each kind of step runs, how its invocation is
//! prepared and what the engine attaches to it. The driver asks a step's
//! [`StepType`] (looked up once per step by [`of`]) and names none of the
//! kinds itself. A new step type is one new file here plus its line in
//! [`of`] (and its checks in `workflow::validate`).

mod agent;
mod function;
mod plugin;
mod script;

pub use script::SCRIPT_COMPONENT;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::engine::agents::AgentSessions;
use crate::step::executor::{StepFailure, StepInvocation};
use crate::store::EngineStore;
use crate::workflow::model::{Grants, Step};
use crate::workflow::reach::ModelReach;
use crate::workflow::{step_kind, LoadedWorkflow, StepKind, Templates};

/// What the engine offers a step type when it attaches what an invocation
/// needs beyond its config.
pub(crate) struct Attach<'a> {
    /// The run store.
    pub(crate) store: &'a Arc<dyn EngineStore>,
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

    /// Add to the step's (merged) grants what this kind of step needs
    /// implicitly (a script its shell); by default nothing.
    fn implied_grants(&self, step: &Step, grants: &mut Grants) {
        let _ = (step, grants);
    }

    /// What the step reaches besides its grants: an agent step's model
    /// (its endpoint and key variable), checked against the ceiling as if
    /// granted. `None` for kinds that reach nothing more (the default) and
    /// for unknown agents (reported by validation).
    fn model_reach(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
    ) -> Option<Result<ModelReach, String>> {
        let _ = (workflow, step);
        None
    }

    /// A section for the step's `summary.md` (in Markdown), if this kind
    /// has one.
    fn summary(&self, store: &dyn EngineStore, run_id: &str, step_id: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::step::executor::ResolvedGrants;
    use crate::workflow::{load_from_source, Format};

    const WORKFLOW: &str = r#"
name: kinds
args:
  type: object
  properties:
    topic: { type: string }
plugins:
  upper: plugins/upper.wasm
agents:
  - id: helper
    name: Helper
    role: You help with {{ args.topic }}.
    model:
      provider: scripted
      script: replies.yaml
steps:
  - id: shell
    run: echo {{ args.topic }}
    with: { shell: bash }
  - id: builtin
    type: function
    component: echo
    with: { text: "{{ args.topic }}" }
  - id: wasm
    type: function
    component: own.wasm
  - id: plugged
    type: upper
  - id: ask
    type: agent
    agent: helper
    prompt: Tell me about {{ args.topic }}.
"#;

    fn workflow() -> (tempfile::TempDir, LoadedWorkflow) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        // A component's header is all validation reads.
        for file in ["plugins/upper.wasm", "own.wasm"] {
            std::fs::write(dir.path().join(file), b"\0asm\x0d\0\x01\0").unwrap();
        }
        std::fs::write(dir.path().join("replies.yaml"), "").unwrap();
        let loaded =
            load_from_source(WORKFLOW, "kinds.yaml", dir.path(), Format::Yaml, &["echo"]).unwrap();
        (dir, loaded)
    }

    fn step<'a>(workflow: &'a LoadedWorkflow, id: &str) -> &'a Step {
        workflow.step(id).unwrap()
    }

    fn config_of(workflow: &LoadedWorkflow, id: &str, with: Value) -> Result<Value, StepFailure> {
        let step = step(workflow, id);
        let context = json!({ "args": { "topic": "tides" } });
        of(step).config(workflow, step, with, &context, &Templates::new())
    }

    fn invocation(workflow: &LoadedWorkflow) -> StepInvocation {
        StepInvocation {
            run_id: "r1".into(),
            step_id: "ask".into(),
            component: "agent".into(),
            function: None,
            attempt: 1,
            idempotency_key: "r1:ask:0:1".into(),
            config: json!({}),
            inputs: json!({}),
            args: json!({}),
            workdir: workflow.dir.clone(),
            cwd: workflow.dir.clone(),
            grants: ResolvedGrants::default(),
            timeout: std::time::Duration::from_secs(1),
            scratch_dir: PathBuf::new(),
            agent: None,
            cancel: Default::default(),
            lease: Default::default(),
            resume: None,
        }
    }

    #[test]
    fn each_kind_names_its_component() {
        let (dir, workflow) = workflow();
        let canonical = dir.path().canonicalize().unwrap();
        let component = |id: &str| component_of(&workflow, step(&workflow, id));
        assert_eq!(component("shell"), "script");
        assert_eq!(component("builtin"), "echo");
        assert_eq!(
            component("wasm"),
            canonical.join("own.wasm").to_string_lossy()
        );
        assert_eq!(
            component("plugged"),
            canonical.join("plugins/upper.wasm").to_string_lossy()
        );
        assert_eq!(component("ask"), "agent");
    }

    #[test]
    fn a_script_gets_its_rendered_run_beside_with() {
        let (_dir, workflow) = workflow();
        let config = config_of(&workflow, "shell", json!({ "shell": "bash" })).unwrap();
        assert_eq!(config, json!({ "shell": "bash", "run": "echo tides" }));
    }

    #[test]
    fn functions_and_plugins_get_with_as_rendered() {
        let (_dir, workflow) = workflow();
        for id in ["builtin", "wasm", "plugged"] {
            let config = config_of(&workflow, id, json!({ "text": "tides" })).unwrap();
            assert_eq!(config, json!({ "text": "tides" }), "step {id}");
        }
    }

    #[test]
    fn an_agent_gets_its_rendered_prompts_not_with() {
        let (_dir, workflow) = workflow();
        let config = config_of(&workflow, "ask", json!({ "ignored": true })).unwrap();
        assert_eq!(config["prompt"], "Tell me about tides.");
        assert_eq!(config["system"], "You help with tides.");
        assert_eq!(config["max_turns"], 20);
        assert_eq!(config["output"], "text");
        assert_eq!(config["agent"]["id"], "helper");
        assert!(config.get("ignored").is_none());
    }

    #[test]
    fn a_template_error_names_the_field() {
        let (_dir, mut workflow) = workflow();
        workflow.def.steps[0].run = Some("echo {{ args.topic | nope }}".into());
        let failure = config_of(&workflow, "shell", json!({})).unwrap_err();
        assert!(
            failure.message.starts_with("template in `run`: "),
            "{}",
            failure.message
        );
    }

    #[test]
    fn only_an_agent_attaches_and_without_sessions_it_fails() {
        let (dir, workflow) = workflow();
        let store = crate::store::open(&dir.path().join("home"), Default::default()).unwrap();
        let engine = Attach {
            store: &store,
            agents: None,
        };
        let shell = step(&workflow, "shell");
        let attached = of(shell)
            .attach(&engine, &workflow, shell, invocation(&workflow))
            .unwrap();
        assert!(attached.agent.is_none());
        let ask = step(&workflow, "ask");
        let failure = of(ask)
            .attach(&engine, &workflow, ask, invocation(&workflow))
            .err()
            .unwrap();
        assert_eq!(
            failure.message,
            "agent 'helper': this host was not set up to serve agent steps"
        );
    }

    #[test]
    fn only_an_agent_adds_a_summary_section() {
        let (dir, workflow) = workflow();
        let store = crate::store::open(&dir.path().join("home"), Default::default()).unwrap();
        let summary = |id: &str| of(step(&workflow, id)).summary(&*store, "r1", id);
        assert_eq!(summary("shell"), None);
        assert_eq!(summary("plugged"), None);
        let audit = summary("ask").unwrap();
        assert!(audit.contains("## Agent audit"), "{audit}");
        assert!(audit.contains("model calls: 0"), "{audit}");
    }
}
