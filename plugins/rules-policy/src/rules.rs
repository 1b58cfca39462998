//! Rules and their evaluation, independent of the component bindings.

use serde::Deserialize;
use serde_json::Value;
use wfhost_tool_catalog::Subject;

use crate::pattern::{self, CommandPattern, DomainPattern, PathGlob};
use crate::shell;

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it happen.
    Allow,
    /// Refuse, with the reason (shown to the model).
    Deny(String),
    /// Hold for a person, with the prompt shown to them.
    Ask(String),
}

/// The tool's own name for `name` (its short name is accepted too).
pub fn canonical_tool(name: &str) -> &str {
    wfhost_tool_catalog::canonical(name)
}

/// What the specifier of a rule for this tool is matched against.
fn subject(tool: &str) -> Subject {
    wfhost_tool_catalog::lookup(tool).map_or(Subject::None, |t| t.subject)
}

/// The `path` a tool uses when the call gives none: `list_dir` lists the
/// workflow directory. (`search` without a path searches every granted
/// directory, which no glob describes: only bare rules match it.)
fn default_path(tool: &str) -> Option<&'static str> {
    match tool {
        "list_dir" => Some("."),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Spec {
    /// Bare rule: any arguments.
    Any,
    Path(PathGlob),
    Command(CommandPattern),
    Domain(DomainPattern),
}

/// One parsed rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As written, for messages.
    text: String,
    /// Canonical tool name; `None` for `*` (any tool).
    tool: Option<String>,
    spec: Spec,
}

