//! Replies read from a file: deterministic completions for tests, demos and
//! offline runs.
//!
//! The file (YAML or JSON, relative to the workflow file) is a list of
//! replies, consumed one per model call, in order:
//!
//! ```yaml
//! - content: "Let me look at the code."
//!   tool_calls:
//!     - name: read_file
//!       arguments: {path: src/lib.rs}     # an object, or a JSON string
//! - tool_calls:
//!     - {name: exec, arguments: {command: "cargo test"}}
//! - error: "transient: rate limited"      # or "permanent: ...", or
//!                                         # {transient: "..."}
//! - content: "All good."
//!   usage: {prompt_tokens: 120, completion_tokens: 8}   # optional
//!   finish_reason: stop                                 # optional
//! ```
//!
//! A plain list (or `{replies: [...]}`) is shared by every step that uses
//! the agent: the run consumes it in order across those steps. With
//! `{steps: {review: [...], fix: [...]}}` each step reads its own list.
//! Tool call ids are generated from the reply's position (`call_3_1` is the
//! first call of the third reply) unless the entry gives an `id`. Usage,
//! when not given, is estimated as a quarter of the characters.
//!
//! The position survives retries and crashes: it is the number of replies
//! (and errors) already recorded for the agent in the run (or for the step,
//! with per-step lists), so a resumed step continues where it stopped.
//! Running out of replies is a permanent error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::Value;

use super::ModelProvider;
use crate::step::bindings::model::{
    Completion, Message, ModelError, Role, ToolCall, ToolSpec, Usage,
};
use crate::step::executor::BoxFuture;

/// A parsed script file.
#[derive(Debug, Clone)]
pub struct Script {
    path: PathBuf,
    shared: Vec<Reply>,
    per_step: BTreeMap<String, Vec<Reply>>,
}

/// Whose recordings count toward a script's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The list is shared by the agent's steps.
    Agent,
    /// The step has its own list.
    Step,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileObject {
    #[serde(default)]
    replies: Vec<Reply>,
    #[serde(default)]
    steps: BTreeMap<String, Vec<Reply>>,
}

/// One scripted reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ScriptedCall>,
    #[serde(default)]
    error: Option<ScriptedError>,
    #[serde(default)]
    usage: Option<ScriptedUsage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ScriptedError {
    Text(String),
    Kind(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

impl ScriptedError {
    fn to_model_error(&self) -> Result<ModelError, String> {
        let (kind, message) = match self {
            ScriptedError::Text(text) => {
                let text = text.trim();
                let (kind, rest) = text
                    .split_once(|c: char| c == ':' || c.is_whitespace())
                    .unwrap_or((text, ""));
                let rest = rest.trim_start_matches(':').trim();
                let rest = rest
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or(rest);
                (kind.to_string(), rest.to_string())
            }
            ScriptedError::Kind(map) => match map.iter().next() {
                Some((kind, message)) if map.len() == 1 => (kind.clone(), message.clone()),
                _ => return Err("`error` must have one key: transient or permanent".into()),
            },
        };
        match kind.as_str() {
            "transient" => Ok(ModelError::Transient(message)),
            "permanent" => Ok(ModelError::Permanent(message)),
            other => Err(format!(
                "`error` kind '{other}' is neither transient nor permanent"
            )),
        }
    }
}

impl Script {
    /// Read and check a script file.
    pub fn load(path: &Path) -> Result<Script, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read model script '{}': {e}", path.display()))?;
        Script::parse(&text, path)
    }

    /// Parse a script's text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Script, String> {
        let bad = |e: serde_yaml::Error| format!("model script '{}': {e}", path.display());
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(bad)?;
        let (shared, per_step) = if value.is_sequence() {
            (serde_yaml::from_value(value).map_err(bad)?, BTreeMap::new())
        } else {
            let object: FileObject = serde_yaml::from_value(value).map_err(bad)?;
            (object.replies, object.steps)
        };
        let script = Script {
            path: path.to_path_buf(),
            shared,
            per_step,
        };
        let all = script
            .shared
            .iter()
            .enumerate()
            .map(|(i, r)| (String::new(), i, r))
            .chain(script.per_step.iter().flat_map(|(s, list)| {
                list.iter().enumerate().map(move |(i, r)| (s.clone(), i, r))
            }));
        for (step, index, reply) in all {
            let place = if step.is_empty() {
                format!("reply {}", index + 1)
            } else {
                format!("steps.{step} reply {}", index + 1)
            };
            if let Some(error) = &reply.error {
                error
                    .to_model_error()
                    .map_err(|e| format!("model script '{}', {place}: {e}", path.display()))?;
            } else if reply.content.is_none() && reply.tool_calls.is_empty() {
                return Err(format!(
                    "model script '{}', {place}: give `content`, `tool_calls` or `error`",
                    path.display()
                ));
            }
        }
        Ok(script)
    }

    /// Whether `step_id` reads its own list or the shared one.
    pub fn for_step(&self, step_id: &str) -> Scope {
        if self.per_step.contains_key(step_id) {
            Scope::Step
        } else {
            Scope::Agent
        }
    }

    fn replies(&self, step_id: &str) -> &[Reply] {
        self.per_step
            .get(step_id)
            .map(Vec::as_slice)
            .unwrap_or(&self.shared)
    }
}

