//! Agent steps on the host side: model providers, built-in tools, the
//! policy chain, approvals, audit and replay.
//!
//! A `type: agent` step runs the built-in `agent` component, which talks
//! to its model and tools through the `model` and `tools` imports; the host
//! serves them through an [`AgentSession`] attached to the step.

use std::sync::Arc;

use crate::engine::executor::BoxFuture;
use crate::runtime::bindings::model::{Completion, Message, ModelError, ToolSpec};
use crate::runtime::bindings::tools::ToolError;

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
    /// Check, audit and run one tool call.
    fn invoke(
        &self,
        call_id: String,
        name: String,
        arguments: String,
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

/// Everything the host needs to serve one attempt of an agent step.
pub struct SessionContext {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The attempt (recorded replies and tool results are replayed across
    /// attempts of the same step after a crash).
    pub attempt: u32,
    /// The agent's definition from the workflow.
    pub agent: crate::workflow::model::Agent,
    /// The step's effective grants (tools are confined by them).
    pub grants: crate::engine::grants::ResolvedGrants,
    /// Absolute directory of the workflow file (relative paths resolve here).
    pub workdir: std::path::PathBuf,
    /// The store, for audit events, approvals and recordings.
    pub store: Arc<crate::store::Store>,
}
