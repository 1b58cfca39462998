//! The agent loop, independent of the component bindings (so it runs in
//! native unit tests against a scripted [`Backend`]).
//!
//! ```text
//! messages = [system?] + history + [user prompt]
//! repeat up to max_turns:
//!     reply = model(messages, tools);  messages += reply
//!     no tool calls in reply  -> final answer
//!     else for each call: messages += tool message with
//!          the result | "denied: <reason>" | "error: <message>"
//! ```

use wfhost_sdk::log::Level;
use wfhost_sdk::model::{Completion, Message, ModelError, Role, ToolSpec, Usage};
use wfhost_sdk::tools::ToolError;
use wfhost_sdk::StepError;

/// Longest argument / result excerpt written to the step log.
const LOG_EXCERPT: usize = 160;

/// What the loop talks to: the host's `model`, `tools` and `host`
/// interfaces in the component, a script in tests.
pub trait Backend {
    /// Ask the model for the next message.
    fn complete(
        &mut self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Completion, ModelError>;
    /// The tools the agent may use.
    fn available(&mut self) -> Vec<ToolSpec>;
    /// Invoke one tool (the host checks it first).
    fn invoke(&mut self, call_id: &str, name: &str, arguments: &str) -> Result<String, ToolError>;
    /// A line in the step log.
    fn log(&mut self, level: Level, message: &str);
    /// A progress report (no-op by default).
    fn progress(&mut self, _message: &str) {}
}

/// Inputs of one session.
#[derive(Debug, Clone)]
pub struct Settings {
    /// System prompt; skipped when `history` already starts with one.
    pub system: Option<String>,
    /// Earlier conversation of the same agent (session reuse).
    pub history: Vec<Message>,
    /// The task.
    pub prompt: String,
    /// Most model turns (completions).
    pub max_turns: u32,
    /// Label for log lines, e.g. `agent reviewer`.
    pub label: String,
}

/// A finished session.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Content of the final assistant message.
    pub content: String,
    /// Model turns used.
    pub turns: u32,
    /// The whole transcript, history included.
    pub messages: Vec<Message>,
    /// Tokens used by this session's completions.
    pub usage: Usage,
    /// Tool calls made (all outcomes).
    pub tool_calls: u32,
}

/// The conversation the first completion sees.
pub fn initial_messages(settings: &Settings) -> Vec<Message> {
    let mut messages = Vec::with_capacity(settings.history.len() + 2);
    let history_has_system = settings
        .history
        .first()
        .is_some_and(|m| m.role == Role::System);
    if let Some(system) = &settings.system {
        if !history_has_system && !system.trim().is_empty() {
            messages.push(Message::system(system.clone()));
        }
    }
    messages.extend(settings.history.iter().cloned());
    messages.push(Message::user(settings.prompt.clone()));
    messages
}

