//! A step's resolved grants: what the engine hands to whatever executes the
//! step (paths absolute, directories opened, programs found, sizes parsed),
//! and the pure helpers shared by everything that enforces them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::parse_duration;

/// How strictly started programs are confined when the kernel cannot do
/// everything asked.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Refuse to start a program the OS sandbox cannot confine (default).
    #[default]
    Strict,
    /// Start it with whatever confinement the kernel offers, and log what
    /// was missing.
    BestEffort,
}

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

/// Parse a `kill_grace` value and check its bound.
pub fn check_kill_grace(text: &str) -> Result<Duration, String> {
    let grace = parse_duration(text).map_err(|e| format!("kill_grace: {e}"))?;
    if grace > MAX_KILL_GRACE {
        return Err(format!(
            "kill_grace: '{text}' is more than the most allowed, {}",
            super::units::humanize(MAX_KILL_GRACE)
        ));
    }
    Ok(grace)
}
