//! Audit and replay of agent steps.
//!
//! Every model call and tool call of an agent step is an event in the
//! run's journal (and so in the step's `events.jsonl`):
//!
//! | kind            | when                                                      |
//! |-----------------|-----------------------------------------------------------|
//! | `model_call`    | a completion came back (live or replayed), with usage     |
//! | `model_error`   | the provider failed (`transient` or `permanent`)          |
//! | `replay_diverged` | a recorded reply no longer matches the conversation     |
//! | `tool_call`     | the agent invoked a tool                                  |
//! | `tool_decision` | the policy chain decided, naming who decided              |
//! | `approval_requested` / `approval_answered` | a call held for a person       |
//! | `tool_result`   | what the call returned (or why it was refused)            |
//!
//! Besides the events, the session *records* each model reply
//! (`completion`), each provider failure (`model_error`), the start of each
//! effectful tool call (`tool_started`) and each tool result
//! (`tool_result`) in the store's `agent_records`. When the step runs again
//! before it has completed (a retry, or `resume` after a crash), the
//! recorded replies are returned in order instead of calling the model,
//! and recorded tool results by call id instead of running the tool again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::Digest;

use crate::step::bindings::model::{
    Completion, Message, ModelError, Role, ToolCall, ToolSpec, Usage,
};
use crate::step::bindings::tools::ToolError;
use crate::store::{AgentRecord, AgentStore, NewAgentRecord};

/// Recording kinds in `agent_records`.
pub mod kinds {
    /// A model reply.
    pub const COMPLETION: &str = "completion";
    /// A provider failure (counts toward a script's position; not replayed).
    pub const MODEL_ERROR: &str = "model_error";
    /// An effectful tool call is about to run.
    pub const TOOL_STARTED: &str = "tool_started";
    /// What a tool call returned.
    pub const TOOL_RESULT: &str = "tool_result";
}

/// The JSON shape of a role.
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn parse_role(text: &str) -> Option<Role> {
    Some(match text {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => return None,
    })
}

/// A message as `{role, content, tool_calls: [{id, name, arguments}],
/// tool_call_id}` (the shape the agent component uses in its output).
pub fn message_to_json(message: &Message) -> Value {
    json!({
        "role": role_str(message.role),
        "content": message.content,
        "tool_calls": message.tool_calls.iter().map(|call| json!({
            "id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        })).collect::<Vec<_>>(),
        "tool_call_id": message.tool_call_id,
    })
}

/// The inverse of [`message_to_json`] (arguments may also be an object).
pub fn message_from_json(value: &Value) -> Option<Message> {
    let role = parse_role(value.get("role")?.as_str()?)?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let tool_calls = match value.get("tool_calls") {
        Some(Value::Array(calls)) => calls
            .iter()
            .map(|call| {
                Some(ToolCall {
                    id: call.get("id")?.as_str()?.to_string(),
                    name: call.get("name")?.as_str()?.to_string(),
                    arguments: match call.get("arguments") {
                        Some(Value::String(text)) => text.clone(),
                        Some(Value::Null) | None => "{}".to_string(),
                        Some(other) => other.to_string(),
                    },
                })
            })
            .collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(Message {
        role,
        content: text("content").unwrap_or_default(),
        tool_calls,
        tool_call_id: text("tool_call_id"),
    })
}

/// A completion as JSON.
pub fn completion_to_json(completion: &Completion) -> Value {
    json!({
        "message": message_to_json(&completion.message),
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
        },
        "finish_reason": completion.finish_reason,
    })
}

/// The inverse of [`completion_to_json`].
pub fn completion_from_json(value: &Value) -> Option<Completion> {
    let tokens = |key: &str| {
        value
            .get("usage")
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32
    };
    Some(Completion {
        message: message_from_json(value.get("message")?)?,
        usage: Usage {
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        },
        finish_reason: value
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop")
            .to_string(),
    })
}

/// A tool result (or error) as JSON.
pub fn tool_outcome_to_json(outcome: &Result<String, ToolError>) -> Value {
    match outcome {
        Ok(text) => json!({ "ok": text }),
        Err(ToolError::Denied(reason)) => json!({ "denied": reason }),
        Err(ToolError::Failed(message)) => json!({ "failed": message }),
    }
}

/// The inverse of [`tool_outcome_to_json`].
pub fn tool_outcome_from_json(value: &Value) -> Option<Result<String, ToolError>> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    if let Some(ok) = text("ok") {
        return Some(Ok(ok));
    }
    if let Some(denied) = text("denied") {
        return Some(Err(ToolError::Denied(denied)));
    }
    text("failed").map(|failed| Err(ToolError::Failed(failed)))
}

/// Identifies a model request: SHA-256 of its messages and tools.
pub fn request_hash(messages: &[Message], tools: &[ToolSpec]) -> String {
    let doc = json!({
        "messages": messages.iter().map(message_to_json).collect::<Vec<_>>(),
        "tools": tools.iter().map(|t| json!([t.name, t.description, t.parameters])).collect::<Vec<_>>(),
    });
    hex::encode(sha2::Sha256::digest(doc.to_string().as_bytes()))
}

/// `text` cut to at most `max` bytes (on a character boundary), with a
/// marker saying how much was left out.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[... {} more bytes not shown]",
        &text[..end],
        text.len() - end
    )
}

