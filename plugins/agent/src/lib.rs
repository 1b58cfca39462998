//! The built-in `agent` step: an AI agent's loop, model → tool calls →
//! results → model, through the host's `model` and `tools` interfaces.
//!
//! The host renders the step's config from the workflow (`type: agent`,
//! its agent, `prompt`, `session`, `max_turns`, `output`, `output_schema`):
//!
//! ```json
//! {
//!   "prompt": "Review src/ and write docs/review.md",   // required
//!   "system": "You are a careful reviewer.",             // or null
//!   "max_turns": 20,                                      // default 20 (null: default)
//!   "output": "text",                                     // "text" (default) | "json"
//!   "output_schema": { "type": "object" },                // or null; json mode only
//!   "history": [ { "role": "user", "content": "...",      // earlier conversation
//!                  "tool_calls": [{"id", "name", "arguments"}],
//!                  "tool_call_id": null } ],              // (session: reuse); may be []
//!   "agent": { "id": "reviewer", "name": "Reviewer", "role": "code reviewer" }
//! }
//! ```
//!
//! Conversation: `[system?] + history + [user prompt]` (the system message is
//! not repeated when `history` already starts with one). Each turn asks the
//! model with the agent's tools (`tools::available()`); every tool call is
//! invoked through the host (which checks it against the agent's tool list,
//! the grants and the policies) and its result goes back as a `tool`
//! message: the result text, `denied: <reason>` or `error: <message>`. A
//! reply without tool calls is the final answer.
//!
//! Output:
//!
//! - `output: text` → `{ "text": <final content>, "turns": n, "messages": [...], "usage": {...} }`
//! - `output: json` → `{ "result": <parsed final content>, "turns": n, "messages": [...], "usage": {...} }`
//!
//! `messages` is the whole transcript (history included) in the history
//! format above; `usage` sums `prompt_tokens` and `completion_tokens` of this
//! step's completions. In json mode the final content must be a JSON
//! document (or contain one in a ```` ```json ```` fenced block) matching
//! `output_schema` when given (see [`jsonout`] for the supported keywords).
//!
//! Errors: transient model errors are transient (the engine may retry);
//! everything else is permanent: a permanent model error, a bad config,
//! an answer that is not JSON or does not match the schema, and running out
//! of turns (`agent did not finish within N turns`).

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use wfhost_sdk::log::{self, Level};
use wfhost_sdk::model::{self, Completion, Message, ModelError, ToolSpec};
use wfhost_sdk::tools::{self, ToolError};
use wfhost_sdk::{Info, Plugin, Request, StepError};

pub mod jsonout;
pub mod session;

use session::{Backend, Settings};

/// Default for `max_turns`.
pub const DEFAULT_MAX_TURNS: u32 = 20;

/// The step's config, as the host renders it.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The task (user message).
    pub prompt: String,
    /// The agent's system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Most model turns.
    #[serde(default = "default_max_turns", deserialize_with = "null_max_turns")]
    pub max_turns: u32,
    /// `text` or `json`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub output: OutputMode,
    /// JSON Schema of the result (json mode).
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Earlier conversation (session reuse).
    #[serde(default, deserialize_with = "null_as_default")]
    pub history: Vec<Message>,
    /// Who the agent is (for log lines).
    #[serde(default)]
    pub agent: Option<AgentInfo>,
}

/// What the step returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// The final message's text.
    #[default]
    Text,
    /// The final message parsed as JSON.
    Json,
}

/// The agent's identity, from the workflow's `agents:`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentInfo {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Role, for people.
    #[serde(default)]
    pub role: Option<String>,
}

fn default_max_turns() -> u32 {
    DEFAULT_MAX_TURNS
}

fn null_max_turns<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(DEFAULT_MAX_TURNS))
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Config {
    /// `agent <id>` for log lines.
    fn label(&self) -> String {
        match &self.agent {
            Some(a) if !a.id.is_empty() => match &a.name {
                Some(name) if !name.is_empty() && name != &a.id => {
                    format!("agent {} ({name})", a.id)
                }
                _ => format!("agent {}", a.id),
            },
            _ => "agent".to_string(),
        }
    }
}

/// Run the whole step against `backend`: the loop, then the output.
pub fn execute(backend: &mut dyn Backend, config: &Config) -> Result<Value, StepError> {
    if config.prompt.trim().is_empty() {
        return Err(StepError::permanent(
            "invalid config: the agent step's `prompt` is empty",
        ));
    }
    if config.output == OutputMode::Text && config.output_schema.is_some() {
        backend.log(
            Level::Warn,
            "output_schema is ignored with `output: text` (set `output: json`)",
        );
    }
    let settings = Settings {
        system: config.system.clone(),
        history: config.history.clone(),
        prompt: config.prompt.clone(),
        max_turns: config.max_turns,
        label: config.label(),
    };
    let outcome = session::run(backend, &settings)?;
    let messages = serde_json::to_value(&outcome.messages)?;
    let usage = serde_json::to_value(outcome.usage)?;
    match config.output {
        OutputMode::Text => Ok(json!({
            "text": outcome.content,
            "turns": outcome.turns,
            "messages": messages,
            "usage": usage,
        })),
        OutputMode::Json => {
            let result = jsonout::extract(&outcome.content).map_err(StepError::Permanent)?;
            if let Some(schema) = &config.output_schema {
                jsonout::validate(&result, schema).map_err(StepError::Permanent)?;
            }
            Ok(json!({
                "result": result,
                "turns": outcome.turns,
                "messages": messages,
                "usage": usage,
            }))
        }
    }
}

/// The host's interfaces.
struct HostBackend;

