//! The `files` grant: directories a step may read, or read and write.
//!
//! Resolved, each directory is canonical and opened once as a
//! [`DirHandle`]; everything that gives a step access uses that handle: the
//! WASI preopen, the Landlock rule of a started program (in
//! `runtime::sandbox`), the agent's file tools (`runtime::host_files`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime_wasi::FsPerms;

use serde_json::{json, Value};

use super::{
    none_if_empty, CapabilityUnit, Caps, CeilingSpec, Grants, PathAccess, ResolveContext,
    ResolvedGrants, SandboxPlan, WasiFuture, WasiSetup,
};

/// One file grant line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Path relative to the workflow file, or absolute.
    pub path: String,
    /// `read` (default) or `read-write`.
    #[serde(default)]
    pub access: Access,
}

/// Access mode of a file grant.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read files and list directories.
    #[default]
    Read,
    /// Also create, modify and delete.
    #[serde(alias = "rw", alias = "write")]
    ReadWrite,
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

/// The `files` capability unit.
pub(super) struct Files;

impl CapabilityUnit for Files {
    /// Each line made canonical (relative to the workflow's directory),
    /// checked to be a directory outside wfhost's own state (when
    /// writable), and opened.
    fn resolve(
        &self,
        spec: &Grants,
        cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    ) {
        for file in &spec.files {
            let joined = cx.base.join(&file.path);
            match std::fs::canonicalize(&joined) {
                Ok(path) if path.is_dir() => {
                    let writable = file.access == Access::ReadWrite;
                    problems.extend(cx.host.check(&path, writable));
                    match DirHandle::open(&path) {
                        Ok(handle) => into.handles.push(handle),
                        Err(error) => problems.push(format!(
                            "files grant '{}' cannot be opened: {error}",
                            file.path
                        )),
                    }
                    into.files.push((path, writable));
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
    }

    /// Ceiling paths are relative to the config file, canonical when they
    /// exist.
    fn load_cap(&self, spec: &CeilingSpec, base: &Path, into: &mut Caps) -> Result<(), String> {
        into.files = spec.files.as_ref().map(|files| {
            files
                .iter()
                .map(|f| {
                    let joined = base.join(&f.path);
                    let path = std::fs::canonicalize(&joined).unwrap_or(joined);
                    (path, f.access == Access::ReadWrite)
                })
                .collect()
        });
        Ok(())
    }

    /// A directory is within the ceiling when a ceiling directory contains
    /// it with at least its access.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        _timeout: Duration,
        problems: &mut Vec<String>,
    ) {
        let Some(allowed) = &caps.files else {
            return;
        };
        for (path, writable) in &grants.files {
            let covered = allowed.iter().any(|(root, root_writable)| {
                path.starts_with(root) && (*root_writable || !writable)
            });
            if !covered {
                let list: Vec<String> = allowed
                    .iter()
                    .map(|(p, w)| format!("{} ({})", p.display(), access_name(*w)))
                    .collect();
                problems.push(format!(
                    "files grant '{}' ({}) exceeds the operator ceiling in {source} (ceiling files: {})",
                    path.display(),
                    access_name(*writable),
                    none_if_empty(&list)
                ));
            }
        }
    }

    /// One preopen per directory, from the handle opened at resolution (a
    /// grant added later is opened now, with the same checks).
    fn configure_wasi<'a>(
        &'a self,
        grants: &'a ResolvedGrants,
        wasi: &'a mut WasiSetup<'_>,
    ) -> WasiFuture<'a> {
        Box::pin(std::future::ready(preopen(grants, wasi)))
    }

    /// Each directory readable, or readable and writable (never
    /// executable).
    fn sandbox(&self, grants: &ResolvedGrants, plan: &mut SandboxPlan) {
        for (path, writable) in &grants.files {
            let access = if *writable {
                PathAccess::ReadWrite
            } else {
                PathAccess::Read
            };
            plan.paths.push((path.clone(), access));
        }
    }

    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>) {
        let files = grants
            .files
            .iter()
            .map(|(path, writable)| json!({ "path": path, "access": access_name(*writable) }));
        out.insert("files".into(), files.collect());
    }

    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>) {
        for (path, writable) in &grants.files {
            parts.push(format!("{} ({})", path.display(), access_name(*writable)));
        }
    }
}