/// Writes events and recordings for one attempt of one agent step.
pub struct Recorder {
    pub(crate) store: Arc<dyn AgentStore>,
    pub(crate) run_id: String,
    pub(crate) step_id: String,
    pub(crate) agent_id: String,
    pub(crate) attempt: u32,
    /// The `for_each` item this attempt runs (0 for other steps).
    pub(crate) iteration: u32,
}

impl Recorder {
    /// Append an audit event to the step's journal. A journal that cannot
    /// be written is logged, not fatal to the call.
    pub fn event(&self, kind: &str, data: Value) {
        if let Err(error) = self
            .store
            .append_event(&self.run_id, Some(&self.step_id), kind, &data)
        {
            tracing::warn!("cannot record {kind} event: {error}");
        }
    }

    /// A warning in the step's log.
    pub fn warn(&self, message: &str) {
        self.event("log", json!({ "level": "warn", "message": message }));
    }

    /// Record something for replay.
    pub fn record(&self, kind: &str, key: &str, payload: &Value) {
        if let Err(error) = self.try_record(kind, key, payload) {
            tracing::warn!("cannot record {kind} of step {}: {error}", self.step_id);
            self.warn(&format!(
                "cannot record {kind} for replay: {error}; a crash now would repeat it"
            ));
        }
    }

    /// Append a recording, or say why it could not be written.
    pub fn try_record(
        &self,
        kind: &str,
        key: &str,
        payload: &Value,
    ) -> Result<(), crate::store::StoreError> {
        let new = NewAgentRecord {
            run_id: &self.run_id,
            step_id: &self.step_id,
            agent_id: &self.agent_id,
            attempt: self.attempt,
            kind,
            key,
            payload,
        };
        self.store.append_agent_record(&new).map(|_| ())
    }
}

/// Where the next reply comes from.
pub enum NextReply {
    /// The recording.
    Recorded(Completion),
    /// The model: nothing (more) is recorded.
    Live,
    /// The model: the conversation no longer matches the recording.
    Diverged,
}

/// What an earlier, unfinished run of the step recorded: replayed instead
/// of calling the model or running tools again.
#[derive(Default)]
pub struct Replay {
    /// Recorded replies, oldest first: (request hash, completion).
    completions: VecDeque<(String, Completion)>,
    /// Set once the conversation differs from the recording.
    diverged: bool,
    /// Recorded tool results by call id: (tool, arguments, outcome).
    tool_results: HashMap<String, (String, String, Value)>,
    /// Calls of effectful tools that started but recorded no result.
    tool_started: HashSet<(String, String, String)>,
}

impl Replay {
    /// The recordings of `step_id` made since it last completed.
    pub fn load(store: &dyn AgentStore, run_id: &str, step_id: &str) -> Replay {
        let since = store.last_completed_attempt(run_id, step_id).unwrap_or(0);
        let records = store
            .agent_records(run_id, Some(step_id), None)
            .unwrap_or_default();
        Replay::from_records(records.into_iter().filter(|r| r.attempt > since))
    }

