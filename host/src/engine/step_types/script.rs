//! Script steps (`run`, or `type: script`): the built-in `script`
//! component, given the rendered `run`.

use serde_json::Value;

use super::{template_error, StepType};
use crate::step::executor::StepFailure;
use crate::workflow::model::{Grants, Step};
use crate::workflow::{LoadedWorkflow, Templates};

/// The component a script step runs (built in).
pub const SCRIPT_COMPONENT: &str = "script";

/// A script step.
pub(super) struct Script;

impl StepType for Script {
    fn component(&self, _workflow: &LoadedWorkflow) -> String {
        SCRIPT_COMPONENT.to_string()
    }

    fn config(
        &self,
        _workflow: &LoadedWorkflow,
        step: &Step,
        mut config: Value,
        context: &Value,
        templates: &Templates,
    ) -> Result<Value, StepFailure> {
        if let Some(script) = &step.run {
            let rendered = templates
                .render_str(script, context)
                .map_err(|e| template_error("`run`", e))?;
            if let Value::Object(map) = &mut config {
                map.insert("run".into(), Value::String(rendered));
            }
        }
        Ok(config)
    }

    /// The shell that runs the script (`with.shell`, default `sh`) in
    /// `exec`.
    fn implied_grants(&self, step: &Step, grants: &mut Grants) {
        let shell = step
            .with
            .as_ref()
            .and_then(|with| with.get("shell"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("sh")
            .to_string();
        if !grants.exec.contains(&shell) {
            grants.exec.push(shell);
        }
    }
}