/// A provider answering from a script.
pub struct Scripted {
    script: Script,
    step_id: String,
    position: AtomicUsize,
}

impl Scripted {
    /// Read `script` for `step_id`, starting at reply `start` (0-based).
    pub fn new(script: Script, step_id: &str, start: usize) -> Scripted {
        Scripted {
            script,
            step_id: step_id.to_string(),
            position: AtomicUsize::new(start),
        }
    }

    fn reply(&self, messages: &[Message]) -> Result<Completion, ModelError> {
        let position = self.position.fetch_add(1, Ordering::SeqCst);
        let replies = self.script.replies(&self.step_id);
        let Some(reply) = replies.get(position) else {
            return Err(ModelError::Permanent(format!(
                "model script '{}' has no reply left: all {} are used (step '{}' asked for reply {})",
                self.script.path.display(),
                replies.len(),
                self.step_id,
                position + 1
            )));
        };
        if let Some(error) = &reply.error {
            // Checked when the script was loaded.
            return Err(error.to_model_error().unwrap_or_else(ModelError::Permanent));
        }
        let tool_calls: Vec<ToolCall> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| ToolCall {
                id: call
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("call_{}_{}", position + 1, index + 1)),
                name: call.name.clone(),
                arguments: match &call.arguments {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                },
            })
            .collect();
        let content = reply.content.clone().unwrap_or_default();
        let usage = match &reply.usage {
            Some(usage) => Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            },
            None => {
                let prompt: usize = messages
                    .iter()
                    .map(|m| {
                        m.content.len()
                            + m.tool_calls
                                .iter()
                                .map(|c| c.name.len() + c.arguments.len())
                                .sum::<usize>()
                    })
                    .sum();
                let reply_len: usize = content.len()
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>();
                Usage {
                    prompt_tokens: (prompt / 4) as u32,
                    completion_tokens: (reply_len / 4) as u32,
                }
            }
        };
        let finish_reason = reply.finish_reason.clone().unwrap_or_else(|| {
            if tool_calls.is_empty() {
                "stop".into()
            } else {
                "tool_calls".into()
            }
        });
        Ok(Completion {
            message: Message {
                role: Role::Assistant,
                content,
                tool_calls,
                tool_call_id: None,
            },
            usage,
            finish_reason,
        })
    }
}

impl ModelProvider for Scripted {
    fn complete(
        &self,
        messages: Vec<Message>,
        _tools: Vec<ToolSpec>,
    ) -> BoxFuture<Result<Completion, ModelError>> {
        let result = self.reply(&messages);
        Box::pin(async move { result })
    }

