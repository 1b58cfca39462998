//! Built-in components embedded in the binary: the table lives in
//! [`crate::step::builtin`] (the engine names components by it); this module
//! checks that the embedded binaries are what the runtime expects.

pub use crate::step::builtin::*;

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::Component;
    use wasmtime::{Config, Engine};

    #[test]
    fn lookup_by_name() {
        assert_eq!(
            names(),
            vec!["agent", "echo", "script", "sleep", "wordcount"]
        );
        assert_eq!(builtin("script").map(|b| b.name), Some("script"));
        assert!(builtin("nope").is_none());
        assert_eq!(policy_names(), vec!["example-policy", "rules-policy"]);
        assert_eq!(policy("rules-policy").map(|b| b.name), Some("rules-policy"));
        // `builtin` finds either kind; `names` and `policy` keep them apart.
        assert_eq!(
            builtin("rules-policy").map(|b| b.name),
            Some("rules-policy")
        );
        assert!(!names().contains(&"rules-policy"));
        assert!(policy("agent").is_none());
        let mut all: Vec<&str> = names();
        all.extend(policy_names());
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "names are unique across both lists");
    }

    /// Every built-in is a valid component exporting `describe` and `run` and
    /// importing the wfhost interfaces it needs (plus WASI).
    #[test]
    fn builtins_are_step_components() {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).expect("engine");
        for b in BUILTINS {
            assert!(!b.wasm.is_empty(), "{} is empty", b.name);
            let component = Component::new(&engine, b.wasm)
                .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", b.name));
            let ty = component.component_type();
            let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
            for name in ["describe", "run"] {
                assert!(
                    exports.iter().any(|e| e == name),
                    "{}: exports {exports:?}",
                    b.name
                );
            }
            assert!(
                matches!(
                    ty.get_export(&engine, "run").map(|e| e.ty),
                    Some(ComponentItem::ComponentFunc(_))
                ),
                "{}: `run` is not a function",
                b.name
            );
            let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
            assert!(
                imports.iter().any(|i| i == "wfhost:plugin/host@0.1.2"),
                "{}: imports {imports:?}",
                b.name
            );
            if b.name == "script" {
                assert!(imports.iter().any(|i| i == "wfhost:plugin/process@0.1.2"));
            }
            if b.name == "agent" {
                for needed in ["wfhost:plugin/model@0.1.2", "wfhost:plugin/tools@0.1.2"] {
                    assert!(
                        imports.iter().any(|i| i == needed),
                        "agent: imports {imports:?}"
                    );
                }
            }
        }
    }

    /// Every built-in policy is a valid component exporting `decide` and
    /// importing no wfhost service: WASI and the types-only `policy-types`.
    #[test]
    fn policies_are_tool_policy_components() {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).expect("engine");
        for p in POLICIES {
            let component = Component::new(&engine, p.wasm)
                .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", p.name));
            let ty = component.component_type();
            assert!(
                matches!(
                    ty.get_export(&engine, "decide").map(|e| e.ty),
                    Some(ComponentItem::ComponentFunc(_))
                ),
                "{}: no `decide` function",
                p.name
            );
            assert!(ty.get_export(&engine, "run").is_none(), "{}", p.name);
            let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
            assert!(
                imports
                    .iter()
                    .all(|i| i.starts_with("wasi:") || i == "wfhost:plugin/policy-types@0.1.2"),
                "{}: imports {imports:?}",
                p.name
            );
        }
    }

    /// The `agent` component, run through the real runtime against a
    /// scripted session: tool results and denials go back to the model,
    /// and the output carries the transcript.
    #[test]
    fn agent_component_runs_a_scripted_session() {
        use crate::step::bindings::model::{
            Completion, Message, ModelError, Role, ToolCall, ToolSpec, Usage,
        };
        use crate::step::bindings::tools::ToolError;
        use crate::step::executor::{BoxFuture, LogLevel, StepInvocation, StepObserver};
        use crate::step::session::{AgentHandle, AgentSession};
        use serde_json::json;
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        #[derive(Default)]
        struct Session {
            seen: Mutex<Vec<Vec<Message>>>,
            calls: Mutex<Vec<(String, String, String)>>,
        }

        impl AgentSession for Session {
            fn complete(
                &self,
                messages: Vec<Message>,
                _tools: Vec<ToolSpec>,
            ) -> BoxFuture<Result<Completion, ModelError>> {
                let turn = {
                    let mut seen = self.seen.lock().unwrap();
                    seen.push(messages);
                    seen.len()
                };
                let call = |id: &str, name: &str, arguments: &str| ToolCall {
                    id: id.into(),
                    name: name.into(),
                    arguments: arguments.into(),
                };
                let (content, tool_calls) = match turn {
                    1 => (
                        String::new(),
                        vec![
                            call("c1", "read_file", r#"{"path":"a.txt"}"#),
                            call("c2", "write_file", r#"{"path":"src/x","content":""}"#),
                        ],
                    ),
                    _ => ("```json\n{\"verdict\": \"pass\"}\n```".to_string(), vec![]),
                };
                Box::pin(async move {
                    Ok(Completion {
                        message: Message {
                            role: Role::Assistant,
                            content,
                            tool_calls,
                            tool_call_id: None,
                        },
                        usage: Usage {
                            prompt_tokens: 7,
                            completion_tokens: 3,
                        },
                        finish_reason: "stop".into(),
                    })
                })
            }

            fn available(&self) -> Vec<ToolSpec> {
                vec![ToolSpec {
                    name: "read_file".into(),
                    description: "Read a file".into(),
                    parameters: "{}".into(),
                }]
            }

            fn invoke_until(
                &self,
                call_id: String,
                name: String,
                arguments: String,
                _stop: crate::step::stop::StopSignal,
            ) -> BoxFuture<Result<String, ToolError>> {
                let result = match name.as_str() {
                    "read_file" => Ok("hello".to_string()),
                    _ => Err(ToolError::Denied("rule `write(docs/**)` only".into())),
                };
                self.calls.lock().unwrap().push((call_id, name, arguments));
                Box::pin(async move { result })
            }
        }

        #[derive(Default)]
        struct Logs(Mutex<Vec<String>>);

        impl StepObserver for Logs {
            fn log(&self, _: LogLevel, message: &str) {
                self.0.lock().unwrap().push(message.to_string());
            }
            fn progress(&self, _: &str, _: Option<f32>) {}
        }

        let session = Arc::new(Session::default());
        let logs = Arc::new(Logs::default());
        let invocation = StepInvocation {
            run_id: "r1".into(),
            step_id: "review".into(),
            component: "agent".into(),
            function: None,
            attempt: 1,
            idempotency_key: "r1:review:0:1".into(),
            config: json!({
                "prompt": "Review a.txt",
                "system": "You review.",
                "max_turns": 5,
                "output": "json",
                "output_schema": {"type": "object", "required": ["verdict"]},
                "history": [],
                "agent": {"id": "reviewer", "name": "Reviewer", "role": null}
            }),
            inputs: json!({}),
            args: json!({}),
            workdir: std::env::temp_dir(),
            cwd: std::env::temp_dir(),
            grants: Default::default(),
            timeout: Duration::from_secs(60),
            scratch_dir: std::env::temp_dir(),
            agent: Some(AgentHandle(session.clone())),
            cancel: Default::default(),
            lease: Default::default(),
            resume: None,
        };
        let tokio = tokio::runtime::Runtime::new().expect("tokio");
        let runtime = crate::runtime::Runtime::new(None).expect("runtime");
        let output = tokio
            .block_on(runtime.run_step(invocation, logs.clone()))
            .unwrap_or_else(|e| panic!("agent failed: {e:?}; logs: {:?}", logs.0.lock()));

        assert_eq!(output["result"], json!({"verdict": "pass"}));
        assert_eq!(output["turns"], 2);
        assert_eq!(
            output["usage"],
            json!({"prompt_tokens": 14, "completion_tokens": 6})
        );
        let roles: Vec<&str> = output["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "tool", "tool", "assistant"]
        );
        assert_eq!(session.calls.lock().unwrap().len(), 2);
        let second = &session.seen.lock().unwrap()[1];
        assert_eq!(second[3].content, "hello");
        assert_eq!(second[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(second[4].content, "denied: rule `write(docs/**)` only");
        assert!(logs
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("agent reviewer (Reviewer): turn 1: 2 tool call(s)")));
    }
}
