//! Effective grants: a step's grants merged with the workflow defaults,
//! resolved (absolute paths, programs found on `PATH`, sizes parsed) and
//! checked against the operator's ceiling, before any run starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::provider::reach::{reach, ModelReach};
use crate::workflow::locate::Locator;
use crate::workflow::model::{Access, Grants, ModelSpec, SandboxMode, Step};
use crate::workflow::{
    parse_duration, step_kind, Diagnostic, Diagnostics, LoadedWorkflow, StepKind,
};

use super::ceiling::Ceiling;

/// Linear-memory cap when nothing says otherwise.
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// The most `max_output` may be, ceiling or not: a step's output, streams
/// and output file are held in the host's memory up to this size.
pub const MAX_MAX_OUTPUT: u64 = 256 * 1024 * 1024;
/// Bytes of output kept per stream when nothing says otherwise.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Time between SIGTERM and SIGKILL of a stopped program when nothing says
/// otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// The longest `kill_grace` a workflow may ask for: a cancel must stay quick.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(60);

/// A step's grants, resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedGrants {
    /// Absolute, canonical directories and whether they are writable.
    pub files: Vec<(PathBuf, bool)>,
    /// The directories of `files`, opened when the grants were resolved:
    /// what a step is given is these handles, not whatever their paths
    /// lead to later (see [`DirHandle`] and [`ResolvedGrants::handle`]).
    pub handles: Vec<DirHandle>,
    /// Environment variables: name and fixed value (`None`: the host's).
    pub env: Vec<EnvGrant>,
    /// Programs the step may start.
    pub exec: Vec<ExecGrant>,
    /// Hosts the step may connect to.
    pub network: Vec<NetworkGrant>,
    /// Linear-memory cap in bytes.
    pub memory: u64,
    /// Per-attempt timeout from the grants, if any.
    pub timeout: Option<Duration>,
    /// Bytes kept per output stream.
    pub max_output: u64,
    /// What to do when the OS sandbox cannot confine a started program.
    pub sandbox: SandboxMode,
    /// Time a started program gets between SIGTERM and SIGKILL when the
    /// step times out or is cancelled (the step's `kill_grace`).
    pub kill_grace: Duration,
}

impl Default for ResolvedGrants {
    fn default() -> Self {
        ResolvedGrants {
            files: Vec::new(),
            handles: Vec::new(),
            env: Vec::new(),
            exec: Vec::new(),
            network: Vec::new(),
            memory: DEFAULT_MEMORY,
            timeout: None,
            max_output: DEFAULT_MAX_OUTPUT,
            sandbox: SandboxMode::Strict,
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }
}

/// A granted directory opened once, when the grants are resolved (at the
/// start of a run), with `O_DIRECTORY | O_NOFOLLOW` on its canonical path,
/// and checked to be the directory at that path at that moment.
///
/// Everything that gives a step access to the directory uses this handle:
/// the WASI preopen (through [`DirHandle::proc_path`]), and it is what an
/// OS sandbox rule (Landlock `PathBeneath::new(handle.as_fd(), ..)`) or a
/// host-side tool (`handle.dir()`, cap-std) should use. Swapping the path
/// for a symbolic link afterwards (say, by an earlier step) does not
/// change what the handle refers to.
#[derive(Clone)]
pub struct DirHandle {
    path: PathBuf,
    dir: std::sync::Arc<cap_std::fs::Dir>,
}

impl DirHandle {
    /// Open the directory at `path` (absolute and canonical): the last
    /// component must not be a symbolic link, and the opened directory must
    /// be the one at `path` (no component swapped while opening).
    pub fn open(path: &Path) -> std::io::Result<DirHandle> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)?;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        if opened != path {
            return Err(std::io::Error::other(format!(
                "'{}' changed while it was being opened (it led to '{}')",
                path.display(),
                opened.display()
            )));
        }
        Ok(DirHandle {
            path: path.to_path_buf(),
            dir: std::sync::Arc::new(cap_std::fs::Dir::from_std_file(file)),
        })
    }

    /// The canonical path the directory had when it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, for cap-std access beneath it.
    pub fn dir(&self) -> &cap_std::fs::Dir {
        &self.dir
    }

    /// `/proc/self/fd/N`: opening this path opens the very directory of the
    /// handle, wherever it now is, whatever now is at [`DirHandle::path`].
    pub fn proc_path(&self) -> PathBuf {
        use std::os::unix::io::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }
}

