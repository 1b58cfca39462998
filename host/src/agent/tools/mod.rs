//! The built-in tools an agent may use, each with a JSON Schema for the
//! model. Everything they touch is confined by the step's grants:
//!
//! - Files (`read_file`, `write_file`, `edit_file`, `list_dir`, `search`)
//!   go through [`GrantedFiles`]: cap-std roots that are the step's own
//!   `files` grants, so a path outside them is refused whatever a policy
//!   says, `..` cannot climb out and symlinks cannot lead out. Relative
//!   paths are relative to the workflow's directory.
//! - `exec` runs a command line as `sh -c <command>` in the OS sandbox of
//!   started programs (`runtime::process`), so it needs the step to be
//!   allowed to start `sh` (`grants: { exec: [sh] }`); the command line
//!   can then use the programs the sandbox lets it see (system directories,
//!   the step's other `exec` programs, its `files` grants). It starts in
//!   the workflow's directory when a `files` grant covers it, else in the
//!   step's private directory. It stops after [`EXEC_TIMEOUT`]; output is
//!   capped; a non-zero exit is a `failed` result carrying the output.
//! - `http_get` fetches `http://` or `https://` URLs whose host and port a
//!   `network` grant covers. Redirects are not followed (the answer names
//!   the new location, which the agent may fetch if it is granted too);
//!   no proxy is used; the body is capped at [`HTTP_MAX_BODY`].
//!
//! The short names of an agent's `tools` list map to these: `read`,
//! `write`, `edit`, `list`, `search`, `exec`, `http`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

mod exec;
mod files;
mod http;

use crate::agent::record::truncate;
use crate::runtime::host_files::GrantedFiles;
use crate::step::bindings::model::ToolSpec;
use crate::step::bindings::tools::ToolError;
use crate::step::grants::{
    exec as exec_grant, files as files_grant, network as network_grant, ResolvedGrants,
};
use exec::exec;
use files::run_file_tool;
use http::{http_get, parse_url};

/// How long an `exec` command may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of each of stdout and stderr an `exec` result shows the model.
pub const EXEC_MAX_OUTPUT: usize = 64 * 1024;
/// Bytes of a file `read_file` reads and returns (the rest is not read).
pub const READ_MAX: usize = 256 * 1024;
/// The largest file `edit_file` reads and rewrites.
pub const EDIT_MAX: usize = 4 * 1024 * 1024;
/// Bytes of a body `http_get` returns.
pub const HTTP_MAX_BODY: usize = 1024 * 1024;
/// How long an `http_get` may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Matching lines `search` reports.
pub const SEARCH_MAX_MATCHES: usize = 200;
/// Files `search` looks at.
pub const SEARCH_MAX_FILES: usize = 5000;
/// Files larger than this are skipped by `search`.
pub const SEARCH_MAX_FILE: usize = 2 * 1024 * 1024;

pub use wfhost_tool_catalog::{lookup, ToolDef};

/// Specs of the tools an agent lists, in its order, each once; unknown
/// names are left out.
pub fn specs(listed: &[String]) -> Vec<ToolSpec> {
    let mut seen = Vec::new();
    for name in listed {
        if let Some(tool) = lookup(name) {
            if !seen.iter().any(|t: &&ToolDef| t.name == tool.name) {
                seen.push(tool);
            }
        }
    }
    seen.iter()
        .map(|tool| ToolSpec {
            name: tool.name.to_string(),
            description: tool.description.to_string(),
            parameters: tool.parameters.to_string(),
        })
        .collect()
}

/// A parsed tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `read_file`.
    Read {
        /// The file.
        path: String,
    },
    /// `write_file`.
    Write {
        /// The file.
        path: String,
        /// Its new content.
        content: String,
    },
    /// `edit_file`.
    Edit {
        /// The file.
        path: String,
        /// Text to replace.
        old: String,
        /// Replacement.
        new: String,
    },
    /// `list_dir`.
    List {
        /// The directory.
        path: String,
    },
    /// `search`.
    Search {
        /// Regular expression.
        pattern: String,
        /// Where to look (default: every readable grant).
        path: Option<String>,
    },
    /// `exec`.
    Exec {
        /// The command line.
        command: String,
    },
    /// `http_get`.
    HttpGet {
        /// The URL.
        url: String,
    },
}

impl Call {
    /// The file or directory a file tool touches (`None` for other tools
    /// and for a `search` of every granted directory).
    pub fn path(&self) -> Option<&str> {
        match self {
            Call::Read { path }
            | Call::Write { path, .. }
            | Call::Edit { path, .. }
            | Call::List { path } => Some(path),
            Call::Search { path, .. } => path.as_deref(),
            Call::Exec { .. } | Call::HttpGet { .. } => None,
        }
    }

