//! The policy chain: every tool call is checked, before any effect, by
//!
//! 1. the agent's `tools` list: a tool it does not list is denied;
//! 2. the step's grants: a file outside the `files` grants (or a write to a
//!    read-only one), `exec` without the `sh` grant, `http_get` of a host no
//!    `network` grant covers are denied, whatever a policy says;
//! 3. the agent's `policy` entries, in order: `rules:` runs the built-in
//!    `rules-policy` component with the rules as its config; `plugin:
//!    path.wasm` runs that `tool-policy` component with `config`. The first
//!    `deny` wins; otherwise any `ask` makes the call wait for a person;
//!    otherwise it is allowed.
//!
//! Policies see the call with its `path` argument normalised (relative to
//! the workflow's directory when inside it, `..` and `.` resolved), so a
//! rule on `secrets/**` cannot be dodged with `src/../secrets/x`.
//!
//! Policy components run in the process's one wasmtime engine (shared with
//! steps, `runtime::engine`): compiled once per process (and cached on
//! disk, through the host's one component cache, `runtime::cache`), a
//! fresh store per decision, no WASI capabilities (an empty WASI context:
//! no files, environment variables or network), 64 MiB of memory and two
//! seconds of computing per decision. A policy that fails to load, traps or
//! runs out of time denies the call (fail closed), saying so.

mod component;

use std::path::Path;

use serde_json::{json, Value};

use super::tools::{Call, ToolDef, ToolEnv};
use crate::workflow::model::{Agent, PolicySpec};

pub use component::{check as check_component, ComponentPolicy};

/// Name of the built-in component behind `rules:` entries.
pub const RULES_POLICY: &str = "rules-policy";

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it happen (later policies may still deny or ask).
    Allow,
    /// Refuse it, with the reason for the model.
    Deny(String),
    /// Hold it for a person, with the question for them.
    Ask(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny(_) => "deny",
            Verdict::Ask(_) => "ask",
        }
    }
}

/// What a policy decides on.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The agent's id.
    pub agent: String,
    /// The tool's name (`read_file`, `exec` ...).
    pub tool: String,
    /// Its arguments (JSON text, `path` normalised).
    pub arguments: String,
    /// The step's effective grants (JSON text).
    pub grants: String,
}

/// One entry of an agent's policy chain.
pub trait Policy: Send + Sync {
    /// Who decided, for the audit: `rules`, `plugin policies/x.wasm`.
    fn label(&self) -> String;
    /// Decide (blocking: runs wasm). An error denies the call.
    fn decide(&self, request: &PolicyRequest) -> Result<Verdict, String>;
}

/// The chain's outcome for one call.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What happens to the call.
    pub verdict: Verdict,
    /// Who decided: `tools list`, `grants`, a policy's label, `default`.
    pub decided_by: String,
    /// Every answer, in order, for the audit.
    pub trail: Vec<Value>,
}

impl Outcome {
    pub(crate) fn single(verdict: Verdict, by: &str) -> Outcome {
        let trail = vec![trail_entry(by, &verdict)];
        Outcome {
            verdict,
            decided_by: by.to_string(),
            trail,
        }
    }

    /// The audit event's data.
    pub fn to_json(&self) -> Value {
        let (reason, prompt) = match &self.verdict {
            Verdict::Allow => (None, None),
            Verdict::Deny(reason) => (Some(reason.as_str()), None),
            Verdict::Ask(prompt) => (None, Some(prompt.as_str())),
        };
        json!({
            "decision": self.verdict.word(),
            "decided_by": self.decided_by,
            "reason": reason,
            "prompt": prompt,
            "trail": self.trail,
        })
    }
}

fn trail_entry(by: &str, verdict: &Verdict) -> Value {
    match verdict {
        Verdict::Allow => json!({ "by": by, "decision": "allow" }),
        Verdict::Deny(reason) => json!({ "by": by, "decision": "deny", "reason": reason }),
        Verdict::Ask(prompt) => json!({ "by": by, "decision": "ask", "prompt": prompt }),
    }
}

