//! The agent session the engine attaches to an agent step's invocation:
//! the port through which the step's `model` and `tools` imports are served.

use std::sync::Arc;

use super::bindings::model::{Completion, Message, ModelError, ToolSpec};
use super::bindings::tools::ToolError;
use super::executor::BoxFuture;
use super::stop::StopSignal;

/// What an agent step may do through the host: complete a conversation
/// with its model, list and invoke its tools.
pub trait AgentSession: Send + Sync {
    /// Ask the agent's model for the next message.
    fn complete(
        &self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> BoxFuture<Result<Completion, ModelError>>;
    /// The tools the agent may use.
    fn available(&self) -> Vec<ToolSpec>;
    #[cfg(test)]
    /// Check, audit and run one tool call.
    fn invoke(
        &self,
        call_id: String,
        name: String,
        arguments: String,
    ) -> BoxFuture<Result<String, ToolError>> {
        self.invoke_until(call_id, name, arguments, StopSignal::never())
    }
    /// [`AgentSession::invoke`], where `stop` fires when the step must end
    /// (deadline or cancel): a program the call started then gets SIGTERM,
    /// the step's `kill_grace`, then SIGKILL.
    fn invoke_until(
        &self,
        call_id: String,
        name: String,
        arguments: String,
        stop: StopSignal,
    ) -> BoxFuture<Result<String, ToolError>>;
}

/// A shareable session handle carried by a step invocation.
#[derive(Clone)]
pub struct AgentHandle(pub Arc<dyn AgentSession>);

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentHandle")
    }
}