impl Rule {
    /// Parse `tool`, `tool(specifier)` or `*`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let trimmed = text.trim();
        let (name, spec) = match trimmed.find('(') {
            Some(open) => {
                let Some(inner) = trimmed[open + 1..].strip_suffix(')') else {
                    return Err(format!("rule `{text}`: missing the closing `)`"));
                };
                (trimmed[..open].trim(), Some(inner.trim()))
            }
            None => (trimmed, None),
        };
        if name.is_empty() {
            return Err(format!("rule `{text}`: no tool name"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*')
        {
            return Err(format!("rule `{text}`: `{name}` is not a tool name"));
        }
        let tool = if name == "*" {
            None
        } else if name.contains('*') {
            return Err(format!(
                "rule `{text}`: wildcards in tool names are not supported (use `*` alone)"
            ));
        } else {
            Some(canonical_tool(name).to_string())
        };
        let spec = match (spec, tool.as_deref()) {
            (None, _) => Spec::Any,
            (Some(""), _) => return Err(format!("rule `{text}`: empty specifier")),
            (Some(_), None) => {
                return Err(format!("rule `{text}`: `*` takes no specifier"));
            }
            (Some(s), Some(tool)) => match subject(tool) {
                Subject::Path => Spec::Path(
                    PathGlob::new(s).ok_or_else(|| format!("rule `{text}`: empty path glob"))?,
                ),
                Subject::Command => Spec::Command(
                    CommandPattern::new(s)
                        .ok_or_else(|| format!("rule `{text}`: empty command pattern"))?,
                ),
                Subject::Domain => {
                    let Some(domain) = s.strip_prefix("domain:") else {
                        return Err(format!(
                            "rule `{text}`: http_get rules take `domain:<host>` (e.g. `http_get(domain:docs.rs)`)"
                        ));
                    };
                    Spec::Domain(DomainPattern::new(domain).ok_or_else(|| {
                        format!("rule `{text}`: `{domain}` is not a host name or `*.<host>`")
                    })?)
                }
                Subject::None => {
                    return Err(format!(
                        "rule `{text}`: `{tool}` takes no specifier (specifiers exist for \
                         read/write/edit/list/search paths, exec commands and http_get domains)"
                    ))
                }
            },
        };
        Ok(Rule {
            text: trimmed.to_string(),
            tool,
            spec,
        })
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn applies_to(&self, tool: &str) -> bool {
        self.tool.as_deref().is_none_or(|t| t == tool)
    }

    fn is_bare(&self) -> bool {
        matches!(self.spec, Spec::Any)
    }
}

/// The policy's configuration: `{ "allow": [..], "ask": [..], "deny": [..] }`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    allow: Vec<Rule>,
    ask: Vec<Rule>,
    deny: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    ask: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

impl Rules {
    /// Parse the config JSON (`""`, `null` and `{}`: no rules).
    pub fn parse(config: &str) -> Result<Rules, String> {
        let config = config.trim();
        if config.is_empty() || config == "null" {
            return Ok(Rules::default());
        }
        let raw: RawRules = serde_json::from_str(config).map_err(|e| {
            format!("expected {{\"allow\": [..], \"ask\": [..], \"deny\": [..]}}: {e}")
        })?;
        Rules::from_lists(&raw.allow, &raw.ask, &raw.deny)
    }

    /// Parse three lists of rules.
    pub fn from_lists<S: AsRef<str>>(allow: &[S], ask: &[S], deny: &[S]) -> Result<Rules, String> {
        let parse = |list: &[S]| -> Result<Vec<Rule>, String> {
            list.iter().map(|r| Rule::parse(r.as_ref())).collect()
        };
        Ok(Rules {
            allow: parse(allow)?,
            ask: parse(ask)?,
            deny: parse(deny)?,
        })
    }

    /// Decide on one call. `arguments` is the call's JSON object; `grants`
    /// the step's effective grants as JSON (a `workdir` string in it makes
    /// absolute paths under the workflow directory relative).
    pub fn decide(&self, tool: &str, arguments: &str, grants: &str) -> Verdict {
        let tool = canonical_tool(tool.trim());
        let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        match subject(tool) {
            Subject::Command => self.decide_exec(&args),
            Subject::Path => {
                let raw = args
                    .get("path")
                    .and_then(Value::as_str)
                    .or(default_path(tool));
                let workdir = serde_json::from_str::<Value>(grants)
                    .ok()
                    .and_then(|g| g.get("workdir").and_then(Value::as_str).map(str::to_string));
                let path = raw.map(|p| {
                    let normalized = pattern::normalize_path(p);
                    workdir
                        .as_deref()
                        .and_then(|w| pattern::relative_to(&normalized, w))
                        .unwrap_or(normalized)
                });
                let what = match raw {
                    Some(p) => format!("{tool} `{}`", short(p)),
                    None => format!("{tool} (no `path` argument)"),
                };
                self.decide_single(tool, &what, |spec| match (spec, &path) {
                    (Spec::Path(glob), Some(path)) => glob.matches(path),
                    _ => false,
                })
            }
            Subject::Domain => {
                let url = args.get("url").and_then(Value::as_str);
                let host = url.and_then(pattern::url_host);
                let what = match url {
                    Some(u) => format!("{tool} `{}`", short(u)),
                    None => format!("{tool} (no `url` argument)"),
                };
                self.decide_single(tool, &what, |spec| match (spec, &host) {
                    (Spec::Domain(d), Some(host)) => d.matches(host),
                    _ => false,
                })
            }
            Subject::None => self.decide_single(tool, &format!("tool `{tool}`"), |_| false),
        }
    }

    /// Deny, then ask, then allow; unmatched: ask.
    fn decide_single(
        &self,
        tool: &str,
        what: &str,
        spec_matches: impl Fn(&Spec) -> bool,
    ) -> Verdict {
        let matches = |r: &&Rule| r.applies_to(tool) && (r.is_bare() || spec_matches(&r.spec));
        if let Some(rule) = self.deny.iter().find(matches) {
            return Verdict::Deny(format!("denied by rule `{}`: {what}", rule.text));
        }
        if let Some(rule) = self.ask.iter().find(matches) {
            return Verdict::Ask(format!("rule `{}` asks for approval: {what}", rule.text));
        }
        if self.allow.iter().any(|r| matches(&r)) {
            return Verdict::Allow;
        }
        Verdict::Ask(format!("no rule allows {what}"))
    }

    fn decide_exec(&self, args: &Value) -> Verdict {
        let Some(line) = args.get("command").and_then(Value::as_str) else {
            return self.decide_single("exec", "exec (no `command` argument)", |_| false);
        };
        let shown = short(line);
        let commands = match shell::split(line) {
            Ok(commands) => commands,
            Err(why) => {
                // Bare rules still apply; a deny pattern is tried against the
                // whole line, words normalised.
                let whole = line.split_whitespace().collect::<Vec<_>>().join(" ");
                let what = format!("exec `{shown}`");
                let verdict = self.decide_single("exec", &what, |spec| match spec {
                    Spec::Command(p) => p.matches(&whole),
                    _ => false,
                });
                return match verdict {
                    Verdict::Deny(reason) => Verdict::Deny(reason),
                    Verdict::Ask(prompt) if !prompt.starts_with("no rule allows") => {
                        Verdict::Ask(prompt)
                    }
                    // Only a bare `exec` allow covers a line that cannot be
                    // split: a pattern could be fooled.
                    _ if self
                        .allow
                        .iter()
                        .any(|r| r.applies_to("exec") && r.is_bare()) =>
                    {
                        Verdict::Allow
                    }
                    _ => Verdict::Ask(format!(
                        "cannot check exec `{shown}` part by part ({why}); approve only if the \
                         whole command line is fine"
                    )),
                };
            }
        };
        let several = commands.len() > 1;
        let bare_allow = self
            .allow
            .iter()
            .any(|r| r.applies_to("exec") && r.is_bare());
        let mut first_ask: Option<String> = None;
        for command in &commands {
            let text = command.text();
            let what = if several {
                format!("`{}` (in exec `{shown}`)", short(&text))
            } else {
                format!("exec `{}`", short(&text))
            };
            let mut verdict = self.decide_single("exec", &what, |spec| match spec {
                Spec::Command(p) => p.matches(&text),
                _ => false,
            });
            if let (Verdict::Allow, false) = (&verdict, bare_allow) {
                if let Some(program) = command.computed_program() {
                    // A pattern cannot tell what a computed program name runs.
                    verdict = Verdict::Ask(format!(
                        "cannot tell which program {what} runs (`{}` is computed); approve \
                         only if the whole command line is fine",
                        short(program)
                    ));
                } else if let Some(doubt) = &command.doubt {
                    verdict = Verdict::Ask(format!(
                        "cannot check {what} with confidence ({doubt}); approve only if the \
                         whole command line is fine"
                    ));
                }
            }
            match verdict {
                deny @ Verdict::Deny(_) => return deny,
                Verdict::Ask(prompt) => {
                    // A rule's `ask` is more telling than "no rule allows".
                    let from_rule = !prompt.starts_with("no rule allows");
                    match &first_ask {
                        None => first_ask = Some(prompt),
                        Some(p) if from_rule && p.starts_with("no rule allows") => {
                            first_ask = Some(prompt)
                        }
                        Some(_) => {}
                    }
                }
                Verdict::Allow => {}
            }
        }
        match first_ask {
            Some(prompt) => Verdict::Ask(prompt),
            None => Verdict::Allow,
        }
    }
}

/// At most 200 characters of `text`, on one line.
fn short(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= 200 {
        one_line
    } else {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(allow: &[&str], ask: &[&str], deny: &[&str]) -> Rules {
        Rules::from_lists(allow, ask, deny).unwrap()
    }

    fn exec(r: &Rules, command: &str) -> Verdict {
        r.decide("exec", &json!({ "command": command }).to_string(), "{}")
    }

    fn file(r: &Rules, tool: &str, path: &str) -> Verdict {
        r.decide(tool, &json!({ "path": path }).to_string(), "{}")
    }

    fn is_ask(v: &Verdict) -> bool {
        matches!(v, Verdict::Ask(_))
    }

    fn is_deny(v: &Verdict) -> bool {
        matches!(v, Verdict::Deny(_))
    }

    #[test]
    fn parses_rules() {
        for ok in [
            "read",
            "read_file",
            "*",
            "read(src/**)",
            " write( docs/** ) ",
            "exec(cargo test *)",
            "exec(cargo test:*)",
            "http_get(domain:docs.rs)",
            "http(domain:*.rust-lang.org)",
            "my_custom_tool",
            "search(src/**)",
            "list(.)",
        ] {
            Rule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("", "no tool name"),
            ("(x)", "no tool name"),
            ("read(src/**", "closing"),
            ("read()", "empty specifier"),
            ("*(x)", "no specifier"),
            ("re*d", "wildcards"),
            ("read file", "not a tool name"),
            ("http_get(docs.rs)", "domain:"),
            ("http_get(domain:a/b)", "not a host"),
            ("custom(x)", "takes no specifier"),
        ] {
            let err = Rule::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(
            Rule::parse("read(src/**)").unwrap().tool.as_deref(),
            Some("read_file")
        );
        assert_eq!(
            Rule::parse("http").unwrap().tool.as_deref(),
            Some("http_get")
        );
    }

    #[test]
    fn config_json() {
        let r = Rules::parse(r#"{"allow": ["read(src/**)"], "deny": ["exec"]}"#).unwrap();
        assert_eq!(file(&r, "read_file", "src/a.rs"), Verdict::Allow);
        assert!(Rules::parse("").unwrap().allow.is_empty());
        assert!(Rules::parse("null").unwrap().deny.is_empty());
        assert!(Rules::parse("{}").is_ok());
        assert!(Rules::parse(r#"{"alow": []}"#)
            .unwrap_err()
            .contains("alow"));
        assert!(Rules::parse(r#"{"allow": "read"}"#).is_err());
        assert!(Rules::parse(r#"{"allow": ["read("]}"#).is_err());
    }

    #[test]
    fn file_rules() {
        let r = rules(
            &["read(src/**)", "write(docs/**)", "list", "search(src/**)"],
            &["edit(src/**)"],
            &["read(src/secrets/**)", "write(docs/private.md)"],
        );
        assert_eq!(file(&r, "read_file", "src/a.rs"), Verdict::Allow);
        assert_eq!(file(&r, "read", "./src/x/y.rs"), Verdict::Allow);
        assert_eq!(file(&r, "write_file", "docs/review.md"), Verdict::Allow);
        assert_eq!(file(&r, "list_dir", "/anywhere"), Verdict::Allow);
        assert_eq!(
            r.decide("list_dir", "{}", "{}"),
            Verdict::Allow,
            "bare list allows the default path too"
        );
        // Deny before allow, with the rule named.
        assert_eq!(
            file(&r, "read_file", "src/secrets/key"),
            Verdict::Deny(
                "denied by rule `read(src/secrets/**)`: read_file `src/secrets/key`".into()
            )
        );
        assert!(is_deny(&file(&r, "write_file", "docs/./private.md")));
        // Ask rules, named.
        assert_eq!(
            file(&r, "edit_file", "src/lib.rs"),
            Verdict::Ask("rule `edit(src/**)` asks for approval: edit_file `src/lib.rs`".into())
        );
        // Unmatched: ask.
        assert_eq!(
            file(&r, "write_file", "src/lib.rs"),
            Verdict::Ask("no rule allows write_file `src/lib.rs`".into())
        );
        assert!(is_ask(&file(&r, "read_file", "README.md")));
        // Climbing out never matches a relative glob.
        assert!(is_ask(&file(&r, "read_file", "src/../../etc/passwd")));
        assert!(is_ask(&file(&r, "read_file", "/etc/passwd")));
        // ... and `..` inside is folded: src/../src/secrets is still denied.
        assert!(is_deny(&file(&r, "read_file", "src/../src/secrets/k")));
        // search without a path covers every grant: no glob matches it.
        assert_eq!(
            r.decide("search", r#"{"pattern": "x"}"#, "{}"),
            Verdict::Ask("no rule allows search (no `path` argument)".into())
        );
        let everywhere = rules(&["search(**)"], &[], &[]);
        assert!(is_ask(&everywhere.decide(
            "search",
            r#"{"pattern": "x"}"#,
            "{}"
        )));
        let bare = rules(&["search"], &[], &[]);
        assert_eq!(
            bare.decide("search", r#"{"pattern": "x"}"#, "{}"),
            Verdict::Allow
        );
        assert_eq!(
            r.decide("search", r#"{"pattern": "x", "path": "src"}"#, "{}"),
            Verdict::Allow
        );
        // Missing path: specifier rules cannot match.
        assert_eq!(
            r.decide("read_file", "{}", "{}"),
            Verdict::Ask("no rule allows read_file (no `path` argument)".into())
        );
        assert!(is_ask(&r.decide("read_file", "not json", "{}")));
    }

    #[test]
    fn absolute_paths_under_the_workdir() {
        let r = rules(&["read(src/**)"], &[], &["read(src/secrets/**)"]);
        let grants = r#"{"workdir": "/home/u/wf", "files": []}"#;
        let call = |p: &str| r.decide("read_file", &json!({ "path": p }).to_string(), grants);
        assert_eq!(call("/home/u/wf/src/a.rs"), Verdict::Allow);
        assert!(is_deny(&call("/home/u/wf/src/secrets/a")));
        assert!(is_ask(&call("/home/u/other/src/a.rs")));
        assert!(is_ask(&call("/home/u/wf/../wf2/src/a")));
    }

    #[test]
    fn exec_rules_check_every_part() {
        let r = rules(&["exec(cargo test *)", "exec(git status)"], &[], &[]);
        assert_eq!(exec(&r, "cargo test -p x"), Verdict::Allow);
        assert_eq!(exec(&r, "cargo test"), Verdict::Allow);
        assert_eq!(exec(&r, "cargo test 2>&1 | cargo test -q"), Verdict::Allow);
        assert_eq!(
            exec(&r, "cargo test && rm -rf x"),
            Verdict::Ask("no rule allows `rm -rf x` (in exec `cargo test && rm -rf x`)".into())
        );
        assert_eq!(
            exec(&r, "rm -rf x"),
            Verdict::Ask("no rule allows exec `rm -rf x`".into())
        );
        for sneaky in [
            "cargo test; rm -rf x",
            "cargo test || rm -rf x",
            "cargo test | sh",
            "cargo test\nrm -rf x",
            "cargo test `rm -rf x`",
            "cargo test $(rm -rf x)",
            "cargo test \"$(rm -rf x)\"",
            "cargo test & rm -rf x",
            "(rm -rf x) && cargo test",
            "cargo test > src/main.rs",
            "cargo test <<EOF\nx\nEOF",
            "cargo test 'unbalanced",
            "cargo testing",
            "git status -s",
        ] {
            assert!(
                is_ask(&exec(&r, sneaky)),
                "{sneaky}: {:?}",
                exec(&r, sneaky)
            );
        }
        assert!(is_ask(&r.decide("exec", "{}", "{}")));
    }

    #[test]
    fn exec_lines_are_read_as_sh_reads_them() {
        let r = rules(&["exec(ls *)", "exec(git *)", "exec(date)"], &[], &[]);
        // Comments end at the newline whatever they hold; `&>` is `&` `>`.
        assert_eq!(
            exec(&r, "ls #'\nrm x\n#'"),
            Verdict::Ask("no rule allows `rm x` (in exec `ls #' rm x #'`)".into())
        );
        assert!(is_ask(&exec(&r, "ls &>/dev/null rm x")));
        assert_eq!(exec(&r, "ls -l # just a comment"), Verdict::Allow);
        // `*` does not match a newline inside a word.
        assert!(is_ask(&exec(&r, "ls 'a\nb'")));
        // Commands in doubt are asked about even when every part matches.
        for doubtful in [
            "git commit -m \"$(date)\"",
            "ls `date`",
            "if ls; then ls; fi",
            "exec ls",
        ] {
            let verdict = exec(&r, doubtful);
            match &verdict {
                Verdict::Ask(p) => assert!(p.contains("with confidence"), "{doubtful}: {p}"),
                other => panic!("{doubtful}: {other:?}"),
            }
        }
        assert!(is_ask(&exec(&r, "eval ls")));
        // Deny rules still see commands in doubt.
        let deny = rules(&["exec"], &[], &["exec(rm *)"]);
        for hidden in [
            "ls #'\nrm x\n#'",
            "ls &>/dev/null rm x",
            "if ls; then rm x; fi",
            "exec rm x",
            "ls $(rm x)",
        ] {
            assert!(is_deny(&exec(&deny, hidden)), "{hidden}");
        }
    }

    #[test]
    fn exec_deny_wins_over_every_allow() {
        let r = rules(
            &["exec(cargo *)", "exec(*)"],
            &["exec(git push *)"],
            &["exec(rm *)"],
        );
        assert_eq!(
            exec(&r, "cargo test && rm -rf x"),
            Verdict::Deny(
                "denied by rule `exec(rm *)`: `rm -rf x` (in exec `cargo test && rm -rf x`)".into()
            )
        );
        assert!(is_deny(&exec(&r, "rm -rf x")));
        // Quoting and escaping do not hide the program.
        assert!(is_deny(&exec(&r, "\"rm\" -rf x")));
        assert!(is_deny(&exec(&r, "r\\m -rf x")));
        assert!(is_deny(&exec(&r, "echo $(rm -rf x)")));
        assert!(is_deny(&exec(&r, "echo ok; `rm -rf x`")));
        // A deny pattern also applies to a line that cannot be split.
        assert!(is_deny(&exec(&r, "rm -rf x > out")));
        // Ask rules ask (the ask beats "no rule allows").
        assert_eq!(
            exec(&r, "git push origin main"),
            Verdict::Ask(
                "rule `exec(git push *)` asks for approval: exec `git push origin main`".into()
            )
        );
        assert!(is_ask(&exec(&r, "cargo build && git push")));
        // `exec(*)` allows anything splittable and not denied...
        assert_eq!(exec(&r, "ls -la | wc -l"), Verdict::Allow);
        // ... but an unparseable line needs a bare `exec` allow.
        assert!(is_ask(&exec(&r, "cat <<EOF\nx\nEOF")));
        assert!(is_ask(&exec(&r, "$CMD -rf x")));
        assert!(is_ask(&exec(&r, "ls; $(echo rm) -rf x")));
        assert!(is_ask(&exec(&r, "{ ls; }")));
        let bare = rules(&["exec"], &[], &["exec(rm *)"]);
        assert_eq!(exec(&bare, "$CMD -rf x"), Verdict::Allow);
        assert_eq!(exec(&bare, "cat <<EOF\nx\nEOF"), Verdict::Allow);
        assert!(is_deny(&exec(&bare, "ls && rm x")));
    }

    #[test]
    fn bare_and_wildcard_tool_rules() {
        let r = rules(&["*"], &[], &["exec"]);
        assert!(is_deny(&exec(&r, "ls")));
        assert!(is_deny(&exec(&r, "cat <<EOF")));
        assert_eq!(file(&r, "write_file", "anything"), Verdict::Allow);
        assert_eq!(r.decide("custom_tool", "{}", "{}"), Verdict::Allow);
        let r = rules(&["custom_tool"], &[], &[]);
        assert_eq!(r.decide("custom_tool", "{}", "{}"), Verdict::Allow);
        assert_eq!(
            r.decide("other_tool", "{}", "{}"),
            Verdict::Ask("no rule allows tool `other_tool`".into())
        );
        let none = Rules::default();
        assert!(is_ask(&file(&none, "read_file", "a")));
        assert!(is_ask(&exec(&none, "ls")));
    }

    #[test]
    fn http_rules() {
        let r = rules(
            &["http_get(domain:docs.rs)", "http(domain:*.rust-lang.org)"],
            &[],
            &["http_get(domain:evil.com)"],
        );
        let get = |url: &str| r.decide("http_get", &json!({ "url": url }).to_string(), "{}");
        assert_eq!(get("https://docs.rs/serde/latest"), Verdict::Allow);
        assert_eq!(get("https://doc.rust-lang.org/std"), Verdict::Allow);
        assert!(is_ask(&get("https://rust-lang.org/")));
        assert!(is_ask(&get("https://api.docs.rs/")));
        assert!(is_ask(&get("https://notdocs.rs/")));
        assert!(is_deny(&get("https://docs.rs@evil.com/")));
        assert!(is_deny(&get("http://EVIL.com:8080/x")));
        assert!(is_ask(&get("file:///etc/passwd")));
        assert!(is_ask(&r.decide("http_get", "{}", "{}")));
    }

    #[test]
    fn messages_are_one_line_and_short() {
        let r = Rules::default();
        let long = format!("echo {}", "a".repeat(500));
        match exec(&r, &long) {
            Verdict::Ask(p) => assert!(p.chars().count() < 260, "{p}"),
            v => panic!("{v:?}"),
        }
        match exec(&r, "ls\ncat <<EOF") {
            Verdict::Ask(p) => assert!(!p.contains('\n'), "{p}"),
            v => panic!("{v:?}"),
        }
    }
}