fn preopen(grants: &ResolvedGrants, wasi: &mut WasiSetup<'_>) -> Result<(), String> {
    for (path, writable) in &grants.files {
        let handle = match grants.handle(path) {
            Some(handle) => handle.clone(),
            None => DirHandle::open(path).map_err(|error| {
                format!("files grant '{}' cannot be opened: {error}", path.display())
            })?,
        };
        let perms = if *writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        let guest_path = path.to_string_lossy();
        wasi.builder
            .preopened_dir(handle.proc_path(), guest_path.as_ref(), perms)
            .map_err(|error| format!("cannot open files grant '{}': {error}", path.display()))?;
    }
    Ok(())
}

fn access_name(writable: bool) -> &'static str {
    if writable {
        "read-write"
    } else {
        "read"
    }
}

/// The check an agent's file tool (`tool`, asked for `path`, which is
/// `absolute` once resolved) makes against the `files` grants before any
/// effect; the error names the grant line that would allow it.
pub fn tool_check(
    grants: &ResolvedGrants,
    tool: &str,
    path: &str,
    absolute: &Path,
    write: bool,
) -> Result<(), String> {
    let access = access_name(write);
    match grants.file_root(absolute) {
        None => {
            let suggestion = if absolute.is_dir() {
                absolute.to_path_buf()
            } else {
                absolute.parent().unwrap_or(Path::new("/")).to_path_buf()
            };
            Err(format!(
                "{tool} of '{path}' denied: no files grant covers {} (add grants: {{ files: [{{ path: {}, access: {access} }}] }})",
                absolute.display(),
                suggestion.display()
            ))
        }
        Some((root, writable)) if write && !writable => Err(format!(
            "{tool} of '{path}' denied: the files grant for {} is read-only (grants: {{ files: [{{ path: {}, access: read-write }}] }})",
            root.display(),
            root.display()
        )),
        Some(_) => Ok(()),
    }
}

/// The check of an agent's `search` over every granted directory: there
/// must be one.
pub fn search_check(grants: &ResolvedGrants) -> Result<(), String> {
    if grants.files.is_empty() {
        return Err(
            "search denied: the step has no files grant (add grants: { files: [{ path: ., access: read }] })"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn resolved_directories_are_opened_and_planned_without_execute() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("rw")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let spec = Grants {
            files: vec![
                FileGrant {
                    path: "rw".into(),
                    access: Access::ReadWrite,
                },
                FileGrant {
                    path: "file".into(),
                    access: Access::Read,
                },
            ],
            ..Grants::default()
        };
        let host = HostState::new(&root.join("home"), None);
        let cx = ResolveContext {
            base: &root,
            host: &host,
        };
        let mut resolved = ResolvedGrants::default();
        let mut problems = Vec::new();
        Files.resolve(&spec, &cx, &mut resolved, &mut problems);
        assert_eq!(
            problems,
            ["files grant 'file' is not a directory (grant a directory)"]
        );
        assert_eq!(resolved.files, [(root.join("rw"), true)]);
        assert!(resolved.handle(&root.join("rw")).is_some());
        let mut plan = SandboxPlan::default();
        Files.sandbox(&resolved, &mut plan);
        assert_eq!(plan.paths, [(root.join("rw"), PathAccess::ReadWrite)]);
    }

    #[test]
    fn tools_are_checked_against_the_most_specific_grant() {
        let grants = ResolvedGrants {
            files: vec![
                (PathBuf::from("/work"), true),
                (PathBuf::from("/work/ro"), false),
            ],
            ..ResolvedGrants::default()
        };
        assert!(tool_check(&grants, "write_file", "a", Path::new("/work/a"), true).is_ok());
        let error =
            tool_check(&grants, "write_file", "ro/a", Path::new("/work/ro/a"), true).unwrap_err();
        assert!(
            error.contains("the files grant for /work/ro is read-only"),
            "{error}"
        );
        let error = tool_check(&grants, "read_file", "/x/y", Path::new("/x/y"), false).unwrap_err();
        assert!(
            error.contains("no files grant covers /x/y") && error.contains("access: read }"),
            "{error}"
        );
        assert!(search_check(&grants).is_ok());
        let error = search_check(&ResolvedGrants::default()).unwrap_err();
        assert!(error.starts_with("search denied: the step has no files grant"));
    }
}