    fn path_mut(&mut self) -> Option<&mut String> {
        match self {
            Call::Read { path }
            | Call::Write { path, .. }
            | Call::Edit { path, .. }
            | Call::List { path } => Some(path),
            Call::Search { path, .. } => path.as_mut(),
            Call::Exec { .. } | Call::HttpGet { .. } => None,
        }
    }
}

/// Parse the JSON arguments of a call to `tool` (its own name).
pub fn parse_call(tool: &ToolDef, arguments: &Value) -> Result<Call, String> {
    let Value::Object(map) = arguments else {
        return Err(format!(
            "{}: arguments must be a JSON object, not {arguments}",
            tool.name
        ));
    };
    let text = |key: &str| -> Result<String, String> {
        match map.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "{}: `{key}` must be a string, not {other}",
                tool.name
            )),
            None => Err(format!("{}: `{key}` (a string) is required", tool.name)),
        }
    };
    let optional = |key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => text(key).map(Some),
        }
    };
    Ok(match tool.name {
        "read_file" => Call::Read {
            path: text("path")?,
        },
        "write_file" => Call::Write {
            path: text("path")?,
            content: text("content")?,
        },
        "edit_file" => Call::Edit {
            path: text("path")?,
            old: text("old")?,
            new: text("new")?,
        },
        "list_dir" => Call::List {
            path: optional("path")?.unwrap_or_else(|| ".".to_string()),
        },
        "search" => Call::Search {
            pattern: text("pattern")?,
            path: optional("path")?,
        },
        "exec" => Call::Exec {
            command: text("command")?,
        },
        "http_get" => Call::HttpGet { url: text("url")? },
        other => return Err(format!("unknown tool '{other}'")),
    })
}

/// What tools need to know about the step they act for.
pub struct ToolEnv {
    /// The step's grants.
    pub grants: ResolvedGrants,
    /// The workflow's directory (relative paths resolve here).
    pub workdir: PathBuf,
    /// The granted directories, opened (or why they could not be).
    pub files: Result<GrantedFiles, String>,
    /// The step's scratch folder: its programs' private directory (`TMPDIR`).
    pub scratch_dir: PathBuf,
    /// Ids for the `WFHOST_*` variables of started programs.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The attempt.
    pub attempt: u32,
    /// How long `exec` commands may run.
    pub exec_timeout: Duration,
}

impl ToolEnv {
    /// An environment for a step with these grants.
    pub fn new(
        grants: ResolvedGrants,
        workdir: &Path,
        scratch_dir: PathBuf,
        ids: (&str, &str, u32),
    ) -> ToolEnv {
        let workdir = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
        let files = GrantedFiles::open(&grants, &workdir)
            .map_err(|e| format!("cannot open the step's granted directories: {e}"));
        ToolEnv {
            grants,
            workdir,
            files,
            scratch_dir,
            run_id: ids.0.to_string(),
            step_id: ids.1.to_string(),
            attempt: ids.2,
            exec_timeout: EXEC_TIMEOUT,
        }
    }

    /// The call with its path replaced by the absolute path it will really
    /// touch (symlinks below the granted roots followed, see
    /// [`GrantedFiles::resolve`]): what the grants and the policies check,
    /// and what the tool opens without following any symlink.
    pub fn resolve_call(&self, mut call: Call) -> Result<Call, String> {
        if let Some(path) = call.path_mut() {
            let files = self.files.as_ref().map_err(Clone::clone)?;
            let resolved = files.resolve(path).map_err(|e| e.to_string())?;
            *path = resolved.to_string_lossy().into_owned();
        }
        Ok(call)
    }

    fn absolute(&self, path: &str) -> PathBuf {
        crate::runtime::host_files::normalize(&self.workdir.join(path))
    }

    /// Check a file access against the `files` grants; the error names the
    /// grant line that would allow it.
    fn check_path(&self, tool: &str, path: &str, write: bool) -> Result<(), String> {
        files_grant::tool_check(&self.grants, tool, path, &self.absolute(path), write)
    }

    /// The `sh` this step may start, if any.
    fn shell(&self) -> Option<PathBuf> {
        exec_grant::granted_shell(&self.grants)
    }