impl std::os::unix::io::AsFd for DirHandle {
    fn as_fd(&self) -> std::os::unix::io::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

impl std::fmt::Debug for DirHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::io::AsRawFd;
        write!(
            f,
            "DirHandle({}, fd {})",
            self.path.display(),
            self.dir.as_raw_fd()
        )
    }
}

/// Two handles are equal when they were opened on the same path (the
/// grant is the same; the descriptors differ).
impl PartialEq for DirHandle {
    fn eq(&self, other: &DirHandle) -> bool {
        self.path == other.path
    }
}

/// One `env` grant line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvGrant {
    /// Variable name.
    pub name: String,
    /// Fixed value (`NAME=value`), or `None` to pass the host's value.
    pub value: Option<String>,
}

impl EnvGrant {
    /// The value the step sees, if any.
    pub fn value(&self) -> Option<String> {
        match &self.value {
            Some(value) => Some(value.clone()),
            None => std::env::var(&self.name).ok(),
        }
    }
}

/// One `exec` grant line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecGrant {
    /// As written in the workflow (`git`, `/usr/bin/git`).
    pub name: String,
    /// Canonical absolute path it resolved to at validation.
    pub path: PathBuf,
}

/// One `network` grant line: `host`, `host:port`, `*.domain[:port]`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Host name, IP address, `*.suffix` or `*`.
    pub host: String,
    /// Port, or any port when absent.
    pub port: Option<u16>,
}

impl NetworkGrant {
    /// Parse `host[:port]` (IPv6 literals in brackets: `[::1]:80`).
    pub fn parse(text: &str) -> Result<NetworkGrant, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{text}': missing ']'"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host.to_string(), Some(port)),
                _ => (text.to_string(), None),
            }
        };
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(format!("'{text}' is not host[:port]"));
        }
        let wildcard_ok = host == "*"
            || host
                .strip_prefix("*.")
                .is_some_and(|rest| !rest.contains('*'));
        if host.contains('*') && !wildcard_ok {
            return Err(format!(
                "'{text}': a wildcard must be '*' or lead the name, as in '*.example.com'"
            ));
        }
        let port = match port {
            None => None,
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| format!("'{text}': bad port '{port}'"))?,
            ),
        };
        Ok(NetworkGrant {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether this grant allows connecting to `host` (a name or an IP
    /// literal) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && host_matches(&self.host, &host.to_ascii_lowercase())
    }

    /// Whether this grant lets a step look up the host name `name` (any
    /// port): DNS follows the grant.
    pub fn allows_name(&self, name: &str) -> bool {
        host_matches(&self.host, &name.to_ascii_lowercase())
    }

    /// Whether this grant (a ceiling line) covers everything `other` grants.
    pub fn covers(&self, other: &NetworkGrant) -> bool {
        let port_ok = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        port_ok && host_matches(&self.host, &other.host)
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.')),
        None => false,
    }
}

/// Parse a size: `1048576`, `512KiB`, `256MiB`, `1GiB`, `10MB`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 256MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use B, KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("'{text}' is not a usable size"))
}

/// The programs of `@coreutils`, a convenience set for scripts: `exec:
/// ["@coreutils"]` grants those of them found on `PATH`.
pub const COREUTILS: &[&str] = &[
    "basename",
    "cat",
    "chmod",
    "cp",
    "cut",
    "date",
    "diff",
    "dirname",
    "echo",
    "env",
    "expr",
    "false",
    "find",
    "grep",
    "head",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mktemp",
    "mv",
    "printf",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tee",
    "test",
    "touch",
    "tr",
    "true",
    "uniq",
    "wc",
    "xargs",
];

/// The programs an `exec` line stands for: itself, or the members of a set
/// (`@coreutils`). `Err` for an unknown set.
pub fn exec_line_programs(line: &str) -> Result<Vec<&str>, String> {
    match line.strip_prefix('@') {
        None => Ok(vec![line]),
        Some("coreutils") => Ok(COREUTILS.to_vec()),
        Some(_) => Err(format!(
            "exec grant '{line}': unknown set (the sets are: @coreutils)"
        )),
    }
}

