//! Any OpenAI-compatible chat-completions endpoint with tool calling.
//!
//! `POST {base_url}/chat/completions` with `model`, `messages` and `tools`;
//! the API key comes from the host environment variable the agent names
//! (`api_key_env`) and is sent as a bearer token. HTTP 429, 5xx, timeouts
//! and connection failures are transient errors (the engine retries them
//! per the step's retry policy); other 4xx are permanent, with the error
//! message of the response body.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};

use ureq::http::Uri;

use super::reach::chat_endpoint;
use super::ModelProvider;
use crate::agent::record::{role_str, truncate};
use crate::step::bindings::model::{
    Completion, Message, ModelError, Role, ToolCall, ToolSpec, Usage,
};
use crate::step::executor::BoxFuture;

/// Request timeout when the agent's model sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The model reply budget: most bytes of a response body read. A longer
/// reply is not read further and fails the call (permanently: the same
/// request would get the same reply).
pub const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// An OpenAI-compatible endpoint.
pub struct OpenAi {
    /// The request URI, parsed once (see [`super::reach::chat_endpoint`]).
    uri: Uri,
    /// The same, for messages.
    url: String,
    model: String,
    api_key_env: Option<String>,
    agent: ureq::Agent,
    /// Most bytes of a reply read ([`MAX_RESPONSE`]).
    max_response: u64,
}

impl OpenAi {
    /// A provider for `model` at `base_url` (e.g. `https://api.openai.com/v1`).
    /// Redirects are not followed: the provider talks only to the endpoint
    /// that was checked against the operator's ceiling.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key_env: Option<&str>,
        timeout: Duration,
    ) -> Result<OpenAi, String> {
        let (uri, _) = chat_endpoint(base_url).map_err(|e| format!("base_url {e}"))?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("wfhost/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(OpenAi {
            url: uri.to_string(),
            uri,
            model: model.to_string(),
            api_key_env: api_key_env.map(str::to_string),
            agent,
            max_response: MAX_RESPONSE,
        })
    }

    fn request_body(&self, messages: &[Message], tools: &[ToolSpec]) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
        });
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|tool| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": serde_json::from_str::<Value>(&tool.parameters)
                                .unwrap_or_else(|_| json!({"type": "object"})),
                        }
                    })
                })
                .collect();
        }
        body
    }

    /// One blocking request.
    fn call(&self, body: &Value) -> Result<Completion, ModelError> {
        let mut request = self
            .agent
            .post(self.uri.clone())
            .header("Content-Type", "application/json");
        if let Some(name) = &self.api_key_env {
            let key = std::env::var(name).map_err(|_| {
                ModelError::Permanent(format!(
                    "the API key variable '{name}' (api_key_env) is not set in wfhost's environment"
                ))
            })?;
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let response = request
            .send(body.to_string().as_bytes())
            .map_err(|error| transport_error(&self.url, error))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(self.max_response.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| {
                ModelError::Transient(format!("reading the reply of {}: {error}", self.url))
            })?;
        if bytes.len() as u64 > self.max_response {
            return Err(ModelError::Permanent(format!(
                "the reply of {} is larger than the model reply budget of {} bytes; it was not read further",
                self.url, self.max_response
            )));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if (300..400).contains(&status) {
            return Err(ModelError::Permanent(format!(
                "{} answered HTTP {status} (a redirect); wfhost does not follow redirects of a model endpoint: set base_url to the final address",
                self.url
            )));
        }
        if !(200..300).contains(&status) {
            let message = error_message(&text);
            let what = format!("{} answered HTTP {status}: {message}", self.url);
            return Err(if status == 429 || status >= 500 || status == 408 {
                ModelError::Transient(what)
            } else {
                ModelError::Permanent(what)
            });
        }
        let reply: Value = serde_json::from_str(&text).map_err(|error| {
            ModelError::Permanent(format!(
                "{} sent a reply that is not JSON ({error}): {}",
                self.url,
                truncate(&text, 200)
            ))
        })?;
        parse_reply(&reply).map_err(|problem| {
            ModelError::Permanent(format!("{} sent an unexpected reply: {problem}", self.url))
        })
    }
}

impl ModelProvider for OpenAi {
    fn complete(
        &self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> BoxFuture<Result<Completion, ModelError>> {
        let body = self.request_body(&messages, &tools);
        let this = OpenAi {
            uri: self.uri.clone(),
            url: self.url.clone(),
            model: self.model.clone(),
            api_key_env: self.api_key_env.clone(),
            agent: self.agent.clone(),
            max_response: self.max_response,
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.call(&body))
                .await
                .unwrap_or_else(|error| {
                    Err(ModelError::Transient(format!(
                        "model request did not finish: {error}"
                    )))
                })
        })
    }

    fn describe(&self) -> String {
        format!("openai {} at {}", self.model, self.url)
    }
}

