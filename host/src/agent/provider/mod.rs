//! Model providers: where an agent's completions come from.
//!
//! - [`openai::OpenAi`]: any OpenAI-compatible `chat/completions` endpoint.
//! - [`scripted::Scripted`]: replies read from a file, for tests, demos and
//!   offline runs.
//!
//! API keys are read here, in the host, from the environment variable the
//! agent names; they never enter a sandbox.

pub mod openai;
pub mod scripted;

pub use crate::workflow::reach;

use std::path::Path;

use crate::step::bindings::model::{Completion, Message, ModelError, ToolSpec};
use crate::step::executor::BoxFuture;
use crate::workflow::model::ModelSpec;

/// Something that completes conversations.
pub trait ModelProvider: Send + Sync {
    /// The next assistant message for `messages`, offering `tools`.
    fn complete(
        &self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> BoxFuture<Result<Completion, ModelError>>;

    /// A short description for audit events, e.g. `openai gpt-4o`.
    fn describe(&self) -> String;
}

/// Build the provider an agent's `model` names. `workdir` resolves a
/// script's relative path; `step_id` and `position` place a script's reader
/// (see [`scripted`]).
pub fn from_spec(
    spec: &ModelSpec,
    workdir: &Path,
    step_id: &str,
    position: ScriptPosition,
) -> Result<Box<dyn ModelProvider>, String> {
    match spec {
        ModelSpec::Openai {
            base_url,
            model,
            api_key_env,
            timeout,
        } => {
            let timeout = match timeout {
                Some(text) => crate::workflow::parse_duration(text)
                    .map_err(|e| format!("model timeout '{text}': {e}"))?,
                None => openai::DEFAULT_TIMEOUT,
            };
            Ok(Box::new(openai::OpenAi::new(
                base_url,
                model,
                api_key_env.as_deref(),
                timeout,
            )?))
        }
        ModelSpec::Named { name, model } => Err(format!(
            "model '{name}/{model}': wfhost has no endpoint for provider '{name}' (known: {}); \
             write the model as a block, e.g. `model: {{provider: openai, base_url: https://…/v1, \
             model: {model}, api_key_env: KEY_VARIABLE}}` for any OpenAI-compatible endpoint",
            crate::workflow::seeds::known_providers().join(", ")
        )),
        ModelSpec::Scripted { script } => {
            let path = workdir.join(script);
            let script = scripted::Script::load(&path)?;
            let start = match script.for_step(step_id) {
                scripted::Scope::Agent => position.agent,
                scripted::Scope::Step => position.step,
            };
            Ok(Box::new(scripted::Scripted::new(script, step_id, start)))
        }
    }
}

/// How many live completions (and provider errors) were recorded before,
/// in the run for this agent and for this step: where a script continues.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptPosition {
    /// Over every step of the run that uses the agent.
    pub agent: usize,
    /// Over this step only.
    pub step: usize,
}