/// Resolve a program name through `PATH`, or canonicalise a path.
pub fn resolve_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return std::fs::canonicalize(program)
            .ok()
            .filter(|p| is_executable(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .and_then(|found| std::fs::canonicalize(found).ok())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The grants a step declares, merged with the workflow defaults (see
/// [`Grants`] for the rule), plus the implicit shell of a script step.
pub fn merged(workflow: &LoadedWorkflow, step: &Step) -> Grants {
    let own = &step.grants;
    let mut grants = if own.inherit == Some(false) {
        own.clone()
    } else {
        let base = &workflow.def.defaults.grants;
        let mut merged = base.clone();
        merged.inherit = own.inherit;
        for file in &own.files {
            if !merged.files.contains(file) {
                merged.files.push(file.clone());
            }
        }
        for (mine, theirs) in [
            (&own.env, &mut merged.env),
            (&own.exec, &mut merged.exec),
            (&own.network, &mut merged.network),
        ] {
            for item in mine {
                if !theirs.contains(item) {
                    theirs.push(item.clone());
                }
            }
        }
        merged.memory = own.memory.clone().or(merged.memory);
        merged.timeout = own.timeout.clone().or(merged.timeout);
        merged.max_output = own.max_output.clone().or(merged.max_output);
        merged
    };
    if step_kind(step) == StepKind::Script {
        let shell = step
            .with
            .as_ref()
            .and_then(|with| with.get("shell"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("sh")
            .to_string();
        if !grants.exec.contains(&shell) {
            grants.exec.push(shell);
        }
    }
    grants
}

/// The most specific of `roots` (each a directory, by `path_of`) that
/// contains `absolute`, compared component by component (lexically: the
/// caller resolves symlinks first). The one grant-root lookup of the host.
pub fn covering_root<'a, T>(
    roots: &'a [T],
    path_of: impl Fn(&T) -> &Path,
    absolute: &Path,
) -> Option<&'a T> {
    roots
        .iter()
        .filter(|root| absolute.starts_with(path_of(root)))
        .max_by_key(|root| path_of(root).components().count())
}

impl ResolvedGrants {
    /// The `files` grant covering `absolute` (the most specific one) and
    /// whether it is writable.
    pub fn file_root(&self, absolute: &Path) -> Option<(&Path, bool)> {
        covering_root(&self.files, |(path, _)| path.as_path(), absolute)
            .map(|(path, writable)| (path.as_path(), *writable))
    }

    /// The handle opened for the files grant of `path`, if it was opened at
    /// resolution.
    pub fn handle(&self, path: &Path) -> Option<&DirHandle> {
        self.handles.iter().find(|handle| handle.path == path)
    }

    /// A JSON view for `wfhost validate --json` and people.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "files": self.files.iter().map(|(path, writable)| serde_json::json!({
                "path": path,
                "access": if *writable { "read-write" } else { "read" },
            })).collect::<Vec<_>>(),
            "env": self.env.iter().map(|g| match &g.value {
                Some(value) => format!("{}={value}", g.name),
                None => g.name.clone(),
            }).collect::<Vec<_>>(),
            "exec": self.exec.iter().map(|g| g.path.clone()).collect::<Vec<_>>(),
            "network": self.network.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "memory": self.memory,
            "timeout_ms": self.timeout.map(|t| t.as_millis() as u64),
            "max_output": self.max_output,
            "sandbox": self.sandbox,
            "kill_grace_ms": self.kill_grace.as_millis() as u64,
        })
    }

    /// One line for people: `files: /src (read); exec: /usr/bin/git; ...`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (path, writable) in &self.files {
            parts.push(format!(
                "{} ({})",
                path.display(),
                if *writable { "read-write" } else { "read" }
            ));
        }
        let env: Vec<&str> = self.env.iter().map(|g| g.name.as_str()).collect();
        if !env.is_empty() {
            parts.push(format!("env: {}", env.join(", ")));
        }
        let exec: Vec<String> = self
            .exec
            .iter()
            .map(|g| g.path.display().to_string())
            .collect();
        if !exec.is_empty() {
            parts.push(format!("exec: {}", exec.join(", ")));
        }
        let network: Vec<String> = self.network.iter().map(ToString::to_string).collect();
        if !network.is_empty() {
            parts.push(format!("network: {}", network.join(", ")));
        }
        parts.push(format!("memory: {} MiB", self.memory >> 20));
        parts.join("; ")
    }
}

