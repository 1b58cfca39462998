//! Function steps (`type: function`): a call into a built-in component or
//! a `.wasm` file, given the rendered `with`.

use super::{absolute, StepType};
use crate::workflow::LoadedWorkflow;

/// A function step calling `component`.
pub(super) struct Function {
    /// The component as written: a built-in name or a path relative to the
    /// workflow's directory.
    pub(super) component: String,
}

impl StepType for Function {
    fn component(&self, workflow: &LoadedWorkflow) -> String {
        if crate::step::builtin::builtin(&self.component).is_some() {
            self.component.clone()
        } else {
            absolute(&workflow.dir, &self.component)
                .to_string_lossy()
                .into_owned()
        }
    }
}
