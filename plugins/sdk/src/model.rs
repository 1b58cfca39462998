//! Chat completion brokered by the host (`type: agent` steps only).
//!
//! The step never sees an API key or a provider address: the host answers
//! with the model of the step's agent. The types here mirror the WIT
//! `model` interface and (de)serialize with serde, so a conversation can be
//! stored in a step's output and handed back later:
//!
//! ```json
//! { "role": "assistant", "content": "",
//!   "tool_calls": [{ "id": "c1", "name": "read_file", "arguments": "{\"path\":\"a.txt\"}" }],
//!   "tool_call_id": null }
//! ```
//!
//! On input `content` may be `null` or missing (empty), `tool_calls` and
//! `tool_call_id` may be missing, and a call's `arguments` may be a JSON
//! object instead of a string (it is re-serialized).
//!
//! ```ignore
//! use wfhost_sdk::model::{self, Message};
//! let reply = model::complete(&[Message::user("Say hi")], &[])?;
//! wfhost_sdk::log::info(reply.message.content);
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::bindings::wfhost::plugin::model as wit;
use crate::StepError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person (or workflow) asking.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// `system`, `user`, `assistant` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool the model asked to call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Identifier the matching `tool` message refers to.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments: a JSON object, serialized.
    #[serde(deserialize_with = "json_text")]
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text (empty for an assistant message that only calls tools).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// Tool calls of an assistant message.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with no tool calls.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    /// An assistant message without tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }

    /// A tool result answering the call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments, serialized.
    #[serde(deserialize_with = "json_text")]
    pub parameters: String,
}

/// Tokens a completion used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u32,
    /// Tokens of the reply.
    pub completion_tokens: u32,
}

/// Sum of two usages (saturating).
impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// The model's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The assistant message (text and/or tool calls).
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
    /// Why the model stopped (`stop`, `tool_calls`, `length` ...).
    pub finish_reason: String,
}

/// Why a completion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// Worth retrying (rate limit, 5xx, timeout).
    Transient(String),
    /// Will fail again (bad request, no agent, no provider).
    Permanent(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Transient(m) => write!(f, "model error (transient): {m}"),
            ModelError::Permanent(m) => write!(f, "model error: {m}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Transient stays transient (the engine may retry the step), permanent
/// stays permanent.
impl From<ModelError> for StepError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Transient(_) => StepError::Transient(e.to_string()),
            ModelError::Permanent(_) => StepError::Permanent(e.to_string()),
        }
    }
}

/// Ask the step's agent model for the next message of `messages`, offering
/// it `tools`.
pub fn complete(messages: &[Message], tools: &[ToolSpec]) -> Result<Completion, ModelError> {
    let messages: Vec<wit::Message> = messages.iter().cloned().map(Into::into).collect();
    let tools: Vec<wit::ToolSpec> = tools.iter().cloned().map(Into::into).collect();
    match wit::complete(&messages, &tools) {
        Ok(c) => Ok(c.into()),
        Err(wit::ModelError::Transient(m)) => Err(ModelError::Transient(m)),
        Err(wit::ModelError::Permanent(m)) => Err(ModelError::Permanent(m)),
    }
}

// Conversions between these types and the generated bindings.

impl From<Role> for wit::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::System => wit::Role::System,
            Role::User => wit::Role::User,
            Role::Assistant => wit::Role::Assistant,
            Role::Tool => wit::Role::Tool,
        }
    }
}

impl From<wit::Role> for Role {
    fn from(r: wit::Role) -> Self {
        match r {
            wit::Role::System => Role::System,
            wit::Role::User => Role::User,
            wit::Role::Assistant => Role::Assistant,
            wit::Role::Tool => Role::Tool,
        }
    }
}

impl From<ToolCall> for wit::ToolCall {
    fn from(c: ToolCall) -> Self {
        wit::ToolCall {
            id: c.id,
            name: c.name,
            arguments: c.arguments,
        }
    }
}

impl From<wit::ToolCall> for ToolCall {
    fn from(c: wit::ToolCall) -> Self {
        ToolCall {
            id: c.id,
            name: c.name,
            arguments: c.arguments,
        }
    }
}

impl From<Message> for wit::Message {
    fn from(m: Message) -> Self {
        wit::Message {
            role: m.role.into(),
            content: m.content,
            tool_calls: m.tool_calls.into_iter().map(Into::into).collect(),
            tool_call_id: m.tool_call_id,
        }
    }
}

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Message {
            role: m.role.into(),
            content: m.content,
            tool_calls: m.tool_calls.into_iter().map(Into::into).collect(),
            tool_call_id: m.tool_call_id,
        }
    }
}

impl From<ToolSpec> for wit::ToolSpec {
    fn from(t: ToolSpec) -> Self {
        wit::ToolSpec {
            name: t.name,
            description: t.description,
            parameters: t.parameters,
        }
    }
}

impl From<wit::ToolSpec> for ToolSpec {
    fn from(t: wit::ToolSpec) -> Self {
        ToolSpec {
            name: t.name,
            description: t.description,
            parameters: t.parameters,
        }
    }
}

impl From<wit::Completion> for Completion {
    fn from(c: wit::Completion) -> Self {
        Completion {
            message: c.message.into(),
            usage: Usage {
                prompt_tokens: c.usage.prompt_tokens,
                completion_tokens: c.usage.completion_tokens,
            },
            finish_reason: c.finish_reason,
        }
    }
}

// serde helpers

/// A JSON string is taken as is; any other JSON value is serialized (so
/// `"arguments": {"path": "a"}` works as well as the string form).
fn json_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    })
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_json_round_trip() {
        let m = Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "read_file".into(),
                arguments: r#"{"path":"a.txt"}"#.into(),
            }],
            tool_call_id: None,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}],
                "tool_call_id": null
            })
        );
        let back: Message = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn lenient_message_input() {
        let m: Message = serde_json::from_value(json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": "c1", "name": "exec", "arguments": {"command": "ls"}}]
        }))
        .unwrap();
        assert_eq!(m.content, "");
        assert_eq!(m.tool_calls[0].arguments, r#"{"command":"ls"}"#);
        assert_eq!(m.tool_call_id, None);

        let m: Message = serde_json::from_value(
            json!({"role": "tool", "content": "ok", "tool_call_id": "c1", "tool_calls": null}),
        )
        .unwrap();
        assert_eq!(m, Message::tool("c1", "ok"));

        assert!(
            serde_json::from_value::<Message>(json!({"role": "robot", "content": ""})).is_err()
        );
    }

    #[test]
    fn wit_conversions_preserve_fields() {
        let m = Message::tool("c9", "result");
        let w: wit::Message = m.clone().into();
        assert_eq!(w.role, wit::Role::Tool);
        assert_eq!(w.tool_call_id.as_deref(), Some("c9"));
        assert_eq!(Message::from(w), m);

        let spec = ToolSpec {
            name: "read_file".into(),
            description: "Read a file".into(),
            parameters: "{}".into(),
        };
        assert_eq!(ToolSpec::from(wit::ToolSpec::from(spec.clone())), spec);
    }

    #[test]
    fn model_errors_keep_their_kind() {
        assert!(StepError::from(ModelError::Transient("429".into())).is_transient());
        assert!(!StepError::from(ModelError::Permanent("no agent".into())).is_transient());
    }

    #[test]
    fn usage_adds() {
        let a = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        };
        assert_eq!(
            a + a,
            Usage {
                prompt_tokens: 6,
                completion_tokens: 8
            }
        );
    }
}