/// The directories of wfhost's own state: the home (run store, run
/// folders) and the compiled-component cache. No step may be granted write
/// access to them, nor to a directory containing them.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl HostState {
    /// The state under `home`, and the component cache `cache` if any.
    /// Paths are made canonical as far as they exist.
    pub fn new(home: &Path, cache: Option<&Path>) -> HostState {
        let mut dirs = vec![("the wfhost home", canonical_as_far_as_exists(home))];
        if let Some(cache) = cache {
            dirs.push((
                "the compiled-component cache",
                canonical_as_far_as_exists(cache),
            ));
        }
        HostState { dirs }
    }

    /// Why a files grant of `path` (`writable`) would reach host state.
    fn check(&self, path: &Path, writable: bool) -> Vec<String> {
        if !writable {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (what, dir) in &self.dirs {
            if dir.starts_with(path) {
                problems.push(format!(
                    "files grant '{}' (read-write) contains {what} '{}': a step could rewrite wfhost's own state; grant a narrower directory that does not contain it",
                    path.display(),
                    dir.display()
                ));
            } else if path.starts_with(dir) {
                problems.push(format!(
                    "files grant '{}' (read-write) lies inside {what} '{}': a step could rewrite wfhost's own state; grant a directory outside it",
                    path.display(),
                    dir.display()
                ));
            }
        }
        problems
    }
}

