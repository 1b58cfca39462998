//! The built-in tools an agent step may call, in one table shared by the
//! host (which offers, checks and runs them) and the `rules` policy
//! component (which matches rules against their arguments), so the two
//! can never disagree about a tool's names.

/// What the specifier of a policy rule (`tool(specifier)`) is matched
/// against for a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The `path` argument (a glob).
    Path,
    /// The `command` argument (split into simple commands).
    Command,
    /// The host of the `url` argument.
    Domain,
    /// Nothing: only bare rules apply.
    None,
}

/// A built-in tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolDef {
    /// The name the model uses.
    pub name: &'static str,
    /// The short name an agent's `tools` list may use.
    pub short: &'static str,
    /// For the model.
    pub description: &'static str,
    /// JSON Schema of its arguments.
    pub parameters: &'static str,
    /// Whether it changes something outside the conversation (a call that
    /// was interrupted by a crash is then not run again).
    pub effectful: bool,
    /// What the specifier of a policy rule for this tool is matched against.
    pub subject: Subject,
}

/// Every built-in tool.
pub const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "read_file",
        short: "read",
        description: "Read a text file. Paths are relative to the workflow's directory.",
        parameters: r#"{"type":"object","properties":{"path":{"type":"string","description":"File to read"}},"required":["path"],"additionalProperties":false}"#,
        subject: Subject::Path,
        effectful: false,
    },
    ToolDef {
        name: "write_file",
        short: "write",
        description: "Create or replace a text file (its directory must exist).",
        parameters: r#"{"type":"object","properties":{"path":{"type":"string","description":"File to write"},"content":{"type":"string","description":"The whole new content"}},"required":["path","content"],"additionalProperties":false}"#,
        subject: Subject::Path,
        effectful: true,
    },
    ToolDef {
        name: "edit_file",
        short: "edit",
        description: "Replace one exact occurrence of `old` with `new` in a file; fails if `old` is absent or occurs more than once.",
        parameters: r#"{"type":"object","properties":{"path":{"type":"string"},"old":{"type":"string","description":"Exact text to replace (must occur once)"},"new":{"type":"string","description":"Replacement text"}},"required":["path","old","new"],"additionalProperties":false}"#,
        subject: Subject::Path,
        effectful: true,
    },
    ToolDef {
        name: "list_dir",
        short: "list",
        description: "List a directory; names of directories end with '/'.",
        parameters: r#"{"type":"object","properties":{"path":{"type":"string","description":"Directory to list (default: the workflow's directory)"}},"additionalProperties":false}"#,
        subject: Subject::Path,
        effectful: false,
    },
    ToolDef {
        name: "search",
        short: "search",
        description: "Search files for lines matching a regular expression; prints path:line: text.",
        parameters: r#"{"type":"object","properties":{"pattern":{"type":"string","description":"Regular expression (Rust regex syntax)"},"path":{"type":"string","description":"File or directory to search (default: every readable granted directory)"}},"required":["pattern"],"additionalProperties":false}"#,
        subject: Subject::Path,
        effectful: false,
    },
    ToolDef {
        name: "exec",
        short: "exec",
        description: "Run a shell command line (sh -c) in a sandbox; it starts in the workflow's directory when that is granted, else in a private scratch directory. Returns its exit code and output.",
        parameters: r#"{"type":"object","properties":{"command":{"type":"string","description":"The command line"}},"required":["command"],"additionalProperties":false}"#,
        subject: Subject::Command,
        effectful: true,
    },
    ToolDef {
        name: "http_get",
        short: "http",
        description: "Fetch a URL with HTTP GET and return its status and body (redirects are not followed).",
        parameters: r#"{"type":"object","properties":{"url":{"type":"string","description":"http:// or https:// URL"}},"required":["url"],"additionalProperties":false}"#,
        subject: Subject::Domain,
        effectful: true,
    },
];

/// The tool called `name` (its own name or its short name).
pub fn lookup(name: &str) -> Option<&'static ToolDef> {
    TOOLS.iter().find(|t| t.name == name || t.short == name)
}

/// The tool's own name for `name` when it names a built-in tool (by its
/// name or its short name); other names are returned as they are.
pub fn canonical(name: &str) -> &str {
    match lookup(name) {
        Some(tool) => tool.name,
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_short_names_are_unique_and_canonical() {
        for (i, tool) in TOOLS.iter().enumerate() {
            assert_eq!(canonical(tool.short), tool.name);
            assert_eq!(canonical(tool.name), tool.name);
            for other in &TOOLS[i + 1..] {
                assert!(tool.name != other.name && tool.short != other.short);
            }
        }
        assert_eq!(canonical("ls"), "ls");
        assert_eq!(lookup("exec").unwrap().subject, Subject::Command);
    }
}