impl Backend for HostBackend {
    fn complete(
        &mut self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Completion, ModelError> {
        model::complete(messages, tools)
    }

    fn available(&mut self) -> Vec<ToolSpec> {
        tools::available()
    }

    fn invoke(&mut self, call_id: &str, name: &str, arguments: &str) -> Result<String, ToolError> {
        tools::invoke(call_id, name, arguments)
    }

    fn log(&mut self, level: Level, message: &str) {
        log::log(level, message);
    }

    fn progress(&mut self, message: &str) {
        wfhost_sdk::progress(message, None);
    }
}

struct Agent;

impl Plugin for Agent {
    fn describe() -> Info {
        Info::new(
            "agent",
            env!("CARGO_PKG_VERSION"),
            "Runs an AI agent: model turns and policy-checked tool calls until a final answer \
             (text, or JSON checked against output_schema).",
        )
        .schema(json!({
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": { "type": "string", "description": "The task." },
                "system": { "type": ["string", "null"], "description": "System prompt." },
                "max_turns": { "type": ["integer", "null"], "minimum": 1, "default": DEFAULT_MAX_TURNS },
                "output": { "enum": ["text", "json", null], "default": "text" },
                "output_schema": { "type": ["object", "boolean", "null"] },
                "history": {
                    "type": ["array", "null"],
                    "description": "Earlier conversation (session reuse).",
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "role": { "enum": ["system", "user", "assistant", "tool"] },
                            "content": { "type": ["string", "null"] },
                            "tool_calls": { "type": ["array", "null"] },
                            "tool_call_id": { "type": ["string", "null"] }
                        }
                    }
                },
                "agent": {
                    "type": ["object", "null"],
                    "properties": {
                        "id": { "type": "string" },
                        "name": { "type": ["string", "null"] },
                        "role": { "type": ["string", "null"] }
                    }
                }
            }
        }))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        let config: Config = req.parse_config()?;
        execute(&mut HostBackend, &config)
    }
}

wfhost_sdk::export_plugin!(Agent);

#[cfg(test)]
mod tests {
    use super::*;
    use session::tests::{calls, text, Scripted};

    fn config(value: Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn config_defaults_and_nulls() {
        let c = config(json!({"prompt": "p"}));
        assert_eq!(c.max_turns, 20);
        assert_eq!(c.output, OutputMode::Text);
        assert!(c.history.is_empty());
        let c = config(json!({
            "prompt": "p", "system": null, "max_turns": null, "output": null,
            "output_schema": null, "history": null, "agent": {"id": "rev", "name": "Reviewer", "role": null}
        }));
        assert_eq!(c.max_turns, 20);
        assert_eq!(c.output, OutputMode::Text);
        assert_eq!(c.label(), "agent rev (Reviewer)");
        assert!(
            serde_json::from_value::<Config>(json!({"prompt": "p", "output": "yaml"})).is_err()
        );
        assert!(serde_json::from_value::<Config>(json!({"system": "s"})).is_err());
    }

    #[test]
    fn text_output() {
        let mut b = Scripted::default();
        b.replies
            .push_back(calls(&[("c1", "read_file", r#"{"path":"a"}"#)]));
        b.replies.push_back(text("All good."));
        b.results.push_back(Ok("contents".into()));
        let out = execute(
            &mut b,
            &config(json!({
                "prompt": "review",
                "system": "sys",
                "history": [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
            })),
        )
        .unwrap();
        assert_eq!(out["text"], "All good.");
        assert_eq!(out["turns"], 2);
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 3})
        );
        let messages = out["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "assistant",
                "user",
                "assistant",
                "tool",
                "assistant"
            ]
        );
        assert_eq!(
            messages[4]["tool_calls"],
            json!([{"id": "c1", "name": "read_file", "arguments": "{\"path\":\"a\"}"}])
        );
        assert_eq!(messages[5]["tool_call_id"], "c1");
        assert_eq!(messages[5]["content"], "contents");
        // The transcript is valid history for a later step.
        let again: Vec<Message> = serde_json::from_value(out["messages"].clone()).unwrap();
        assert_eq!(again.len(), 7);
    }

    #[test]
    fn json_output_with_schema() {
        let schema = json!({"type": "object", "required": ["verdict"],
                            "properties": {"verdict": {"enum": ["pass", "fail"]}}});
        let mut b = Scripted::default();
        b.replies
            .push_back(text("```json\n{\"verdict\": \"pass\", \"notes\": []}\n```"));
        let out = execute(
            &mut b,
            &config(json!({"prompt": "judge", "output": "json", "output_schema": schema})),
        )
        .unwrap();
        assert_eq!(out["result"], json!({"verdict": "pass", "notes": []}));
        assert_eq!(out["turns"], 1);
        assert!(out.get("text").is_none());

        let mut b = Scripted::default();
        b.replies.push_back(text("{\"verdict\": \"maybe\"}"));
        let err = execute(
            &mut b,
            &config(json!({"prompt": "judge", "output": "json", "output_schema": schema})),
        )
        .unwrap_err();
        assert!(!err.is_transient());
        assert!(
            err.message().contains("$.verdict: expected one of"),
            "{err}"
        );

        let mut b = Scripted::default();
        b.replies.push_back(text("I think it passes."));
        let err = execute(
            &mut b,
            &config(json!({"prompt": "judge", "output": "json"})),
        )
        .unwrap_err();
        assert!(err.message().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn empty_prompt_is_rejected() {
        let mut b = Scripted::default();
        let err = execute(&mut b, &config(json!({"prompt": "  "}))).unwrap_err();
        assert!(err.message().contains("prompt"));
        assert!(b.seen.is_empty());
    }
}
