//! A step's grants as capability units: one file per kind of grant, each
//! owning everything about its kind, and this registry calling them in
//! turn.
//!
//! | unit | grant keys |
//! |------|------------|
//! | [`files`] | `files` |
//! | [`env`](mod@env) | `env` |
//! | [`exec`] | `exec` |
//! | [`network`] | `network` |
//! | [`limits`] | `memory`, `timeout`, `max_output` (and `kill_grace`, `sandbox`) |
//!
//! Each unit implements `CapabilityUnit`: how its part of a step's
//! [`Grants`] is resolved into [`ResolvedGrants`] (paths made absolute and
//! opened, programs found on `PATH`, sizes parsed), how it is read from the
//! operator's `[ceiling]` table and checked against it, how it shapes the
//! step's WASI context, and what it adds to the `SandboxPlan` of the
//! programs a step starts. The checks the agent tools and the runtime's
//! host functions make are plain functions of the unit (such as
//! [`files::tool_check`], [`exec::authorize`], [`network::NetworkPolicy`]).
//!
//! The registry functions (`resolve`, `load_caps`, `check_caps`,
//! `configure_wasi`, `sandbox_plan`) call the units of `UNITS` in order;
//! that order is the order of their messages.

pub mod env;
pub mod exec;
pub mod files;
pub mod limits;
pub mod network;

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime_wasi::WasiCtxBuilder;

use super::executor::StepObserver;
use super::units::string_or_number;

pub use env::EnvGrant;
pub use exec::{resolve_program, ExecGrant};
pub use files::{DirHandle, FileGrant, HostState};
pub use limits::{check_kill_grace, DEFAULT_KILL_GRACE, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY};
pub use network::NetworkGrant;

/// Capabilities granted to a step, as the workflow writes them. Deny by
/// default.
///
/// Merge rule with `defaults.grants`: unless the step says `inherit: false`,
/// its lists (`files`, `env`, `exec`, `network`) are the union of the
/// defaults' and its own, and its scalars (`memory`, `timeout`,
/// `max_output`) replace the defaults' when given. With `inherit: false` the
/// step gets exactly what it lists itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Whether to start from `defaults.grants` (default true).
    #[serde(default)]
    pub inherit: Option<bool>,
    /// Files and directories, relative to the workflow file or absolute.
    #[serde(default)]
    pub files: Vec<FileGrant>,
    /// Host environment variables passed to the step: `NAME` passes the
    /// host's value, `NAME=value` sets one.
    #[serde(default)]
    pub env: Vec<String>,
    /// Programs the step may start through `process` (names looked up on
    /// `PATH` at validation, or absolute paths).
    #[serde(default)]
    pub exec: Vec<String>,
    /// Hosts the step may connect to: `host`, `host:port`, `*.domain:port`.
    #[serde(default)]
    pub network: Vec<String>,
    /// Linear-memory cap, e.g. `256MiB` (default 512MiB).
    #[serde(default, deserialize_with = "string_or_number")]
    pub memory: Option<String>,
    /// Per-attempt timeout (same as the step's `timeout`, which wins).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Bytes of stdout/stderr/log kept per program or step, e.g. `1MiB`
    /// (default 16MiB).
    #[serde(default, deserialize_with = "string_or_number")]
    pub max_output: Option<String>,
}

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

/// One kind of grant. The methods with a body do nothing by default.
pub(crate) trait CapabilityUnit: Sync {
    /// Resolve this kind's part of `spec` into `into`; every problem is
    /// one message (naming the grant line).
    fn resolve(
        &self,
        spec: &Grants,
        cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    );

    /// Read this kind's caps from the `[ceiling]` table (paths relative to
    /// `base`, the config file's directory); the error is `<key>: <why>`.
    fn load_cap(&self, spec: &CeilingSpec, base: &Path, into: &mut Caps) -> Result<(), String> {
        let _ = (spec, base, into);
        Ok(())
    }

    /// Every way `grants` exceed this kind's caps (read from `source`);
    /// `timeout` is the step's effective per-attempt timeout.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        timeout: Duration,
        problems: &mut Vec<String>,
    );

    /// Shape the WASI context of one step attempt; the error is the step's
    /// (permanent) failure.
    fn configure_wasi<'a>(
        &'a self,
        grants: &'a ResolvedGrants,
        wasi: &'a mut WasiSetup<'_>,
    ) -> WasiFuture<'a> {
        let _ = (grants, wasi);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Add what this kind allows the programs a step starts.
    fn sandbox(&self, grants: &ResolvedGrants, plan: &mut SandboxPlan) {
        let _ = (grants, plan);
    }

    /// Add this kind's keys to the JSON view of `grants`
    /// ([`ResolvedGrants::to_json`]).
    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>);

    /// Add this kind's parts to the one-line summary of `grants`
    /// ([`ResolvedGrants::summary`]), if it has any.
    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>);
}