    /// Check a call against the step's grants, before any effect.
    pub fn check_grants(&self, call: &Call) -> Result<(), String> {
        match call {
            Call::Read { path } => self.check_path("read_file", path, false),
            Call::List { path } => self.check_path("list_dir", path, false),
            Call::Write { path, .. } => self.check_path("write_file", path, true),
            Call::Edit { path, .. } => self.check_path("edit_file", path, true),
            Call::Search {
                path: Some(path), ..
            } => self.check_path("search", path, false),
            Call::Search { path: None, .. } => files_grant::search_check(&self.grants),
            Call::Exec { .. } => match self.shell() {
                Some(_) => Ok(()),
                None => Err(
                    "exec denied: it runs the command line with `sh -c`, and this step may not start `sh` (add grants: { exec: [sh] })"
                        .to_string(),
                ),
            },
            Call::HttpGet { url } => {
                let target = parse_url(url)?;
                network_grant::tool_check(&self.grants, url, &target.host, target.port)
            }
        }
    }
}

/// Run a call whose grants were checked. Files are accessed through
/// cap-std, which checks again (and refuses symlinks out of a root).
/// A program started by `exec` is stopped gracefully when `stop` fires.
pub async fn run(
    env: Arc<ToolEnv>,
    call: Call,
    stop: crate::step::stop::StopSignal,
) -> Result<String, ToolError> {
    match call {
        Call::Exec { command } => exec(&env, &command, stop).await,
        Call::HttpGet { url } => {
            let max =
                HTTP_MAX_BODY.min(usize::try_from(env.grants.max_output).unwrap_or(usize::MAX));
            tokio::task::spawn_blocking(move || http_get(&url, max))
                .await
                .unwrap_or_else(|e| Err(ToolError::Failed(format!("http_get did not finish: {e}"))))
        }
        other => tokio::task::spawn_blocking(move || run_file_tool(&env, other))
            .await
            .unwrap_or_else(|e| Err(ToolError::Failed(format!("tool did not finish: {e}")))),
    }
}

/// The arguments as canonical JSON text (what policies and approvals see).
pub fn canonical_arguments(arguments: &str) -> Result<(Value, String), String> {
    let value: Value = serde_json::from_str(arguments)
        .map_err(|e| format!("arguments are not JSON ({e}): {}", truncate(arguments, 200)))?;
    let text = value.to_string();
    Ok((value, text))
}

