//! The `http_get` tool: fetching URLs whose host and port a `network`
//! grant covers, without redirects or proxies, the body capped.

use std::io::Read;

use super::HTTP_TIMEOUT;
use crate::step::bindings::tools::ToolError;

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
}

pub(super) fn parse_url(url: &str) -> Result<Target, String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("http_get: '{url}' is not a URL: {e}"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => {
            return Err(format!(
                "http_get: '{url}' is not an http:// or https:// URL"
            ))
        }
    };
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "http_get: '{url}': credentials in URLs are not supported"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("http_get: '{url}' has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Target {
        host: host.to_ascii_lowercase(),
        port: uri.port_u16().unwrap_or(default_port),
    })
}

pub(super) fn http_get(url: &str, max: usize) -> Result<String, ToolError> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("wfhost/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| ToolError::Failed(format!("http_get {url}: {e}")))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let location = header("location");
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ToolError::Failed(format!("http_get {url}: reading the body: {e}")))?;
    let cut = bytes.len() > max;
    bytes.truncate(max);
    let mut text = format!("HTTP {}", status.as_u16());
    if let Some(kind) = content_type {
        text.push_str(&format!("\ncontent-type: {kind}"));
    }
    if let Some(location) = location {
        text.push_str(&format!(
            "\nlocation: {location}\n(redirects are not followed: fetch the new URL with http_get; its host must be granted too)"
        ));
    }
    text.push_str("\n\n");
    text.push_str(&String::from_utf8_lossy(&bytes));
    if cut {
        text.push_str(&format!("\n[body cut at {max} bytes]"));
    }
    if status.is_client_error() || status.is_server_error() {
        Err(ToolError::Failed(text))
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_and_port() {
        assert_eq!(
            parse_url("http://Example.com/x").unwrap(),
            Target {
                host: "example.com".into(),
                port: 80
            }
        );
        assert_eq!(parse_url("https://a.b:8443").unwrap().port, 8443);
        assert_eq!(parse_url("http://[::1]:9/").unwrap().host, "::1");
        assert!(parse_url("ftp://x").unwrap_err().contains("http://"));
        assert!(parse_url("http://u:p@x/")
            .unwrap_err()
            .contains("credentials"));
    }
}
