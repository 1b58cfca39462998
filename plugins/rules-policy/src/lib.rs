//! The built-in `rules` tool policy (component `rules-policy`, world
//! `tool-policy` of `plugins/sdk/wit/plugin.wit`): rules in the style of coding agents.
//!
//! Config (the `rules:` of an agent's `policy` entry, handed over in
//! `tool-call-request.config`):
//!
//! ```json
//! { "allow": ["read(src/**)", "write(docs/**)", "exec(cargo test *)", "http_get(domain:docs.rs)"],
//!   "ask":   ["exec(git push *)"],
//!   "deny":  ["read(src/secrets/**)", "exec(rm *)"] }
//! ```
//!
//! # Rules
//!
//! A rule is a tool name, alone (any arguments) or with a specifier in
//! parentheses: `tool` or `tool(specifier)`; `*` alone is any tool.
//!
//! Tool names: the full names (`read_file`, `write_file`, `edit_file`,
//! `list_dir`, `search`, `exec`, `http_get`, or any other tool's name, bare
//! only) or the short aliases `read`, `write`, `edit`, `list` (`ls`), `http`.
//!
//! Specifiers:
//!
//! - **File tools** (`read`, `write`, `edit`, `list`, `search`): a glob over
//!   the call's `path` argument (`list_dir` defaults to `.`; a `search`
//!   without `path` covers every granted directory, so only a bare `search`
//!   rule matches it), relative to the workflow directory: `**` is any number of directories,
//!   `*` any characters within one path segment, `?` one character; a
//!   trailing `/` means everything below. `read(src/**)` matches `src`,
//!   `src/a.rs` and `src/a/b.rs`; `write(docs/*.md)` matches `docs/x.md`
//!   only. Paths are normalised lexically first (`./`, `a/../b`); globs never
//!   match `..` segments, so `read(**)` does not reach outside the workflow
//!   directory. Absolute paths match only globs starting with `/`, unless
//!   the grants JSON carries a `workdir` string, in which case absolute paths
//!   below it are made relative first.
//! - **`exec`**: a command pattern matched against each simple command of the
//!   `command` argument (words joined by single spaces, quotes removed); `*`
//!   matches any characters but a newline. A pattern ending in ` *` (or `:*`) also matches
//!   the bare command: `exec(cargo test *)` matches `cargo test` and
//!   `cargo test -p x`, not `cargo testing`.
//! - **`http_get`**: `domain:<host>` matches the `url` argument's host
//!   exactly (case-insensitive; `domain:docs.rs` does not match
//!   `api.docs.rs`); `domain:*.<host>` matches its subdomains only.
//!
//! # Evaluation
//!
//! Deny rules first (a match denies, the reason names the rule), then ask
//! rules (a match asks, the prompt names the rule), then allow rules. A call
//! no rule matches is **ask** (`no rule allows ...`): a person decides
//! rather than the agent silently failing or silently succeeding.
//!
//! An `exec` command line is split as `/bin/sh` reads it (see [`shell`]:
//! `&&`, `||`, `;`, `|`, `&`, newlines, sub-shells, `#` comments, backticks
//! and `$( )`): every simple command is checked on its own; any denied part
//! denies the call, else any ask or unmatched part asks, else it is allowed.
//! A line the splitter cannot read with confidence (here-documents,
//! redirections to files, unbalanced quotes, `case` ...) is `ask`, unless a
//! deny rule (bare, or a pattern matching the whole line) denies it or a
//! bare `exec` allow rule allows everything. Likewise a simple command in
//! doubt (inside or holding a command substitution, after a shell keyword,
//! `eval`, `exec`, `trap` ...) or whose program name is computed
//! (`$CMD -rf x`) is allowed only by a bare `exec` rule; deny rules still
//! see its words.
//!
//! Wrappers (`sh -c`, `bash -c`, `env`, `xargs`, `find -exec`) run what
//! they are given: allowing them allows whatever they run, so keep allow
//! patterns narrow; deny patterns are a backstop, not a sandbox (the step's
//! grants and OS sandbox are).
//!
//! An invalid config (unknown key, malformed rule) denies every call, with
//! the error as the reason: a broken policy fails closed.

pub mod pattern;
pub mod rules;
pub mod shell;

use rules::{Rules, Verdict};

/// Bindings generated from `plugins/sdk/wit/plugin.wit`, world `tool-policy`.
#[allow(clippy::too_many_arguments)] // the flattened `tool-call-request`
mod bindings {
    wit_bindgen::generate!({
        path: "../sdk/wit",
        world: "tool-policy",
    });
}

use bindings::{Decision, Guest, ToolCallRequest};

/// Decide on one call with the rules in `config`.
pub fn decide_call(tool: &str, arguments: &str, grants: &str, config: &str) -> Verdict {
    match Rules::parse(config) {
        Ok(rules) => rules.decide(tool, arguments, grants),
        Err(e) => Verdict::Deny(format!(
            "the rules policy has an invalid config ({e}); every call is denied until it is fixed"
        )),
    }
}

struct RulesPolicy;

impl Guest for RulesPolicy {
    fn decide(call: ToolCallRequest) -> Decision {
        match decide_call(&call.tool, &call.arguments, &call.grants, &call.config) {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny(reason) => Decision::Deny(reason),
            Verdict::Ask(prompt) => Decision::Ask(prompt),
        }
    }
}

bindings::export!(RulesPolicy with_types_in bindings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_fails_closed() {
        let v = decide_call(
            "read_file",
            r#"{"path":"a"}"#,
            "{}",
            r#"{"allow": ["read("]}"#,
        );
        match v {
            Verdict::Deny(reason) => assert!(reason.contains("invalid config"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_issue_example() {
        let config = r#"{"allow": ["exec(cargo test *)"], "deny": ["exec(rm *)"]}"#;
        let call = |c: &str| {
            decide_call(
                "exec",
                &serde_json::json!({ "command": c }).to_string(),
                "{}",
                config,
            )
        };
        assert_eq!(call("cargo test -p x"), Verdict::Allow);
        assert!(matches!(call("cargo test && rm -rf x"), Verdict::Deny(_)));
        let only_allow = r#"{"allow": ["exec(cargo test *)"]}"#;
        let v = decide_call(
            "exec",
            r#"{"command": "cargo test && rm -rf x"}"#,
            "{}",
            only_allow,
        );
        assert!(matches!(v, Verdict::Ask(_)), "{v:?}");
    }
}