/// A JSON description of a call for audit events: arguments with long
/// strings (file contents) shortened.
pub fn audit_arguments(arguments: &Value) -> Value {
    match arguments {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), audit_arguments(v)))
                .collect(),
        ),
        Value::String(s) if s.len() > 2000 => json!(truncate(s, 2000)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::grants::{resolve_program, ExecGrant, NetworkGrant};

    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("src/inner")).unwrap();
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::fs::create_dir_all(base.join("private")).unwrap();
        std::fs::write(base.join("src/a.rs"), "fn main() {\n    todo!()\n}\n").unwrap();
        std::fs::write(base.join("src/inner/b.rs"), "// TODO: more\nlet x = 1;\n").unwrap();
        std::fs::write(base.join("private/secret.txt"), "TODO secret").unwrap();
        Fixture { _dir: dir, base }
    }

    fn env(fx: &Fixture, grants: ResolvedGrants) -> Arc<ToolEnv> {
        Arc::new(ToolEnv::new(
            grants,
            &fx.base,
            fx.base.join(".scratch"),
            ("run", "step", 1),
        ))
    }

    fn file_grants(fx: &Fixture) -> ResolvedGrants {
        ResolvedGrants {
            files: vec![(fx.base.join("src"), false), (fx.base.join("out"), true)],
            ..ResolvedGrants::default()
        }
    }

    fn call(name: &str, args: Value) -> Call {
        parse_call(lookup(name).unwrap(), &args).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Check the grants, then run: what an allowed call returns.
    fn invoke(env: &Arc<ToolEnv>, call: Call) -> Result<String, ToolError> {
        env.check_grants(&call).map_err(ToolError::Denied)?;
        rt().block_on(run(env.clone(), call, Default::default()))
    }

    #[test]
    fn names_and_specs() {
        assert_eq!(lookup("read").unwrap().name, "read_file");
        assert_eq!(lookup("http_get").unwrap().short, "http");
        assert!(lookup("rm").is_none());
        let specs = specs(&[
            "read".into(),
            "read_file".into(),
            "exec".into(),
            "bogus".into(),
        ]);
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["read_file", "exec"]);
        for tool in wfhost_tool_catalog::TOOLS {
            let schema: Value = serde_json::from_str(tool.parameters).unwrap();
            assert_eq!(schema["type"], "object", "{}", tool.name);
        }
    }

    #[test]
    fn arguments_are_checked() {
        let read = lookup("read_file").unwrap();
        assert!(parse_call(read, &json!({}))
            .unwrap_err()
            .contains("`path` (a string) is required"));
        assert!(parse_call(read, &json!({"path": 3}))
            .unwrap_err()
            .contains("must be a string"));
        assert!(parse_call(read, &json!([1]))
            .unwrap_err()
            .contains("JSON object"));
        assert_eq!(call("list", json!({})), Call::List { path: ".".into() });
    }

    #[test]
    fn file_tools_work_inside_the_grants() {
        let fx = fixture();
        let env = env(&fx, file_grants(&fx));
        let text = invoke(&env, call("read_file", json!({"path": "src/a.rs"}))).unwrap();
        assert!(text.contains("todo!()"));
        assert_eq!(
            invoke(&env, call("list_dir", json!({"path": "src"}))).unwrap(),
            "a.rs\ninner/"
        );
        invoke(
            &env,
            call(
                "write_file",
                json!({"path": "out/r.md", "content": "one two"}),
            ),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(fx.base.join("out/r.md")).unwrap(),
            "one two"
        );
        invoke(
            &env,
            call(
                "edit_file",
                json!({"path": "out/r.md", "old": "two", "new": "three"}),
            ),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(fx.base.join("out/r.md")).unwrap(),
            "one three"
        );
        std::fs::write(fx.base.join("out/twice.txt"), "a a").unwrap();
        let absent = invoke(
            &env,
            call(
                "edit_file",
                json!({"path": "out/r.md", "old": "zzz", "new": ""}),
            ),
        );
        assert!(matches!(absent, Err(ToolError::Failed(m)) if m.contains("does not occur")));
        let ambiguous = invoke(
            &env,
            call(
                "edit_file",
                json!({"path": "out/twice.txt", "old": "a", "new": "b"}),
            ),
        );
        assert!(matches!(ambiguous, Err(ToolError::Failed(m)) if m.contains("occurs 2 times")));
        let missing = invoke(&env, call("read_file", json!({"path": "src/nope.rs"})));
        assert!(matches!(missing, Err(ToolError::Failed(_))));
    }

    #[test]
    fn file_tools_outside_the_grants_are_denied() {
        let fx = fixture();
        let env = env(&fx, file_grants(&fx));
        for (tool, args) in [
            ("read_file", json!({"path": "private/secret.txt"})),
            ("read_file", json!({"path": "src/../private/secret.txt"})),
            ("read_file", json!({"path": "/etc/passwd"})),
            ("list_dir", json!({"path": "."})),
            ("search", json!({"pattern": "x", "path": "private"})),
        ] {
            let denied = invoke(&env, call(tool, args.clone()));
            assert!(
                matches!(&denied, Err(ToolError::Denied(m)) if m.contains("no files grant covers") && m.contains("access: read")),
                "{tool} {args}: {denied:?}"
            );
        }
        let read_only = invoke(
            &env,
            call("write_file", json!({"path": "src/a.rs", "content": ""})),
        );
        assert!(
            matches!(&read_only, Err(ToolError::Denied(m)) if m.contains("read-only") && m.contains("access: read-write")),
            "{read_only:?}"
        );
        let edit = invoke(
            &env,
            call(
                "edit_file",
                json!({"path": "src/a.rs", "old": "fn", "new": "x"}),
            ),
        );
        assert!(matches!(edit, Err(ToolError::Denied(_))));
        // A symlink inside a grant that leads out of it is refused by cap-std.
        std::os::unix::fs::symlink(fx.base.join("private/secret.txt"), fx.base.join("src/link"))
            .unwrap();
        let link = invoke(&env, call("read_file", json!({"path": "src/link"})));
        assert!(link.is_err() && !format!("{link:?}").contains("TODO secret"));
        let none = env_without_files(&fx);
        assert!(matches!(
            invoke(&none, call("search", json!({"pattern": "x"}))),
            Err(ToolError::Denied(m)) if m.contains("no files grant")
        ));
    }

    fn env_without_files(fx: &Fixture) -> Arc<ToolEnv> {
        env(fx, ResolvedGrants::default())
    }

    #[test]
    fn search_finds_lines_in_granted_files_only() {
        let fx = fixture();
        let env = env(&fx, file_grants(&fx));
        let found = invoke(&env, call("search", json!({"pattern": "(?i)todo"}))).unwrap();
        assert!(found.contains("src/a.rs:2:     todo!()"), "{found}");
        assert!(found.contains("src/inner/b.rs:1: // TODO: more"), "{found}");
        assert!(!found.contains("secret"), "{found}");
        let one = invoke(
            &env,
            call(
                "search",
                json!({"pattern": "let", "path": "src/inner/b.rs"}),
            ),
        )
        .unwrap();
        assert_eq!(one, "src/inner/b.rs:2: let x = 1;");
        assert_eq!(
            invoke(&env, call("search", json!({"pattern": "nothing-here"}))).unwrap(),
            "no matches"
        );
        let bad = invoke(&env, call("search", json!({"pattern": "("})));
        assert!(matches!(bad, Err(ToolError::Failed(m)) if m.contains("bad pattern")));
    }

    fn shell_grant() -> ExecGrant {
        ExecGrant {
            name: "sh".into(),
            path: resolve_program("sh").unwrap(),
        }
    }

    #[test]
    fn exec_needs_the_shell_grant() {
        let fx = fixture();
        let env = env(&fx, file_grants(&fx));
        let denied = invoke(&env, call("exec", json!({"command": "echo hi"})));
        assert!(
            matches!(&denied, Err(ToolError::Denied(m)) if m.contains("exec: [sh]")),
            "{denied:?}"
        );
    }

    #[test]
    fn exec_runs_sandboxed_with_the_shell_grant() {
        let fx = fixture();
        let mut grants = file_grants(&fx);
        grants.exec.push(shell_grant());
        // Granted, so that the secret below is refused for its path.
        grants.exec.push(ExecGrant {
            name: "cat".into(),
            path: resolve_program("cat").unwrap(),
        });
        let env = env(&fx, grants);
        let out = invoke(
            &env,
            call("exec", json!({"command": "echo hi; echo oops >&2"})),
        )
        .unwrap();
        assert!(out.starts_with("exit code: 0"), "{out}");
        assert!(out.contains("--- stdout ---\nhi"), "{out}");
        assert!(out.contains("--- stderr ---\noops"), "{out}");
        let failed = invoke(&env, call("exec", json!({"command": "exit 3"})));
        assert!(
            matches!(&failed, Err(ToolError::Failed(m)) if m.starts_with("exit code: 3")),
            "{failed:?}"
        );
        // The same environment as a script's, idempotency key included.
        let ids = "echo $WFHOST_RUN_ID/$WFHOST_STEP_ID/$WFHOST_ATTEMPT/$WFHOST_IDEMPOTENCY_KEY";
        let out = invoke(&env, call("exec", json!({ "command": ids }))).unwrap();
        assert!(out.contains("\nrun/step/1/run:step:0:1\n"), "{out}");
        // The sandbox confines the command to the grants.
        let secret = invoke(
            &env,
            call(
                "exec",
                json!({"command": format!("cat {}", fx.base.join("private/secret.txt").display())}),
            ),
        );
        assert!(
            matches!(&secret, Err(ToolError::Failed(m))
                if !m.contains("TODO secret") && m.contains("secret.txt: Permission denied")),
            "{secret:?}"
        );
    }

    #[test]
    fn http_get_reaches_granted_hosts_only() {
        let (url, seen) =
            crate::agent::provider::openai::tests::serve(vec![(200, "hello body".to_string())]);
        let fx = fixture();
        let port = url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let denied = invoke(
            &env(&fx, ResolvedGrants::default()),
            call("http_get", json!({"url": format!("{url}/page")})),
        );
        assert!(
            matches!(&denied, Err(ToolError::Denied(m)) if m.contains(&format!("network: [\"127.0.0.1:{port}\"]"))),
            "{denied:?}"
        );
        let other_port = ResolvedGrants {
            network: vec![NetworkGrant::parse("127.0.0.1:1").unwrap()],
            ..ResolvedGrants::default()
        };
        assert!(matches!(
            invoke(
                &env(&fx, other_port),
                call("http_get", json!({"url": format!("{url}/page")}))
            ),
            Err(ToolError::Denied(_))
        ));
        assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
        let granted = ResolvedGrants {
            network: vec![NetworkGrant::parse(&format!("127.0.0.1:{port}")).unwrap()],
            ..ResolvedGrants::default()
        };
        let page = invoke(
            &env(&fx, granted),
            call("http_get", json!({"url": format!("{url}/page")})),
        )
        .unwrap();
        assert!(
            page.starts_with("HTTP 200") && page.ends_with("hello body"),
            "{page}"
        );
        assert_eq!(seen.lock().unwrap()[0].request_line, "GET /page HTTP/1.1");
    }
}