    fn from_records(records: impl Iterator<Item = AgentRecord>) -> Replay {
        let mut replay = Replay::default();
        for record in records {
            match record.kind.as_str() {
                kinds::COMPLETION => {
                    if let Some(completion) = record
                        .payload
                        .get("completion")
                        .and_then(completion_from_json)
                    {
                        replay.completions.push_back((record.key, completion));
                    }
                }
                kinds::TOOL_STARTED | kinds::TOOL_RESULT => {
                    let text = |key: &str| {
                        record
                            .payload
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let (tool, arguments) = (text("tool"), text("arguments"));
                    if record.kind == kinds::TOOL_STARTED {
                        replay
                            .tool_started
                            .insert((record.key.clone(), tool, arguments));
                    } else {
                        let outcome = record.payload.get("outcome").cloned().unwrap_or_default();
                        replay
                            .tool_results
                            .insert(record.key.clone(), (tool, arguments, outcome));
                    }
                }
                _ => {}
            }
        }
        replay
    }

    /// The recorded reply to this request, if the recording still matches.
    /// The first time the conversation differs from the recording, replay
    /// stops for good.
    pub fn next_completion(&mut self, hash: &str) -> NextReply {
        if self.diverged {
            return NextReply::Live;
        }
        match self.completions.pop_front() {
            None => NextReply::Live,
            Some((recorded, completion)) if recorded == hash => NextReply::Recorded(completion),
            Some(_) => {
                self.diverged = true;
                self.completions.clear();
                NextReply::Diverged
            }
        }
    }

    /// The recorded result of this exact call.
    pub fn tool_result(
        &self,
        call_id: &str,
        tool: &str,
        arguments: &str,
    ) -> Option<Result<String, ToolError>> {
        let (t, a, outcome) = self.tool_results.get(call_id)?;
        if t != tool || a != arguments {
            return None;
        }
        tool_outcome_from_json(outcome)
    }

    /// Whether this exact call started in an earlier attempt but recorded
    /// no result (the process died while it ran).
    pub fn started_without_result(&self, call_id: &str, tool: &str, arguments: &str) -> bool {
        self.tool_started
            .contains(&(call_id.to_string(), tool.to_string(), arguments.to_string()))
            && !self.tool_results.contains_key(call_id)
    }

    /// Recorded replies not replayed yet.
    pub fn pending_completions(&self) -> usize {
        self.completions.len()
    }
}

/// A model error as JSON (`{kind, message}`).
pub fn model_error_to_json(error: &ModelError) -> Value {
    match error {
        ModelError::Transient(message) => json!({ "kind": "transient", "message": message }),
        ModelError::Permanent(message) => json!({ "kind": "permanent", "message": message }),
    }
}

/// The conversation of an agent step, from its recordings: every message
/// the model was sent (each once) followed by its last reply.
pub fn transcript_from_records(records: &[AgentRecord]) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut last_reply = None;
    for record in records.iter().filter(|r| r.kind == kinds::COMPLETION) {
        if let Some(Value::Array(new)) = record.payload.get("new_messages") {
            messages.extend(new.iter().cloned());
        }
        last_reply = record
            .payload
            .get("completion")
            .and_then(|c| c.get("message"))
            .cloned();
    }
    messages.extend(last_reply);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "read_file".into(),
                arguments: r#"{"path":"a"}"#.into(),
            }],
            tool_call_id: None,
        }
    }

    #[test]
    fn messages_and_completions_round_trip_through_json() {
        let m = message(Role::Assistant, "hi");
        let back = message_from_json(&message_to_json(&m)).unwrap();
        assert_eq!(back.role, Role::Assistant);
        assert_eq!(back.content, "hi");
        assert_eq!(back.tool_calls[0].arguments, r#"{"path":"a"}"#);
        let c = Completion {
            message: m,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
            },
            finish_reason: "tool_calls".into(),
        };
        let back = completion_from_json(&completion_to_json(&c)).unwrap();
        assert_eq!(back.usage.completion_tokens, 4);
        assert_eq!(back.finish_reason, "tool_calls");
        // Arguments given as an object are accepted too.
        let v = json!({"role": "assistant", "tool_calls": [{"id": "x", "name": "n", "arguments": {"a": 1}}]});
        assert_eq!(
            message_from_json(&v).unwrap().tool_calls[0].arguments,
            r#"{"a":1}"#
        );
    }

    #[test]
    fn outcomes_round_trip() {
        for outcome in [
            Ok("x".to_string()),
            Err(ToolError::Denied("no".into())),
            Err(ToolError::Failed("broke".into())),
        ] {
            let back = tool_outcome_from_json(&tool_outcome_to_json(&outcome)).unwrap();
            assert_eq!(format!("{back:?}"), format!("{outcome:?}"));
        }
    }

    #[test]
    fn replay_stops_at_the_first_divergence() {
        let completion = |text: &str| Completion {
            message: message(Role::Assistant, text),
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            },
            finish_reason: "stop".into(),
        };
        let mut replay = Replay::default();
        replay
            .completions
            .push_back(("h1".into(), completion("one")));
        replay
            .completions
            .push_back(("h2".into(), completion("two")));
        replay
            .completions
            .push_back(("h3".into(), completion("three")));
        assert!(
            matches!(replay.next_completion("h1"), NextReply::Recorded(c) if c.message.content == "one")
        );
        assert!(matches!(
            replay.next_completion("other"),
            NextReply::Diverged
        ));
        assert!(matches!(replay.next_completion("h3"), NextReply::Live));
    }

    #[test]
    fn truncation_marks_what_was_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        let cut = truncate("héllo wörld", 2);
        assert!(cut.starts_with('h') && cut.contains("more bytes not shown"));
    }
}
