//! Plugin steps: a step type registered under the workflow's `plugins`,
//! given the rendered `with`.

use super::{absolute, StepType};
use crate::workflow::LoadedWorkflow;

/// A step of the type registered as `name` under `plugins`.
pub(super) struct Plugin {
    /// The key in `plugins`.
    pub(super) name: String,
}

impl StepType for Plugin {
    fn component(&self, workflow: &LoadedWorkflow) -> String {
        let path = workflow
            .def
            .plugins
            .get(&self.name)
            .cloned()
            .unwrap_or_else(|| self.name.clone());
        absolute(&workflow.dir, &path)
            .to_string_lossy()
            .into_owned()
    }
}
