//! Script steps (`run`, or `type: script`): the built-in `script`
//! component, given the rendered `run`.

use serde_json::Value;

use super::{template_error, StepType};
use crate::step::executor::StepFailure;
use crate::workflow::model::Step;
use crate::workflow::{LoadedWorkflow, Templates};

/// A script step.
pub(super) struct Script;

impl StepType for Script {
    fn component(&self, _workflow: &LoadedWorkflow) -> String {
        "script".to_string()
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
}
