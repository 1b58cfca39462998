//! What an agent's model reaches outside the host: the endpoint its
//! provider connects to and the host variable it reads its key from. Both
//! are checked against the operator's ceiling exactly like a step's own
//! `network` and `env` grants (see `engine::ceiling`), and `wfhost
//! validate` shows them.
//!
//! The endpoint is parsed here once, with the URI parser the HTTP client
//! uses, and the provider requests that same parsed URI: what is checked
//! is what is called.

use ureq::http::Uri;

use crate::step::grants::NetworkGrant;
use crate::workflow::model::{Agent, ModelSpec};

/// The reach of one agent's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReach {
    /// The agent's id.
    pub agent: String,
    /// The provider kind (`openai`, `scripted`).
    pub provider: &'static str,
    /// The one `host:port` the provider connects to (`None`: offline).
    pub endpoint: Option<NetworkGrant>,
    /// The host environment variable holding its API key, if any.
    pub api_key_env: Option<String>,
}

impl ModelReach {
    /// One line for people: `openai at api.openai.com:443, key from $KEY`.
    pub fn summary(&self) -> String {
        let mut text = match &self.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.provider),
            None => format!("{} (offline)", self.provider),
        };
        match &self.api_key_env {
            Some(name) => text.push_str(&format!(", key from ${name}")),
            None => text.push_str(", no key"),
        }
        text
    }

    /// A JSON view for `wfhost validate --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "agent": self.agent,
            "provider": self.provider,
            "endpoint": self.endpoint.as_ref().map(ToString::to_string),
            "api_key_env": self.api_key_env,
        })
    }
}

/// The reach of `agent`'s model, or why its model settings are unusable.
pub fn reach(agent: &Agent) -> Result<ModelReach, String> {
    match &agent.model {
        ModelSpec::Scripted { .. } => Ok(ModelReach {
            agent: agent.id.clone(),
            provider: "scripted",
            endpoint: None,
            api_key_env: None,
        }),
        // Reaches nothing: a step using it is refused when it starts.
        ModelSpec::Named { .. } => Ok(ModelReach {
            agent: agent.id.clone(),
            provider: "unknown provider",
            endpoint: None,
            api_key_env: None,
        }),
        ModelSpec::Openai {
            base_url,
            api_key_env,
            ..
        } => {
            let (_, endpoint) = chat_endpoint(base_url)
                .map_err(|e| format!("agent '{}': base_url {e}", agent.id))?;
            if let Some(name) = api_key_env {
                if !is_env_name(name) {
                    return Err(format!(
                        "agent '{}': api_key_env '{name}' is not a variable name (letters, digits, `_`)",
                        agent.id
                    ));
                }
            }
            Ok(ModelReach {
                agent: agent.id.clone(),
                provider: "openai",
                endpoint: Some(endpoint),
                api_key_env: api_key_env.clone(),
            })
        }
    }
}

/// The chat-completions URI under an OpenAI-compatible `base_url`, and the
/// `host:port` it connects to. Only `http` and `https` URLs without
/// credentials in them (the key comes from `api_key_env`).
pub fn chat_endpoint(base_url: &str) -> Result<(Uri, NetworkGrant), String> {
    let text = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("'{base_url}' is not a URL ({e})"))?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        Some(other) => {
            return Err(format!(
                "'{base_url}': scheme '{other}' is not http or https"
            ))
        }
        None => return Err(format!("'{base_url}' is not an http:// or https:// URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("'{base_url}' names no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "'{base_url}' holds credentials; name the key's variable in api_key_env instead"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("'{base_url}' names no host"));
    }
    // `Authority::port` ignores a port that is not a u16; read it whole.
    let after_host = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    let port = match after_host.strip_prefix(':') {
        None if after_host.is_empty() => default_port,
        None => return Err(format!("'{base_url}' is not a URL")),
        Some("") => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{base_url}': bad port '{port}'"))?,
    };
    Ok((
        uri,
        NetworkGrant {
            host,
            port: Some(port),
        },
    ))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_carry_the_port_the_client_will_use() {
        let endpoint = |url: &str| chat_endpoint(url).map(|(_, e)| e.to_string());
        assert_eq!(
            endpoint("https://API.openai.com/v1").unwrap(),
            "api.openai.com:443"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(endpoint("http://[::1]/v1").unwrap(), "[::1]:80");
        let (uri, _) = chat_endpoint("http://h:1/v1/").unwrap();
        assert_eq!(uri.to_string(), "http://h:1/v1/chat/completions");
        for (bad, says) in [
            ("ftp://h/v1", "scheme 'ftp'"),
            ("api.openai.com/v1", "not a URL"),
            ("/v1", "not an http"),
            ("https://user:pw@h/v1", "holds credentials"),
            ("https://h@evil.com/v1", "holds credentials"),
            ("http://h:99999/", "bad port '99999'"),
            ("http://h:0/", "bad port '0'"),
            ("http:// h/", "not a URL"),
        ] {
            let error = chat_endpoint(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
