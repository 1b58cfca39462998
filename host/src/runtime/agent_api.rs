//! The `model` and `tools` interfaces. A step without an agent gets a clear
//! refusal; agent steps are served by [`crate::agent`] through the step's
//! [`super::state::StepContext::agent`].

use super::bindings::model::{self, Completion, Message, ModelError, ToolSpec};
use super::bindings::tools::{self, ToolError};
use super::state::StepState;

const NO_AGENT: &str = "this step has no agent: only `type: agent` steps may use models and tools";

impl model::Host for StepState {
    async fn complete(
        &mut self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> Result<Completion, ModelError> {
        match self.step.agent.clone() {
            Some(agent) => agent.complete(messages, tools).await,
            None => Err(ModelError::Permanent(NO_AGENT.to_string())),
        }
    }
}

impl tools::Host for StepState {
    async fn available(&mut self) -> Vec<ToolSpec> {
        match &self.step.agent {
            Some(agent) => agent.available(),
            None => Vec::new(),
        }
    }

    async fn invoke(
        &mut self,
        call_id: String,
        name: String,
        arguments: String,
    ) -> Result<String, ToolError> {
        let Some(agent) = self.step.agent.clone() else {
            return Err(ToolError::Denied(NO_AGENT.to_string()));
        };
        // While the call runs it counts as one of the step's programs, so a
        // stopped step waits (up to its grace) for a program the call
        // started to end on SIGTERM before it is dropped.
        let step = self.step.clone();
        let _running = step.program_started();
        agent
            .invoke_until(call_id, name, arguments, step.stop.signal())
            .await
    }
}