/// The units, in the order their messages appear. A new kind of grant is
/// one more file in this directory and its line here (plus its keys in
/// [`Grants`], [`CeilingSpec`], [`Caps`] and [`ResolvedGrants`]).
pub(crate) const UNITS: &[&dyn CapabilityUnit] = &[
    &files::Files,
    &env::Env,
    &exec::Exec,
    &network::Network,
    &limits::Limits,
];

/// What resolving grants may need besides the grants.
pub(crate) struct ResolveContext<'a> {
    /// Relative `files` paths resolve against this directory (the
    /// workflow's).
    pub base: &'a Path,
    /// wfhost's own state, which no step may write.
    pub host: &'a HostState,
}

/// Resolve `spec` (sandbox mode and `kill_grace` left at their defaults:
/// they are the step's, not its grants'); every problem is a message.
pub(crate) fn resolve(spec: &Grants, cx: &ResolveContext<'_>) -> (ResolvedGrants, Vec<String>) {
    let mut resolved = ResolvedGrants::default();
    let mut problems = Vec::new();
    for unit in UNITS {
        unit.resolve(spec, cx, &mut resolved, &mut problems);
    }
    (resolved, problems)
}

/// The `[ceiling]` table of the host's config file, as written. A key that
/// is absent sets no cap on that kind of grant; an empty list forbids it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CeilingSpec {
    files: Option<Vec<FileGrant>>,
    env: Option<Vec<String>>,
    exec: Option<Vec<String>>,
    network: Option<Vec<String>>,
    memory: Option<String>,
    timeout: Option<String>,
    max_output: Option<String>,
    sandbox: Option<SandboxMode>,
}

/// The operator's caps, resolved from a [`CeilingSpec`]; `None` sets no cap.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caps {
    files: Option<Vec<(PathBuf, bool)>>,
    env: Option<Vec<String>>,
    exec: Option<Vec<(String, Option<PathBuf>)>>,
    network: Option<Vec<NetworkGrant>>,
    memory: Option<u64>,
    timeout: Option<Duration>,
    max_output: Option<u64>,
    /// `strict`: steps may not ask for `sandbox: best-effort`.
    sandbox: Option<SandboxMode>,
}

/// Read the caps of `spec` (paths relative to `base`); the error is
/// `<key>: <why>`.
pub(crate) fn load_caps(spec: &CeilingSpec, base: &Path) -> Result<Caps, String> {
    let mut caps = Caps::default();
    for unit in UNITS {
        unit.load_cap(spec, base, &mut caps)?;
    }
    Ok(caps)
}

/// Every way `grants` (with the step's effective `timeout`) exceed `caps`
/// (read from `source`), one message each.
pub(crate) fn check_caps(
    caps: &Caps,
    source: &str,
    grants: &ResolvedGrants,
    timeout: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    for unit in UNITS {
        unit.check_cap(caps, source, grants, timeout, &mut problems);
    }
    problems
}

/// Why passing the host variable `name` (described as `what`) exceeds the
/// `env` caps, if it does.
pub(crate) fn env_cap_problem(caps: &Caps, source: &str, name: &str, what: &str) -> Option<String> {
    env::cap_problem(caps, source, name, what)
}

/// Why reaching `grant` (described as `what`) exceeds the `network` caps,
/// if it does.
pub(crate) fn network_cap_problem(
    caps: &Caps,
    source: &str,
    grant: &NetworkGrant,
    what: &str,
) -> Option<String> {
    network::cap_problem(caps, source, grant, what)
}

/// `none` for an empty list in ceiling messages, else the items.
fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// What the units shape the WASI context of one step attempt with.
pub(crate) struct WasiSetup<'a> {
    /// The context being built.
    pub builder: &'a mut WasiCtxBuilder,
    /// Where refusals at run time are logged.
    pub observer: Arc<dyn StepObserver>,
}

/// The future of `CapabilityUnit::configure_wasi`.
pub(crate) type WasiFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Shape a step attempt's WASI context by its grants: preopened
/// directories, variables, sockets. The error is the step's failure.
pub(crate) async fn configure_wasi(
    grants: &ResolvedGrants,
    wasi: &mut WasiSetup<'_>,
) -> Result<(), String> {
    for unit in UNITS {
        unit.configure_wasi(grants, wasi).await?;
    }
    Ok(())
}

