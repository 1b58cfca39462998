//! Tools of the step's agent (`type: agent` steps only).
//!
//! Every call is checked by the host before any effect: the agent's tool
//! list, the step's grants, then the agent's policy components. A refused
//! call comes back as [`ToolError::Denied`] with a reason meant for the
//! model; nothing traps.
//!
//! ```ignore
//! use wfhost_sdk::tools;
//! let specs = tools::available();
//! match tools::invoke("call-1", "read_file", r#"{"path":"README.md"}"#) {
//!     Ok(text) => { /* the file */ }
//!     Err(e) => wfhost_sdk::log::warn(e.to_string()),
//! }
//! ```

use std::fmt;

use crate::bindings::wfhost::plugin::tools as wit;
pub use crate::model::ToolSpec;

/// Why a tool call did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// Refused by the tool list, a grant, a policy or a person; the reason
    /// is meant to be shown to the model.
    Denied(String),
    /// Allowed, but it failed (file missing, program exited non-zero ...).
    Failed(String),
}

impl ToolError {
    /// The text a model should see as the call's result:
    /// `denied: <reason>` or `error: <message>`.
    pub fn to_tool_result(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Denied(reason) => write!(f, "denied: {reason}"),
            ToolError::Failed(message) => write!(f, "error: {message}"),
        }
    }
}

impl std::error::Error for ToolError {}

impl From<wit::ToolError> for ToolError {
    fn from(e: wit::ToolError) -> Self {
        match e {
            wit::ToolError::Denied(r) => ToolError::Denied(r),
            wit::ToolError::Failed(m) => ToolError::Failed(m),
        }
    }
}

/// The tools this step's agent may use, with their JSON Schemas.
pub fn available() -> Vec<ToolSpec> {
    wit::available().into_iter().map(Into::into).collect()
}

/// Invoke the tool `name` with JSON `arguments`; `call_id` is the model's id
/// for the call (the host audits and, after a crash, replays by it).
pub fn invoke(call_id: &str, name: &str, arguments: &str) -> Result<String, ToolError> {
    wit::invoke(call_id, name, arguments).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_result_text() {
        assert_eq!(
            ToolError::Denied("rule `write(docs/**)` does not cover src/a.rs".into())
                .to_tool_result(),
            "denied: rule `write(docs/**)` does not cover src/a.rs"
        );
        assert_eq!(
            ToolError::from(wit::ToolError::Failed("no such file".into())).to_tool_result(),
            "error: no such file"
        );
    }
}
