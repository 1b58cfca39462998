//! `example-policy`: an example third-party tool policy, "no-secrets".
//!
//! A tool policy is a component targeting the `tool-policy` world of
//! `plugins/sdk/wit/plugin.wit`: it exports one function, `decide(call) -> decision`,
//! and the host asks it about every tool call of the agents that list it
//! (`policy: [{ plugin: no-secrets.wasm, config: {...} }]`).
//!
//! This one denies any call whose arguments mention a secret: `.env`,
//! `id_rsa`, `.ssh/` or `credentials`, plus the `extra_patterns` of its
//! config. Matching is a case-insensitive substring search over every
//! string in the arguments (keys and values, JSON escapes decoded), so it
//! catches `read_file {"path": "../.ssh/id_rsa"}` as well as
//! `exec {"command": "cat ~/.aws/credentials"}` (and, deliberately, a
//! `write_file` whose content mentions one). Everything else is allowed:
//! later policies in the chain still decide.
//!
//! Config: `{ "extra_patterns": ["secrets/", "token"] }` (optional). An
//! invalid config denies every call (fail closed).

use serde::Deserialize;
use serde_json::Value;

/// Bindings generated from `plugins/sdk/wit/plugin.wit`, world `tool-policy`.
#[allow(clippy::too_many_arguments)] // the flattened `tool-call-request`
mod bindings {
    wit_bindgen::generate!({
        path: "../sdk/wit",
        world: "tool-policy",
    });
}

use bindings::{Decision, Guest, ToolCallRequest};

/// What every call is checked for.
pub const BUILTIN_PATTERNS: [&str; 4] = [".env", "id_rsa", ".ssh/", "credentials"];

/// The policy's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// More substrings that mark a secret.
    #[serde(default)]
    pub extra_patterns: Vec<String>,
}

/// `None`: allow; `Some(reason)`: deny.
pub fn check(tool: &str, arguments: &str, config: &str) -> Option<String> {
    let config: Config = match config.trim() {
        "" | "null" => Config::default(),
        text => match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                return Some(format!(
                "no-secrets policy: invalid config ({e}); every call is denied until it is fixed"
            ))
            }
        },
    };
    let patterns: Vec<String> = BUILTIN_PATTERNS
        .iter()
        .map(|p| p.to_string())
        .chain(config.extra_patterns)
        .map(|p| p.to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();

    // Every string of the arguments (decoded), or the raw text when it is
    // not JSON.
    let mut strings = Vec::new();
    match serde_json::from_str::<Value>(arguments) {
        Ok(value) => collect_strings(&value, "", &mut strings),
        Err(_) => strings.push((String::new(), arguments.to_string())),
    }
    for (field, text) in &strings {
        let text = text.to_lowercase();
        if let Some(pattern) = patterns.iter().find(|p| text.contains(p.as_str())) {
            let place = if field.is_empty() {
                String::new()
            } else {
                format!(" (in `{field}`)")
            };
            return Some(format!(
                "no-secrets policy: {tool} call mentions `{pattern}`{place}; secrets are off limits"
            ));
        }
    }
    None
}

/// (field path, text) for every key and string value.
fn collect_strings(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.push((child.clone(), key.clone()));
                collect_strings(item, &child, out);
            }
        }
        _ => {}
    }
}

struct NoSecrets;

impl Guest for NoSecrets {
    fn decide(call: ToolCallRequest) -> Decision {
        match check(&call.tool, &call.arguments, &call.config) {
            Some(reason) => Decision::Deny(reason),
            None => Decision::Allow,
        }
    }
}

bindings::export!(NoSecrets with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_secret_paths_and_commands() {
        let reason = check("read_file", r#"{"path": "../.SSH/id_ed25519"}"#, "").unwrap();
        assert_eq!(
            reason,
            "no-secrets policy: read_file call mentions `.ssh/` (in `path`); secrets are off limits"
        );
        assert!(check("read_file", r#"{"path": ".env"}"#, "{}").is_some());
        assert!(check("exec", r#"{"command": "cat ~/.aws/credentials"}"#, "{}").is_some());
        assert!(check("exec", r#"{"command": "cat id_rsa.pub"}"#, "{}").is_some());
        // JSON escapes do not hide a pattern.
        assert!(check("read_file", r#"{"path": "\u002eenv"}"#, "{}").is_some());
        // Nested values and keys count too.
        assert!(check("custom", r#"{"files": [{"name": "prod.env"}]}"#, "{}").is_some());
        assert!(check("custom", r#"{"credentials": 1}"#, "{}").is_some());
        // Not JSON: the raw text is searched.
        assert!(check("custom", "id_rsa", "{}").is_some());
    }

    #[test]
    fn allows_everything_else() {
        assert_eq!(check("read_file", r#"{"path": "src/main.rs"}"#, ""), None);
        assert_eq!(check("exec", r#"{"command": "cargo test"}"#, "null"), None);
        assert_eq!(check("list_dir", "{}", r#"{"extra_patterns": []}"#), None);
    }

    #[test]
    fn extra_patterns() {
        let config = r#"{"extra_patterns": ["Secrets/", "TOKEN", ""]}"#;
        assert!(check("read_file", r#"{"path": "secrets/db"}"#, config).is_some());
        assert!(check("http_get", r#"{"url": "https://x/?token=1"}"#, config).is_some());
        assert_eq!(check("read_file", r#"{"path": "src/a"}"#, config), None);
    }

    #[test]
    fn invalid_config_denies() {
        let reason = check("read_file", r#"{"path": "a"}"#, r#"{"patterns": []}"#).unwrap();
        assert!(reason.contains("invalid config"), "{reason}");
    }
}