/// What a path rule of the OS sandbox allows a started program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathAccess {
    /// Read files and list directories (never execute).
    Read,
    /// Also create, change and remove (never execute).
    ReadWrite,
    /// Read and execute this file (with the loader or interpreter it
    /// names).
    Execute,
}

/// The TCP a started program may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum NetworkAccess {
    /// None: the program gets an empty network namespace.
    #[default]
    None,
    /// Connect to these ports only (never listen).
    Ports(Vec<u16>),
    /// Connect to any port (never listen): a grant names no port.
    AnyPort,
}

/// What the grants allow the programs a step starts, as data the OS
/// sandbox (`runtime::sandbox`) enforces, besides what every program gets
/// (system directories, its private directory).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SandboxPlan {
    /// Paths and what may be done beneath them.
    pub paths: Vec<(PathBuf, PathAccess)>,
    /// Network access.
    pub network: NetworkAccess,
    /// Granted variables of the program's environment, in order.
    pub env: Vec<(OsString, OsString)>,
}

/// The sandbox plan of the programs a step with `grants` starts.
pub(crate) fn sandbox_plan(grants: &ResolvedGrants) -> SandboxPlan {
    let mut plan = SandboxPlan::default();
    for unit in UNITS {
        unit.sandbox(grants, &mut plan);
    }
    plan
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
        self.handles.iter().find(|handle| handle.path() == path)
    }

    /// A JSON view for `wfhost validate --json` and people.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for unit in UNITS {
            unit.describe(self, &mut out);
        }
        serde_json::Value::Object(out)
    }

    /// One line for people: `files: /src (read); exec: /usr/bin/git; ...`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for unit in UNITS {
            unit.summarize(self, &mut parts);
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full() -> ResolvedGrants {
        ResolvedGrants {
            files: vec![
                (PathBuf::from("/src"), false),
                (PathBuf::from("/out"), true),
            ],
            env: vec![
                EnvGrant {
                    name: "HOME".into(),
                    value: None,
                },
                EnvGrant {
                    name: "MODE".into(),
                    value: Some("fast".into()),
                },
            ],
            exec: vec![ExecGrant {
                name: "git".into(),
                path: PathBuf::from("/usr/bin/git"),
            }],
            network: vec![NetworkGrant::parse("api.example.com:443").unwrap()],
            memory: 64 << 20,
            timeout: Some(Duration::from_secs(30)),
            ..ResolvedGrants::default()
        }
    }

    #[test]
    fn every_unit_has_its_part_in_the_views() {
        assert_eq!(
            full().to_json(),
            json!({
                "files": [
                    {"path": "/src", "access": "read"},
                    {"path": "/out", "access": "read-write"},
                ],
                "env": ["HOME", "MODE=fast"],
                "exec": ["/usr/bin/git"],
                "network": ["api.example.com:443"],
                "memory": 64 << 20,
                "timeout_ms": 30_000,
                "max_output": DEFAULT_MAX_OUTPUT,
                "sandbox": "strict",
                "kill_grace_ms": 2000,
            })
        );
        assert_eq!(
            full().summary(),
            "/src (read); /out (read-write); env: HOME, MODE; exec: /usr/bin/git; \
             network: api.example.com:443; memory: 64 MiB"
        );
        assert_eq!(ResolvedGrants::default().summary(), "memory: 512 MiB");
    }

    #[test]
    fn problems_come_unit_by_unit() {
        let spec = Grants {
            files: vec![FileGrant {
                path: "missing-dir-wfhost".into(),
                access: files::Access::Read,
            }],
            env: vec!["A-B".into()],
            exec: vec!["@nothing".into()],
            network: vec!["a b".into()],
            memory: Some("lots".into()),
            ..Grants::default()
        };
        let host = HostState::default();
        let dir = tempfile::tempdir().unwrap();
        let cx = ResolveContext {
            base: dir.path(),
            host: &host,
        };
        let (_, problems) = resolve(&spec, &cx);
        let kinds: Vec<&str> = problems
            .iter()
            .map(|p| p.split([' ', ':']).next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["files", "env", "exec", "network", "memory"],
            "{problems:?}"
        );
    }

    #[test]
    fn the_sandbox_plan_gathers_every_unit() {
        let plan = sandbox_plan(&full());
        assert!(plan
            .paths
            .contains(&(PathBuf::from("/out"), PathAccess::ReadWrite)));
        assert!(plan
            .paths
            .contains(&(PathBuf::from("/usr/bin/git"), PathAccess::Execute)));
        assert_eq!(plan.network, NetworkAccess::Ports(vec![443]));
        assert_eq!(plan.env[1], ("MODE".into(), "fast".into()));
    }
}