/// A message in OpenAI's shape.
fn message_json(message: &Message) -> Value {
    let mut out = json!({ "role": role_str(message.role) });
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        out["content"] = if message.content.is_empty() {
            Value::Null
        } else {
            Value::String(message.content.clone())
        };
        out["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
    } else {
        out["content"] = Value::String(message.content.clone());
    }
    if let Some(id) = &message.tool_call_id {
        out["tool_call_id"] = Value::String(id.clone());
    }
    out
}

/// `choices[0].message`, `finish_reason` and `usage` of a reply.
fn parse_reply(reply: &Value) -> Result<Completion, String> {
    let choice = reply
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("no choices[0]")?;
    let message = choice.get("message").ok_or("no choices[0].message")?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut tool_calls = Vec::new();
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        for (index, call) in calls.iter().enumerate() {
            let function = call
                .get("function")
                .ok_or_else(|| format!("tool_calls[{index}] has no function"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tool_calls[{index}] has no function.name"))?;
            let arguments = match function.get("arguments") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{index}"));
            tool_calls.push(ToolCall {
                id,
                name: name.to_string(),
                arguments,
            });
        }
    }
    let tokens = |key: &str| {
        reply
            .get("usage")
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32
    };
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or(if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        })
        .to_string();
    Ok(Completion {
        message: Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        },
        usage: Usage {
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        },
        finish_reason,
    })
}

/// The `error.message` of an error body, else the body itself (cut short).
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| error.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| truncate(body.trim(), 500))
}