    fn describe(&self) -> String {
        format!("scripted {}", self.script.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"
- content: "Let me look."
  tool_calls:
    - name: read_file
      arguments: {path: src/a.rs}
    - {id: mine, name: list_dir, arguments: '{"path": "."}'}
- error: transient "rate limited"
- content: done
  usage: {prompt_tokens: 5, completion_tokens: 2}
"#;

    fn complete(provider: &Scripted) -> Result<Completion, ModelError> {
        provider.reply(&[Message {
            role: Role::User,
            content: "review".into(),
            tool_calls: vec![],
            tool_call_id: None,
        }])
    }

    #[test]
    fn replies_come_in_order_with_deterministic_ids() {
        let script = Script::parse(SCRIPT, Path::new("s.yaml")).unwrap();
        assert_eq!(script.for_step("any"), Scope::Agent);
        let provider = Scripted::new(script, "review", 0);
        let first = complete(&provider).unwrap();
        assert_eq!(first.message.content, "Let me look.");
        assert_eq!(first.finish_reason, "tool_calls");
        let calls = &first.message.tool_calls;
        assert_eq!(calls[0].id, "call_1_1");
        assert_eq!(calls[0].arguments, r#"{"path":"src/a.rs"}"#);
        assert_eq!(calls[1].id, "mine");
        assert_eq!(calls[1].arguments, r#"{"path": "."}"#);
        assert!(first.usage.prompt_tokens > 0);
        assert!(
            matches!(complete(&provider), Err(ModelError::Transient(m)) if m == "rate limited")
        );
        let last = complete(&provider).unwrap();
        assert_eq!(last.message.content, "done");
        assert_eq!(last.usage.prompt_tokens, 5);
        let out = complete(&provider).unwrap_err();
        assert!(
            matches!(&out, ModelError::Permanent(m) if m.contains("no reply left") && m.contains("all 3")),
            "{out:?}"
        );
    }

    #[test]
    fn a_later_start_continues_the_script() {
        let script = Script::parse(SCRIPT, Path::new("s.yaml")).unwrap();
        let provider = Scripted::new(script, "review", 2);
        assert_eq!(complete(&provider).unwrap().message.content, "done");
    }

    #[test]
    fn per_step_lists_and_error_spellings() {
        let text = r#"
steps:
  fix:
    - error: {permanent: "no such model"}
    - content: fixed
replies:
  - error: "permanent: nope"
"#;
        let script = Script::parse(text, Path::new("s.yaml")).unwrap();
        assert_eq!(script.for_step("fix"), Scope::Step);
        assert_eq!(script.for_step("other"), Scope::Agent);
        let fix = Scripted::new(script.clone(), "fix", 0);
        assert!(matches!(complete(&fix), Err(ModelError::Permanent(m)) if m == "no such model"));
        assert_eq!(complete(&fix).unwrap().message.content, "fixed");
        let other = Scripted::new(script, "other", 0);
        assert!(matches!(complete(&other), Err(ModelError::Permanent(m)) if m == "nope"));
    }

    #[test]
    fn bad_scripts_are_explained() {
        let error = Script::parse("- {}\n", Path::new("s.yaml")).unwrap_err();
        assert!(
            error.contains("reply 1") && error.contains("content"),
            "{error}"
        );
        let error = Script::parse("- error: sometimes x\n", Path::new("s.yaml")).unwrap_err();
        assert!(error.contains("neither transient nor permanent"), "{error}");
        let error = Script::parse("- contnt: x\n", Path::new("s.yaml")).unwrap_err();
        assert!(error.contains("s.yaml"), "{error}");
        assert!(Script::load(Path::new("/no/such/script.yaml"))
            .unwrap_err()
            .contains("cannot read model script"));
    }
}