/// `path` made absolute with its longest existing prefix canonicalised
/// (symbolic links resolved) and the rest appended.
fn canonical_as_far_as_exists(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(found) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(found, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Resolve one step's grants; every problem is a message.
pub fn resolve(
    workflow: &LoadedWorkflow,
    step: &Step,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> Result<ResolvedGrants, Vec<String>> {
    let grants = merged(workflow, step);
    let mut problems = Vec::new();
    let mut resolved = ResolvedGrants {
        sandbox: step
            .sandbox
            .or(workflow.def.defaults.sandbox)
            .unwrap_or_default(),
        ..ResolvedGrants::default()
    };
    for file in &grants.files {
        let joined = workflow.dir.join(&file.path);
        match std::fs::canonicalize(&joined) {
            Ok(path) if path.is_dir() => {
                let writable = file.access == Access::ReadWrite;
                problems.extend(host.check(&path, writable));
                match DirHandle::open(&path) {
                    Ok(handle) => resolved.handles.push(handle),
                    Err(error) => problems.push(format!(
                        "files grant '{}' cannot be opened: {error}",
                        file.path
                    )),
                }
                resolved.files.push((path, writable));
            }
            Ok(_) => problems.push(format!(
                "files grant '{}' is not a directory (grant a directory)",
                file.path
            )),
            Err(_) => problems.push(format!(
                "files grant '{}' does not exist ({})",
                file.path,
                joined.display()
            )),
        }
    }
    for line in &grants.env {
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (line.as_str(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(format!("env grant '{line}': expected NAME or NAME=value"));
            continue;
        }
        resolved.env.push(EnvGrant {
            name: name.to_string(),
            value,
        });
    }
    for line in &grants.exec {
        let names = match exec_line_programs(line) {
            Ok(names) => names,
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        let set = line.starts_with('@');
        for name in names {
            match resolve_program(name) {
                Some(path)
                    if !resolved
                        .exec
                        .iter()
                        .any(|g| g.path == path && g.name == name) =>
                {
                    resolved.exec.push(ExecGrant {
                        name: name.to_string(),
                        path,
                    })
                }
                Some(_) => {}
                // A set grants the members this machine has.
                None if set => {}
                None => problems.push(format!("exec grant '{name}': no such program on PATH")),
            }
        }
    }
    for line in &grants.network {
        match NetworkGrant::parse(line) {
            Ok(grant) => resolved.network.push(grant),
            Err(error) => problems.push(format!("network grant {error}")),
        }
    }
    if let Some(text) = &grants.memory {
        match parse_size(text) {
            Ok(bytes) => resolved.memory = bytes,
            Err(error) => problems.push(format!("memory grant {error}")),
        }
    }
    if let Some(text) = &grants.max_output {
        match parse_size(text) {
            Ok(bytes) if bytes > MAX_MAX_OUTPUT => problems.push(format!(
                "max_output grant '{text}' is over the host's limit of {} MiB (what a step hands the host is held in memory)",
                MAX_MAX_OUTPUT >> 20
            )),
            Ok(bytes) => resolved.max_output = bytes,
            Err(error) => problems.push(format!("max_output grant {error}")),
        }
    }
    if let Some(text) = &grants.timeout {
        match parse_duration(text) {
            Ok(timeout) => resolved.timeout = Some(timeout),
            Err(error) => problems.push(format!("timeout grant: {error}")),
        }
    }
    match kill_grace(workflow, step) {
        Ok(grace) => resolved.kill_grace = grace,
        Err(error) => problems.push(error),
    }
    problems.extend(provider_key_problems(workflow, &resolved));
    if let Some(ceiling) = ceiling {
        let timeout = step_timeout(workflow, step, &resolved);
        problems.extend(ceiling.check(&resolved, timeout));
    }
    match model_reach(workflow, step) {
        Some(Ok(reach)) => {
            if let Some(ceiling) = ceiling {
                problems.extend(ceiling.check_model(&reach));
            }
        }
        Some(Err(error)) => problems.push(error),
        None => {}
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// What the model of an agent step reaches (its endpoint and key
/// variable); `None` for other steps and unknown agents (reported by
/// validation).
pub fn model_reach(workflow: &LoadedWorkflow, step: &Step) -> Option<Result<ModelReach, String>> {
    if step_kind(step) != StepKind::Agent {
        return None;
    }
    let name = step.agent.as_deref()?;
    let agent = workflow.def.agents.iter().find(|a| a.id == name)?;
    Some(reach(agent))
}

/// A step may not pass the host value of a variable that any agent of the
/// workflow uses as its model's key: the key never enters a sandbox.
fn provider_key_problems(workflow: &LoadedWorkflow, resolved: &ResolvedGrants) -> Vec<String> {
    let mut problems = Vec::new();
    for grant in resolved.env.iter().filter(|g| g.value.is_none()) {
        for agent in &workflow.def.agents {
            if let ModelSpec::Openai {
                api_key_env: Some(key),
                ..
            } = &agent.model
            {
                if *key == grant.name {
                    problems.push(format!(
                        "env grant '{key}' would pass the API key of agent '{}' (openai model, api_key_env) into the step; a model's key never enters a sandbox",
                        agent.id
                    ));
                }
            }
        }
    }
    problems
}

/// The step's `kill_grace`, else `config.kill_grace`, else 2 s; at most
/// [`MAX_KILL_GRACE`].
pub fn kill_grace(workflow: &LoadedWorkflow, step: &Step) -> Result<Duration, String> {
    let text = step
        .kill_grace
        .as_deref()
        .or(workflow.def.config.kill_grace.as_deref());
    let Some(text) = text else {
        return Ok(DEFAULT_KILL_GRACE);
    };
    check_kill_grace(text)
}

/// Parse a `kill_grace` value and check its bound.
pub fn check_kill_grace(text: &str) -> Result<Duration, String> {
    let grace = parse_duration(text).map_err(|e| format!("kill_grace: {e}"))?;
    if grace > MAX_KILL_GRACE {
        return Err(format!(
            "kill_grace: '{text}' is more than the most allowed, {}",
            crate::runtime::humanize(MAX_KILL_GRACE)
        ));
    }
    Ok(grace)
}

/// The per-attempt timeout of a step: its `timeout`, else its grants',
/// else `config.timeout`, else 10 minutes.
pub fn step_timeout(workflow: &LoadedWorkflow, step: &Step, grants: &ResolvedGrants) -> Duration {
    step.timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .or(grants.timeout)
        .or_else(|| {
            workflow
                .def
                .config
                .timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
        })
        .unwrap_or(super::driver::DEFAULT_STEP_TIMEOUT)
}

/// Resolve every step's grants, in step order, or report every problem
/// with its step and location.
pub fn resolve_all(
    workflow: &LoadedWorkflow,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> Result<Vec<ResolvedGrants>, Diagnostics> {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let mut all = Vec::new();
    let mut diagnostics = Diagnostics::new();
    for (index, step) in workflow.def.steps.iter().enumerate() {
        match resolve(workflow, step, ceiling, host) {
            Ok(grants) => all.push(grants),
            Err(problems) => {
                for problem in problems {
                    diagnostics.push(
                        Diagnostic::new(problem)
                            .at(locator.step_key(index, &["grants"]))
                            .for_step(&step.id),
                    );
                }
            }
        }
    }
    diagnostics.into_result(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_output_has_a_host_limit() {
        let dir = tempfile::tempdir().unwrap();
        let source =
            "name: x\nsteps:\n  - id: a\n    run: 'true'\n    grants: {max_output: 300MiB}\n";
        let workflow = crate::workflow::load_from_source(
            source,
            "wf.yaml",
            dir.path(),
            crate::workflow::Format::Yaml,
            &[],
        )
        .unwrap();
        let problems = resolve(
            &workflow,
            &workflow.def.steps[0],
            None,
            &HostState::new(&dir.path().join("home"), None),
        )
        .unwrap_err();
        assert!(
            problems[0].contains("max_output grant '300MiB' is over the host's limit of 256 MiB"),
            "{problems:?}"
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn network_grants_parse_and_match() {
        let exact = NetworkGrant::parse("api.github.com:443").unwrap();
        assert!(exact.allows("api.github.com", 443));
        assert!(exact.allows("API.github.com", 443));
        assert!(!exact.allows("api.github.com", 80));
        assert!(!exact.allows("github.com", 443));
        let wild = NetworkGrant::parse("*.example.com").unwrap();
        assert!(wild.allows("a.example.com", 1) && wild.allows("a.b.example.com", 2));
        assert!(!wild.allows("example.com", 1) && !wild.allows("badexample.com", 1));
        let v6 = NetworkGrant::parse("[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert!(NetworkGrant::parse("a.*.com").is_err());
        assert!(NetworkGrant::parse("host:http")
            .unwrap_err()
            .contains("bad port"));
        assert!(NetworkGrant::parse("http://x").is_err());
    }

    #[test]
    fn ceiling_lines_cover_narrower_grants() {
        let ceiling = NetworkGrant::parse("*.github.com").unwrap();
        assert!(ceiling.covers(&NetworkGrant::parse("api.github.com:443").unwrap()));
        assert!(!ceiling.covers(&NetworkGrant::parse("github.io").unwrap()));
        let port = NetworkGrant::parse("127.0.0.1:80").unwrap();
        assert!(
            !port.covers(&NetworkGrant::parse("127.0.0.1").unwrap()),
            "any port exceeds one port"
        );
    }

    #[test]
    fn write_grants_may_not_reach_host_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let host = HostState::new(&root.join(".wfhost"), Some(&root.join("cache/wfhost")));
        let above = host.check(&root, true);
        assert_eq!(above.len(), 2, "{above:?}");
        assert!(above[0].contains(&format!(
            "files grant '{}' (read-write) contains the wfhost home '{}'",
            root.display(),
            root.join(".wfhost").display()
        )));
        assert!(above[0].contains("grant a narrower directory"));
        assert!(above[1].contains("the compiled-component cache"));
        let inside = host.check(&root.join(".wfhost/runs"), true);
        assert!(
            inside[0].contains("lies inside the wfhost home"),
            "{inside:?}"
        );
        assert!(host.check(&root, false).is_empty(), "reading is allowed");
        assert!(host.check(&root.join("work"), true).is_empty());
    }

    #[test]
    fn exec_sets_expand_and_unknown_sets_are_named() {
        let coreutils = exec_line_programs("@coreutils").unwrap();
        assert!(coreutils.contains(&"cat") && coreutils.contains(&"sleep"));
        assert_eq!(exec_line_programs("git").unwrap(), ["git"]);
        assert_eq!(
            exec_line_programs("@everything").unwrap_err(),
            "exec grant '@everything': unknown set (the sets are: @coreutils)"
        );
    }

    #[test]
    fn programs_resolve_on_path() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute());
        assert!(resolve_program("definitely-not-a-program-wfhost").is_none());
        assert_eq!(resolve_program(sh.to_str().unwrap()).unwrap(), sh);
    }
}