/// An agent's tool list and policies.
pub struct Chain {
    agent_id: String,
    listed: Vec<&'static ToolDef>,
    policies: Vec<Box<dyn Policy>>,
}

impl Chain {
    /// The chain of `agent`; plugin paths resolve against `workdir`. A
    /// plugin file that cannot be read is an error now (the attempt fails
    /// with it) rather than at the first call.
    pub fn for_agent(agent: &Agent, workdir: &Path) -> Result<Chain, String> {
        let mut policies: Vec<Box<dyn Policy>> = Vec::new();
        for (index, spec) in agent.policy.iter().enumerate() {
            policies.push(policy_from_spec(agent, index, spec, workdir)?);
        }
        Ok(Chain::new(agent, policies))
    }

    /// A chain with the given policies (tests, embedders).
    pub fn new(agent: &Agent, policies: Vec<Box<dyn Policy>>) -> Chain {
        let mut listed: Vec<&'static ToolDef> = Vec::new();
        for name in &agent.tools {
            if let Some(tool) = super::tools::lookup(name) {
                if !listed.iter().any(|t| t.name == tool.name) {
                    listed.push(tool);
                }
            }
        }
        Chain {
            agent_id: agent.id.clone(),
            listed,
            policies,
        }
    }

    /// Step 1: the tool must be known and in the agent's list.
    pub fn check_listed(&self, name: &str) -> Result<&'static ToolDef, Outcome> {
        let names: Vec<&str> = self.listed.iter().map(|t| t.name).collect();
        match super::tools::lookup(name) {
            Some(tool) if self.listed.iter().any(|t| t.name == tool.name) => Ok(tool),
            Some(_) => Err(Outcome::single(
                Verdict::Deny(format!(
                    "tool '{name}' is not in agent '{}''s tools (add it to agents[].tools)",
                    self.agent_id
                )),
                "tools list",
            )),
            None => Err(Outcome::single(
                Verdict::Deny(format!(
                    "unknown tool '{name}': agent '{}' may use {}",
                    self.agent_id,
                    if names.is_empty() {
                        "no tools".to_string()
                    } else {
                        names.join(", ")
                    }
                )),
                "tools list",
            )),
        }
    }

    /// Steps 2 and 3, for a listed tool whose arguments parsed (blocking:
    /// policies run wasm).
    pub fn decide(&self, env: &ToolEnv, call: &Call, request: &PolicyRequest) -> Outcome {
        if let Err(reason) = env.check_grants(call) {
            return Outcome::single(Verdict::Deny(reason), "grants");
        }
        let mut trail = vec![
            json!({ "by": "tools list", "decision": "allow" }),
            json!({ "by": "grants", "decision": "allow" }),
        ];
        let mut ask: Option<(String, String)> = None;
        for policy in &self.policies {
            let label = policy.label();
            let verdict = policy.decide(request).unwrap_or_else(|error| {
                Verdict::Deny(format!(
                    "policy {label} could not decide, so the call is refused: {error}"
                ))
            });
            trail.push(trail_entry(&label, &verdict));
            match verdict {
                Verdict::Deny(reason) => {
                    return Outcome {
                        verdict: Verdict::Deny(reason),
                        decided_by: label,
                        trail,
                    }
                }
                Verdict::Ask(prompt) => {
                    ask.get_or_insert((label, prompt));
                }
                Verdict::Allow => {}
            }
        }
        match ask {
            Some((label, prompt)) => Outcome {
                verdict: Verdict::Ask(prompt),
                decided_by: label,
                trail,
            },
            None => Outcome {
                verdict: Verdict::Allow,
                decided_by: if self.policies.is_empty() {
                    "grants (no policies)".to_string()
                } else {
                    "every policy".to_string()
                },
                trail,
            },
        }
    }
}