/// Run the loop to a final answer.
pub fn run(backend: &mut dyn Backend, settings: &Settings) -> Result<Outcome, StepError> {
    if settings.max_turns == 0 {
        return Err(StepError::permanent(
            "invalid config: `max_turns` must be at least 1",
        ));
    }
    let mut messages = initial_messages(settings);
    let tools = backend.available();
    let label = &settings.label;
    backend.log(
        Level::Info,
        &format!(
            "{label}: {} tool(s) available{}{}; up to {} turn(s){}",
            tools.len(),
            if tools.is_empty() { "" } else { ": " },
            tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            settings.max_turns,
            if settings.history.is_empty() {
                String::new()
            } else {
                format!(
                    "; continuing a conversation of {} message(s)",
                    settings.history.len()
                )
            }
        ),
    );

    let mut usage = Usage::default();
    let mut tool_calls = 0u32;
    for turn in 1..=settings.max_turns {
        backend.progress(&format!("turn {turn}"));
        let completion = backend.complete(&messages, &tools).map_err(|e| {
            backend.log(Level::Error, &format!("{label}: turn {turn}: {e}"));
            StepError::from(e)
        })?;
        usage = usage + completion.usage;
        let mut reply = completion.message;
        // The transcript is a conversation with the model: whatever the
        // provider says, the reply is the assistant's.
        reply.role = Role::Assistant;
        reply.tool_call_id = None;
        for (i, call) in reply.tool_calls.iter_mut().enumerate() {
            if call.id.trim().is_empty() {
                call.id = format!("turn{turn}-call{}", i + 1);
            }
        }
        let tokens = format!(
            "{}+{} tokens",
            completion.usage.prompt_tokens, completion.usage.completion_tokens
        );

        if reply.tool_calls.is_empty() {
            backend.log(
                Level::Info,
                &format!(
                    "{label}: turn {turn}: final answer, {} chars ({tokens}, finish: {})",
                    reply.content.chars().count(),
                    completion.finish_reason
                ),
            );
            if completion.finish_reason == "length" {
                backend.log(
                    Level::Warn,
                    &format!(
                        "{label}: the model stopped at its length limit; the answer may be cut off"
                    ),
                );
            }
            let content = reply.content.clone();
            messages.push(reply);
            return Ok(Outcome {
                content,
                turns: turn,
                messages,
                usage,
                tool_calls,
            });
        }

        let calls = reply.tool_calls.clone();
        backend.log(
            Level::Info,
            &format!(
                "{label}: turn {turn}: {} tool call(s): {} ({tokens})",
                calls.len(),
                calls
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        messages.push(reply);
        for call in calls {
            tool_calls += 1;
            let result = backend.invoke(&call.id, &call.name, &call.arguments);
            let (level, summary, content) = match result {
                Ok(text) => (Level::Info, format!("ok, {} bytes", text.len()), text),
                Err(e) => {
                    let level = match e {
                        ToolError::Denied(_) => Level::Warn,
                        ToolError::Failed(_) => Level::Info,
                    };
                    let text = e.to_tool_result();
                    (level, excerpt(&text), text)
                }
            };
            backend.log(
                level,
                &format!(
                    "{label}:   {}({}) -> {summary}",
                    call.name,
                    excerpt(&call.arguments)
                ),
            );
            messages.push(Message::tool(call.id, content));
        }
    }
    let message = format!("agent did not finish within {} turns", settings.max_turns);
    backend.log(
        Level::Error,
        &format!("{label}: {message} (its last reply still called tools; raise `max_turns`)"),
    );
    Err(StepError::permanent(message))
}

/// At most [`LOG_EXCERPT`] characters of `text` on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= LOG_EXCERPT {
        one_line
    } else {
        let cut: String = one_line.chars().take(LOG_EXCERPT).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use wfhost_sdk::model::ToolCall;

    /// A backend that replays scripted completions and tool results and
    /// records what it saw.
    #[derive(Default)]
    pub struct Scripted {
        pub replies: VecDeque<Result<Completion, ModelError>>,
        pub results: VecDeque<Result<String, ToolError>>,
        pub tools: Vec<ToolSpec>,
        pub seen: Vec<Vec<Message>>,
        pub invoked: Vec<(String, String, String)>,
        pub logs: Vec<(Level, String)>,
    }

    impl Backend for Scripted {
        fn complete(
            &mut self,
            messages: &[Message],
            _tools: &[ToolSpec],
        ) -> Result<Completion, ModelError> {
            self.seen.push(messages.to_vec());
            self.replies
                .pop_front()
                .unwrap_or_else(|| Err(ModelError::Permanent("script exhausted".into())))
        }
        fn available(&mut self) -> Vec<ToolSpec> {
            self.tools.clone()
        }
        fn invoke(&mut self, id: &str, name: &str, args: &str) -> Result<String, ToolError> {
            self.invoked.push((id.into(), name.into(), args.into()));
            self.results
                .pop_front()
                .unwrap_or_else(|| Err(ToolError::Failed("no scripted result".into())))
        }
        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_string()));
        }
    }

    pub fn text(content: &str) -> Result<Completion, ModelError> {
        Ok(Completion {
            message: Message::assistant(content),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
            },
            finish_reason: "stop".into(),
        })
    }

    pub fn calls(calls: &[(&str, &str, &str)]) -> Result<Completion, ModelError> {
        Ok(Completion {
            message: Message {
                tool_calls: calls
                    .iter()
                    .map(|(id, name, args)| ToolCall {
                        id: id.to_string(),
                        name: name.to_string(),
                        arguments: args.to_string(),
                    })
                    .collect(),
                ..Message::assistant("")
            },
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 1,
            },
            finish_reason: "tool_calls".into(),
        })
    }

    pub fn settings(prompt: &str) -> Settings {
        Settings {
            system: Some("You review code.".into()),
            history: Vec::new(),
            prompt: prompt.into(),
            max_turns: 20,
            label: "agent test".into(),
        }
    }

    #[test]
    fn final_answer_without_tools() {
        let mut b = Scripted::default();
        b.replies.push_back(text("hello"));
        let out = run(&mut b, &settings("say hello")).unwrap();
        assert_eq!(out.content, "hello");
        assert_eq!(out.turns, 1);
        assert_eq!(
            out.messages,
            vec![
                Message::system("You review code."),
                Message::user("say hello"),
                Message::assistant("hello"),
            ]
        );
        assert_eq!(out.usage.prompt_tokens, 10);
        assert!(b.invoked.is_empty());
    }

    #[test]
    fn tool_results_denials_and_failures_go_back_to_the_model() {
        let mut b = Scripted::default();
        b.replies.push_back(calls(&[
            ("c1", "read_file", r#"{"path":"a.txt"}"#),
            ("c2", "write_file", r#"{"path":"src/x","content":"y"}"#),
            ("c3", "exec", r#"{"command":"false"}"#),
        ]));
        b.replies.push_back(text("done"));
        b.results.push_back(Ok("file a".into()));
        b.results
            .push_back(Err(ToolError::Denied("rule `write(docs/**)` only".into())));
        b.results
            .push_back(Err(ToolError::Failed("exit code 1".into())));
        let out = run(&mut b, &settings("go")).unwrap();
        assert_eq!(out.turns, 2);
        assert_eq!(out.tool_calls, 3);
        assert_eq!(
            b.invoked,
            vec![
                (
                    "c1".into(),
                    "read_file".into(),
                    r#"{"path":"a.txt"}"#.into()
                ),
                (
                    "c2".into(),
                    "write_file".into(),
                    r#"{"path":"src/x","content":"y"}"#.into()
                ),
                ("c3".into(), "exec".into(), r#"{"command":"false"}"#.into()),
            ]
        );
        // The second completion saw the three results, in order.
        let second = &b.seen[1];
        let tail: Vec<_> = second[second.len() - 3..].to_vec();
        assert_eq!(
            tail,
            vec![
                Message::tool("c1", "file a"),
                Message::tool("c2", "denied: rule `write(docs/**)` only"),
                Message::tool("c3", "error: exit code 1"),
            ]
        );
        assert_eq!(out.messages.len(), 2 + 1 + 3 + 1);
        assert_eq!(out.messages.last().unwrap(), &Message::assistant("done"));
        assert!(b
            .logs
            .iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("denied: rule")));
    }

    #[test]
    fn runs_out_of_turns() {
        let mut b = Scripted::default();
        for i in 0..3 {
            b.replies
                .push_back(calls(&[(&format!("c{i}"), "list_dir", "{}")]));
            b.results.push_back(Ok("[]".into()));
        }
        let s = Settings {
            max_turns: 3,
            ..settings("loop")
        };
        let err = run(&mut b, &s).unwrap_err();
        assert_eq!(
            err,
            StepError::permanent("agent did not finish within 3 turns")
        );
        assert_eq!(b.seen.len(), 3);
    }

    #[test]
    fn model_errors_keep_their_kind() {
        let mut b = Scripted::default();
        b.replies
            .push_back(Err(ModelError::Transient("429 too many requests".into())));
        let err = run(&mut b, &settings("x")).unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.message().contains("429"));

        let mut b = Scripted::default();
        b.replies
            .push_back(Err(ModelError::Permanent("unknown model".into())));
        let err = run(&mut b, &settings("x")).unwrap_err();
        assert!(!err.is_transient());
    }

    #[test]
    fn history_is_continued_without_a_second_system_message() {
        let history = vec![
            Message::system("You review code."),
            Message::user("first task"),
            Message::assistant("first answer"),
        ];
        let mut b = Scripted::default();
        b.replies.push_back(text("second answer"));
        let s = Settings {
            history: history.clone(),
            ..settings("second task")
        };
        let out = run(&mut b, &s).unwrap();
        let mut expected = history;
        expected.push(Message::user("second task"));
        assert_eq!(b.seen[0], expected);
        expected.push(Message::assistant("second answer"));
        assert_eq!(out.messages, expected);
    }

    #[test]
    fn history_without_system_gets_one() {
        let s = Settings {
            history: vec![Message::user("a"), Message::assistant("b")],
            ..settings("c")
        };
        let m = initial_messages(&s);
        assert_eq!(m[0], Message::system("You review code."));
        assert_eq!(m.len(), 4);
        let s = Settings { system: None, ..s };
        assert_eq!(initial_messages(&s)[0], Message::user("a"));
    }

    #[test]
    fn missing_call_ids_are_filled_in() {
        let mut b = Scripted::default();
        b.replies.push_back(calls(&[("", "read_file", "{}")]));
        b.replies.push_back(text("ok"));
        b.results.push_back(Ok("x".into()));
        let out = run(&mut b, &settings("go")).unwrap();
        assert_eq!(b.invoked[0].0, "turn1-call1");
        assert_eq!(out.messages[2].tool_calls[0].id, "turn1-call1");
        assert_eq!(out.messages[3].tool_call_id.as_deref(), Some("turn1-call1"));
    }

    #[test]
    fn zero_turns_is_a_config_error() {
        let mut b = Scripted::default();
        let s = Settings {
            max_turns: 0,
            ..settings("x")
        };
        assert!(run(&mut b, &s).unwrap_err().message().contains("max_turns"));
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt("a\nb"), "a b");
        let long = "x".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), LOG_EXCERPT + 1);
    }
}