fn transport_error(url: &str, error: ureq::Error) -> ModelError {
    match error {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            ModelError::Permanent(format!("cannot call {url}: {error}"))
        }
        ureq::Error::Timeout(_) => {
            ModelError::Transient(format!("{url} did not answer in time ({error})"))
        }
        other => ModelError::Transient(format!("cannot reach {url}: {other}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A request the test server received.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub request_line: String,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    /// A loopback HTTP/1.1 server answering each connection with the next
    /// of `replies` (status, body), recording what it was sent.
    pub fn serve(replies: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end().to_string();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    let (name, value) =
                        (name.trim().to_ascii_lowercase(), value.trim().to_string());
                    if name == "content-length" {
                        length = value.parse().unwrap();
                    }
                    headers.push((name, value));
                }
                let mut body_bytes = vec![0u8; length];
                reader.read_exact(&mut body_bytes).unwrap();
                log.lock().unwrap().push(Seen {
                    request_line: request_line.trim_end().to_string(),
                    headers,
                    body: String::from_utf8(body_bytes).unwrap(),
                });
                let mut stream = stream;
                let reason = if status == 200 { "OK" } else { "Error" };
                // A body `__location__<url>` is a redirect to <url>.
                let (location, body) = match body.strip_prefix("__location__") {
                    Some(to) => (format!("Location: {to}\r\n"), String::new()),
                    None => (String::new(), body),
                };
                write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                stream.flush().unwrap();
            }
        });
        (format!("http://{address}"), seen)
    }

    fn tool() -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: "Read a file".into(),
            parameters: r#"{"type":"object","properties":{"path":{"type":"string"}}}"#.into(),
        }
    }

    fn user(text: &str) -> Message {
        Message {
            role: Role::User,
            content: text.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const TOOL_REPLY: &str = r#"{"choices":[{"message":{"role":"assistant","content":null,
        "tool_calls":[{"id":"call_9","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"src/a.rs\"}"}}]},
        "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":7}}"#;

    #[test]
    fn sends_tools_and_the_bearer_key_and_parses_tool_calls() {
        let (url, seen) = serve(vec![(200, TOOL_REPLY.to_string())]);
        std::env::set_var("WFHOST_TEST_OPENAI_KEY_1", "sk-test-123");
        let provider = OpenAi::new(
            &format!("{url}/v1/"),
            "gpt-test",
            Some("WFHOST_TEST_OPENAI_KEY_1"),
            Duration::from_secs(10),
        )
        .unwrap();
        let completion = runtime()
            .block_on(provider.complete(vec![user("hi")], vec![tool()]))
            .unwrap();
        assert_eq!(completion.finish_reason, "tool_calls");
        assert_eq!(completion.usage.prompt_tokens, 12);
        assert_eq!(completion.usage.completion_tokens, 7);
        let call = &completion.message.tool_calls[0];
        assert_eq!(
            (call.id.as_str(), call.name.as_str()),
            ("call_9", "read_file")
        );
        assert_eq!(call.arguments, r#"{"path":"src/a.rs"}"#);

        let seen = seen.lock().unwrap();
        let request = &seen[0];
        assert_eq!(request.request_line, "POST /v1/chat/completions HTTP/1.1");
        assert!(request
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer sk-test-123"));
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "read_file");
        assert_eq!(
            body["tools"][0]["function"]["parameters"]["properties"]["path"]["type"],
            "string"
        );
    }

    #[test]
    fn tool_calls_and_results_are_sent_in_openai_shape() {
        let provider = OpenAi::new("http://x", "m", None, DEFAULT_TIMEOUT).unwrap();
        let messages = vec![
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "read_file".into(),
                    arguments: "{}".into(),
                }],
                tool_call_id: None,
            },
            Message {
                role: Role::Tool,
                content: "text".into(),
                tool_calls: vec![],
                tool_call_id: Some("c1".into()),
            },
        ];
        let body = provider.request_body(&messages, &[]);
        assert_eq!(body["messages"][0]["content"], Value::Null);
        assert_eq!(
            body["messages"][0]["tool_calls"][0]["function"]["name"],
            "read_file"
        );
        assert_eq!(body["messages"][1]["tool_call_id"], "c1");
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn rate_limits_are_transient_then_the_retry_succeeds() {
        let ok = r#"{"choices":[{"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}],
                     "usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        let (url, seen) = serve(vec![
            (429, r#"{"error":{"message":"slow down"}}"#.to_string()),
            (200, ok.to_string()),
        ]);
        let provider = OpenAi::new(&url, "m", None, Duration::from_secs(10)).unwrap();
        let rt = runtime();
        let first = rt.block_on(provider.complete(vec![user("hi")], vec![]));
        match first {
            Err(ModelError::Transient(message)) => {
                assert!(
                    message.contains("429") && message.contains("slow down"),
                    "{message}"
                )
            }
            other => panic!("expected a transient error, got {other:?}"),
        }
        let second = rt
            .block_on(provider.complete(vec![user("hi")], vec![]))
            .unwrap();
        assert_eq!(second.message.content, "done");
        assert_eq!(second.finish_reason, "stop");
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(
            seen.lock().unwrap()[0]
                .headers
                .iter()
                .all(|(n, _)| n != "authorization"),
            "no key configured, no header"
        );
    }

    #[test]
    fn replies_past_the_budget_fail_while_being_read() {
        let big = format!(
            r#"{{"choices":[{{"message":{{"content":"{}"}}}}]}}"#,
            "a".repeat(5000)
        );
        let (url, _seen) = serve(vec![(200, big)]);
        let mut provider = OpenAi::new(&url, "m", None, DEFAULT_TIMEOUT).unwrap();
        provider.max_response = 1000;
        match provider.call(&json!({})) {
            Err(ModelError::Permanent(m)) => {
                assert!(m.contains("model reply budget of 1000 bytes"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_errors_are_transient_and_client_errors_permanent() {
        let (url, _seen) = serve(vec![
            (503, "upstream down".to_string()),
            (400, r#"{"error":{"message":"bad model"}}"#.to_string()),
        ]);
        let provider = OpenAi::new(&url, "m", None, Duration::from_secs(10)).unwrap();
        let rt = runtime();
        assert!(matches!(
            rt.block_on(provider.complete(vec![user("x")], vec![])),
            Err(ModelError::Transient(m)) if m.contains("503") && m.contains("upstream down")
        ));
        assert!(matches!(
            rt.block_on(provider.complete(vec![user("x")], vec![])),
            Err(ModelError::Permanent(m)) if m.contains("bad model")
        ));
    }

    #[test]
    fn connection_failures_are_transient_and_a_missing_key_permanent() {
        // A port nobody listens on: bind, learn the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let provider = OpenAi::new(
            &format!("http://127.0.0.1:{port}"),
            "m",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let rt = runtime();
        assert!(matches!(
            rt.block_on(provider.complete(vec![user("x")], vec![])),
            Err(ModelError::Transient(_))
        ));
        let keyed = OpenAi::new(
            "http://127.0.0.1:9",
            "m",
            Some("WFHOST_TEST_SURELY_UNSET_KEY"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(matches!(
            rt.block_on(keyed.complete(vec![user("x")], vec![])),
            Err(ModelError::Permanent(m)) if m.contains("WFHOST_TEST_SURELY_UNSET_KEY")
        ));
    }

    #[test]
    fn redirects_are_not_followed() {
        let (target, seen_target) = serve(vec![(200, TOOL_REPLY.to_string())]);
        let (url, _seen) = serve(vec![(
            307,
            format!("__location__{target}/v1/chat/completions"),
        )]);
        std::env::set_var("WFHOST_TEST_OPENAI_KEY_3", "sk-redirect");
        let provider = OpenAi::new(
            &url,
            "m",
            Some("WFHOST_TEST_OPENAI_KEY_3"),
            Duration::from_secs(10),
        )
        .unwrap();
        let error = runtime().block_on(provider.complete(vec![user("x")], vec![]));
        assert!(
            matches!(&error, Err(ModelError::Permanent(m)) if m.contains("HTTP 307") && m.contains("does not follow redirects")),
            "{error:?}"
        );
        assert!(seen_target.lock().unwrap().is_empty());
    }
}