fn policy_from_spec(
    agent: &Agent,
    index: usize,
    spec: &PolicySpec,
    workdir: &Path,
) -> Result<Box<dyn Policy>, String> {
    let place = format!("agent '{}' policy #{}", agent.id, index + 1);
    match (&spec.rules, &spec.plugin) {
        (Some(rules), None) => {
            let config = serde_json::to_string(rules).unwrap_or_else(|_| "{}".to_string());
            Ok(Box::new(ComponentPolicy::builtin(
                RULES_POLICY,
                "rules",
                config,
            )))
        }
        (None, Some(path)) => {
            let full = workdir.join(path);
            let bytes = std::fs::read(&full).map_err(|e| {
                format!(
                    "{place}: cannot read policy plugin '{}': {e}",
                    full.display()
                )
            })?;
            let config = spec
                .config
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".to_string());
            Ok(Box::new(ComponentPolicy::from_bytes(
                format!("plugin {path}"),
                bytes.into(),
                config,
            )))
        }
        (Some(_), Some(_)) => Err(format!("{place}: give `rules` or `plugin`, not both")),
        (None, None) => Err(format!("{place}: give `rules` or `plugin`")),
    }
}

/// The arguments as policies see them. For file tools `path` is the path
/// the call will really touch (the call's path, resolved by
/// [`ToolEnv::resolve_call`]: symlinks below the granted roots followed),
/// relative to the workflow's directory when it lies inside it; when what
/// the model wrote (normalised the same way) differs, it is in
/// `requested_path`.
pub fn policy_arguments(arguments: &Value, call: &Call, workdir: &Path) -> String {
    let mut arguments = arguments.clone();
    if let Some(touched) = call.path() {
        let shown = shown_path(touched, workdir);
        if let Some(Value::String(requested)) = arguments.get("path") {
            let requested = shown_path(requested, workdir);
            if requested != shown {
                arguments["requested_path"] = Value::String(requested);
            }
        }
        arguments["path"] = Value::String(shown);
    }
    arguments.to_string()
}

/// `path` normalised, relative to `workdir` when inside it (`.` for itself).
fn shown_path(path: &str, workdir: &Path) -> String {
    let absolute = crate::runtime::host_files::normalize(&workdir.join(path));
    match absolute.strip_prefix(workdir) {
        Ok(relative) if relative.as_os_str().is_empty() => ".".to_string(),
        Ok(relative) => relative.display().to_string(),
        Err(_) => absolute.display().to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::step::grants::ResolvedGrants;
    use crate::workflow::model::ModelSpec;

    /// A `tool-policy` component in WAT: denies tools starting with `w`
    /// (reason: its config), asks for tools starting with `e` (prompt: its
    /// config), allows the rest.
    /// [`TEST_POLICY_WAT`] compiled to a binary component.
    pub fn test_policy_wasm() -> Vec<u8> {
        wat::parse_str(TEST_POLICY_WAT).unwrap()
    }

    pub const TEST_POLICY_WAT: &str = r#"
(component
  (type $req' (record
    (field "run-id" string) (field "step-id" string) (field "agent" string)
    (field "tool" string) (field "arguments" string) (field "grants" string)
    (field "config" string)))
  (export $req "tool-call-request" (type $req'))
  (type $dec' (variant (case "allow") (case "deny" string) (case "ask" string)))
  (export $dec "decision" (type $dec'))
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.const 1)
          (i32.div_u (global.get $next) (i32.const 65536)))))))
      (local.get $p))
    (func (export "decide")
      (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (local $c i32)
      (local.set $c (i32.load8_u (local.get 6)))
      (if (i32.eq (local.get $c) (i32.const 119))
        (then
          (i32.store8 (i32.const 16) (i32.const 1))
          (i32.store (i32.const 20) (local.get 12))
          (i32.store (i32.const 24) (local.get 13))
          (return (i32.const 16))))
      (if (i32.eq (local.get $c) (i32.const 101))
        (then
          (i32.store8 (i32.const 16) (i32.const 2))
          (i32.store (i32.const 20) (local.get 12))
          (i32.store (i32.const 24) (local.get 13))
          (return (i32.const 16))))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "realloc" (core func $realloc))
  (alias core export $i "decide" (core func $decide_core))
  (func $decide (param "call" $req) (result $dec)
    (canon lift (core func $decide_core) (memory $mem) (realloc $realloc)))
  (export "decide" (func $decide))
)
"#;

    /// A policy answering the same for every call.
    pub struct Fixed(pub &'static str, pub Verdict);

    impl Policy for Fixed {
        fn label(&self) -> String {
            self.0.to_string()
        }
        fn decide(&self, _request: &PolicyRequest) -> Result<Verdict, String> {
            Ok(self.1.clone())
        }
    }

    pub fn agent(tools: &[&str]) -> Agent {
        Agent {
            id: "rev".into(),
            name: None,
            role: None,
            description: None,
            model: ModelSpec::Scripted {
                script: "s.yaml".into(),
            },
            system: None,
            tools: tools.iter().map(|t| t.to_string()).collect(),
            policy: vec![],
        }
    }

    fn request(tool: &str, arguments: &str) -> PolicyRequest {
        PolicyRequest {
            run_id: "r".into(),
            step_id: "s".into(),
            agent: "rev".into(),
            tool: tool.into(),
            arguments: arguments.into(),
            grants: "{}".into(),
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        env: ToolEnv,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("src")).unwrap();
        let grants = ResolvedGrants {
            files: vec![(base.join("src"), false)],
            ..ResolvedGrants::default()
        };
        let env = ToolEnv::new(grants, &base, base.join(".scratch"), ("r", "s", 1));
        Setup { _dir: dir, env }
    }

    fn read(path: &str) -> Call {
        Call::Read { path: path.into() }
    }

    #[test]
    fn a_tool_outside_the_list_is_denied_first() {
        let chain = Chain::new(
            &agent(&["read"]),
            vec![Box::new(Fixed("p", Verdict::Allow))],
        );
        assert_eq!(chain.check_listed("read_file").unwrap().name, "read_file");
        let out = chain.check_listed("write_file").unwrap_err();
        assert_eq!(
            out.verdict,
            Verdict::Deny(
                "tool 'write_file' is not in agent 'rev''s tools (add it to agents[].tools)".into()
            )
        );
        assert_eq!(out.decided_by, "tools list");
        let unknown = chain.check_listed("rm").unwrap_err();
        assert!(matches!(unknown.verdict, Verdict::Deny(m) if m.contains("may use read_file")));
    }

    #[test]
    fn grants_beat_an_allowing_policy() {
        let s = setup();
        let chain = Chain::new(
            &agent(&["read"]),
            vec![Box::new(Fixed("rules", Verdict::Allow))],
        );
        let out = chain.decide(&s.env, &read("/etc/passwd"), &request("read_file", "{}"));
        assert_eq!(out.decided_by, "grants");
        assert!(matches!(out.verdict, Verdict::Deny(m) if m.contains("no files grant")));
        let ok = chain.decide(&s.env, &read("src/a.rs"), &request("read_file", "{}"));
        assert_eq!(ok.verdict, Verdict::Allow);
        assert_eq!(ok.trail.len(), 3);
    }

    #[test]
    fn the_first_deny_wins_and_any_ask_asks() {
        let s = setup();
        let call = read("src/a.rs");
        let req = request("read_file", "{}");
        let chain = Chain::new(
            &agent(&["read"]),
            vec![
                Box::new(Fixed("one", Verdict::Ask("sure?".into()))),
                Box::new(Fixed("two", Verdict::Deny("no".into()))),
                Box::new(Fixed("three", Verdict::Deny("never".into()))),
            ],
        );
        let out = chain.decide(&s.env, &call, &req);
        assert_eq!(out.verdict, Verdict::Deny("no".into()));
        assert_eq!(out.decided_by, "two");
        let chain = Chain::new(
            &agent(&["read"]),
            vec![
                Box::new(Fixed("one", Verdict::Allow)),
                Box::new(Fixed("two", Verdict::Ask("sure?".into()))),
                Box::new(Fixed("three", Verdict::Allow)),
            ],
        );
        let out = chain.decide(&s.env, &call, &req);
        assert_eq!(out.verdict, Verdict::Ask("sure?".into()));
        assert_eq!(out.decided_by, "two");
        assert_eq!(out.to_json()["trail"].as_array().unwrap().len(), 5);
        let chain = Chain::new(&agent(&["read"]), vec![]);
        assert_eq!(chain.decide(&s.env, &call, &req).verdict, Verdict::Allow);
    }

    #[test]
    fn a_policy_component_decides() {
        let s = setup();
        let policy = ComponentPolicy::from_bytes(
            "plugin test.wat".into(),
            test_policy_wasm().into(),
            "because config says so".into(),
        );
        assert_eq!(
            policy.decide(&request("read_file", "{}")).unwrap(),
            Verdict::Allow
        );
        assert_eq!(
            policy.decide(&request("write_file", "{}")).unwrap(),
            Verdict::Deny("because config says so".into())
        );
        assert_eq!(
            policy.decide(&request("exec", "{}")).unwrap(),
            Verdict::Ask("because config says so".into())
        );
        let chain = Chain::new(&agent(&["read"]), vec![Box::new(policy)]);
        let out = chain.decide(&s.env, &read("src/a.rs"), &request("read_file", "{}"));
        assert_eq!(out.verdict, Verdict::Allow);
        assert_eq!(out.decided_by, "every policy");
    }

    #[test]
    fn a_broken_policy_denies() {
        let s = setup();
        let broken = ComponentPolicy::from_bytes(
            "plugin bad.wasm".into(),
            b"\0asm junk".to_vec().into(),
            "{}".into(),
        );
        let chain = Chain::new(&agent(&["read"]), vec![Box::new(broken)]);
        let out = chain.decide(&s.env, &read("src/a.rs"), &request("read_file", "{}"));
        assert_eq!(out.decided_by, "plugin bad.wasm");
        assert!(matches!(out.verdict, Verdict::Deny(m) if m.contains("could not decide")));
    }

    #[test]
    fn rules_use_the_builtin_component() {
        let s = setup();
        let mut with_rules = agent(&["read"]);
        with_rules.policy = vec![PolicySpec {
            rules: Some(crate::workflow::model::Rules {
                allow: vec!["read(src/**)".into()],
                ask: vec![],
                deny: vec!["read(src/secret*)".into()],
            }),
            plugin: None,
            config: None,
        }];
        let chain = Chain::for_agent(&with_rules, Path::new("/")).unwrap();
        let decide = |path: &str| {
            let arguments = policy_arguments(&json!({ "path": path }), &read(path), &s.env.workdir);
            chain.decide(&s.env, &read(path), &request("read_file", &arguments))
        };
        if crate::step::builtin::builtin(RULES_POLICY).is_none() {
            // Not embedded in this build yet: the chain fails closed.
            let out = decide("src/a.rs");
            assert!(
                matches!(out.verdict, Verdict::Deny(m) if m.contains("not part of this wfhost build"))
            );
            return;
        }
        assert_eq!(decide("src/a.rs").verdict, Verdict::Allow);
        let denied = decide("src/secret.txt");
        assert_eq!(denied.decided_by, "rules");
        assert!(matches!(denied.verdict, Verdict::Deny(m) if m.contains("read(src/secret*)")));
        assert!(matches!(
            decide("./src/../src/secret.txt").verdict,
            Verdict::Deny(_)
        ));
        // A path outside the grants is denied even though a rule allows it.
        let mut open_rules = with_rules.clone();
        open_rules.policy[0].rules.as_mut().unwrap().allow = vec!["read".into()];
        let chain = Chain::for_agent(&open_rules, Path::new("/")).unwrap();
        let out = chain.decide(
            &s.env,
            &read("/etc/passwd"),
            &request("read_file", r#"{"path":"/etc/passwd"}"#),
        );
        assert_eq!(out.decided_by, "grants");
    }

    #[test]
    fn exec_rules_check_every_part_of_a_command_line() {
        if crate::step::builtin::builtin(RULES_POLICY).is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let grants = ResolvedGrants {
            exec: vec![crate::step::grants::ExecGrant {
                name: "sh".into(),
                path: crate::step::grants::resolve_program("sh").unwrap(),
            }],
            ..ResolvedGrants::default()
        };
        let env = ToolEnv::new(grants, dir.path(), dir.path().join("s"), ("r", "s", 1));
        let mut with_rules = agent(&["exec"]);
        with_rules.policy = vec![PolicySpec {
            rules: Some(crate::workflow::model::Rules {
                allow: vec!["exec(cargo test *)".into()],
                ask: vec!["exec(git push *)".into()],
                deny: vec!["exec(rm *)".into()],
            }),
            plugin: None,
            config: None,
        }];
        let chain = Chain::for_agent(&with_rules, dir.path()).unwrap();
        let decide = |command: &str| {
            let arguments = json!({ "command": command }).to_string();
            chain
                .decide(
                    &env,
                    &Call::Exec {
                        command: command.into(),
                    },
                    &request("exec", &arguments),
                )
                .verdict
        };
        assert_eq!(decide("cargo test -p x"), Verdict::Allow);
        assert!(matches!(decide("cargo test && rm -rf x"), Verdict::Deny(_)));
        assert!(matches!(decide("git push origin main"), Verdict::Ask(_)));
        assert!(matches!(decide("cargo test; curl x"), Verdict::Ask(_)));
        // Without the `sh` grant the grants refuse before any rule.
        let bare = ToolEnv::new(
            ResolvedGrants::default(),
            dir.path(),
            dir.path().join("s"),
            ("r", "s", 1),
        );
        let out = chain.decide(
            &bare,
            &Call::Exec {
                command: "cargo test".into(),
            },
            &request("exec", r#"{"command":"cargo test"}"#),
        );
        assert_eq!(out.decided_by, "grants");
    }

    #[test]
    fn plugin_paths_are_read_up_front() {
        let mut bad = agent(&["read"]);
        bad.policy = vec![PolicySpec {
            rules: None,
            plugin: Some("missing.wasm".into()),
            config: None,
        }];
        let error = Chain::for_agent(&bad, Path::new("/nonexistent"))
            .err()
            .unwrap();
        assert!(
            error.contains("policy #1") && error.contains("missing.wasm"),
            "{error}"
        );
    }

    #[test]
    fn policies_see_normalised_paths() {
        let workdir = Path::new("/w");
        let shown = |path: &str| policy_arguments(&json!({ "path": path }), &read(path), workdir);
        assert_eq!(shown("./src/../secrets/k"), r#"{"path":"secrets/k"}"#);
        assert_eq!(shown("/etc/../etc/passwd"), r#"{"path":"/etc/passwd"}"#);
        assert_eq!(shown("."), r#"{"path":"."}"#);
        assert_eq!(
            policy_arguments(
                &json!({"command": "ls"}),
                &Call::Exec {
                    command: "ls".into()
                },
                workdir
            ),
            r#"{"command":"ls"}"#
        );
        // The resolved path is what policies match; the request is kept.
        assert_eq!(
            policy_arguments(
                &json!({"path": "docs/link/x"}),
                &read("/w/elsewhere/x"),
                workdir
            ),
            r#"{"path":"elsewhere/x","requested_path":"docs/link/x"}"#
        );
        assert_eq!(
            policy_arguments(&json!({}), &Call::List { path: "/w".into() }, workdir),
            r#"{"path":"."}"#
        );
    }
}
