//! Files, with paths relative to the workflow directory and errors that
//! explain which `files` grant is missing.
//!
//! The host preopens every file grant at its own absolute path inside the
//! sandbox, so `std::fs` works with absolute paths under a grant. These
//! helpers resolve relative paths against [`Request::workdir`] first and, when
//! an operation fails on a path outside every grant, say so:
//!
//! ```text
//! cannot read '/etc/passwd': no files grant covers it (add grants: { files: [{ path: /etc, access: read }] })
//! ```
//!
//! ```ignore
//! let text = wfhost_sdk::fs::read_to_string(&req, "docs/README.md")?;
//! for file in wfhost_sdk::fs::walk(&req, "src")? { /* absolute paths */ }
//! ```

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::{FileGrant, Request, StepError};

/// A failed file operation, with a message fit for the step's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// The path as the plugin gave it.
    pub path: String,
    /// The grant line that would allow the operation, when no grant covers
    /// the path (or the covering grant is read-only for a write).
    pub missing_grant: Option<String>,
    /// The whole message, e.g. `cannot read 'x': no such file or directory`.
    pub message: String,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

/// Permanent: retrying does not add a grant or create the file.
impl From<FsError> for StepError {
    fn from(e: FsError) -> Self {
        StepError::Permanent(e.message)
    }
}

/// Absolute, lexically normalised form of `path`: relative paths are taken
/// relative to the workflow directory; `.` and `..` are folded (symlinks are
/// not followed).
pub fn resolve(req: &Request, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&req.workdir.join(path))
    }
}

/// `path` (absolute or relative) shown relative to the workflow directory
/// when it lies under it, else absolute.
pub fn display(req: &Request, path: impl AsRef<Path>) -> String {
    let abs = resolve(req, path);
    let workdir = normalize(&req.workdir);
    match abs.strip_prefix(&workdir) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => abs.to_string_lossy().into_owned(),
    }
}

/// The grant that covers `path` (resolved against the workflow directory),
/// the most specific one when several do.
pub fn covering_grant(req: &Request, path: impl AsRef<Path>) -> Option<&FileGrant> {
    let abs = resolve(req, path);
    req.file_grants
        .iter()
        .filter(|g| abs.starts_with(normalize(&g.path)))
        .max_by_key(|g| g.path.components().count())
}

/// The contents of a file.
pub fn read(req: &Request, path: impl AsRef<Path>) -> Result<Vec<u8>, FsError> {
    let path = path.as_ref();
    std::fs::read(resolve(req, path)).map_err(|e| explain(req, path, Op::Read, &e))
}

/// The contents of a UTF-8 text file.
pub fn read_to_string(req: &Request, path: impl AsRef<Path>) -> Result<String, FsError> {
    let path = path.as_ref();
    std::fs::read_to_string(resolve(req, path)).map_err(|e| explain(req, path, Op::Read, &e))
}

/// Write (create or replace) a file; needs a `read-write` grant.
pub fn write(
    req: &Request,
    path: impl AsRef<Path>,
    contents: impl AsRef<[u8]>,
) -> Result<(), FsError> {
    let path = path.as_ref();
    std::fs::write(resolve(req, path), contents).map_err(|e| explain(req, path, Op::Write, &e))
}

/// The entries of a directory as absolute paths, sorted by name.
pub fn read_dir(req: &Request, path: impl AsRef<Path>) -> Result<Vec<PathBuf>, FsError> {
    let path = path.as_ref();
    list_dir(&resolve(req, path)).map_err(|e| explain(req, path, Op::ReadDir, &e))
}

/// Every file under `path` (recursively; `path` itself when it is a file) as
/// absolute paths, sorted. Symbolic links to directories are not followed.
pub fn walk(req: &Request, path: impl AsRef<Path>) -> Result<Vec<PathBuf>, FsError> {
    let given = path.as_ref();
    let root = resolve(req, given);
    let meta = std::fs::metadata(&root).map_err(|e| explain(req, given, Op::Walk, &e))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk_into(req, given, &root, &mut files)?;
    } else {
        files.push(root);
    }
    Ok(files)
}

fn walk_into(
    req: &Request,
    given: &Path,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<(), FsError> {
    // Errors name the sub-directory the way the plugin would: under `given`.
    let shown = |p: &Path| match p.strip_prefix(resolve(req, given)) {
        Ok(rel) if !rel.as_os_str().is_empty() => given.join(rel),
        _ => given.to_path_buf(),
    };
    let entries = list_dir(dir).map_err(|e| explain(req, &shown(dir), Op::ReadDir, &e))?;
    for entry in entries {
        let meta = std::fs::symlink_metadata(&entry)
            .map_err(|e| explain(req, &shown(&entry), Op::Read, &e))?;
        if meta.is_dir() {
            walk_into(req, given, &entry, files)?;
        } else if meta.is_file() {
            files.push(entry);
        } else if meta.file_type().is_symlink() {
            // Follow links to files, never to directories (no cycles).
            if std::fs::metadata(&entry).is_ok_and(|m| m.is_file()) {
                files.push(entry);
            }
        }
    }
    Ok(())
}

fn list_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    ReadDir,
    /// The start of a walk: a file or a directory, unknown which.
    Walk,
    Write,
}

/// Turn an I/O error on `given` into a message that names the missing grant
/// when no grant covers the path.
fn explain(req: &Request, given: &Path, op: Op, err: &io::Error) -> FsError {
    let verb = match op {
        Op::Read => "read",
        Op::ReadDir => "list",
        Op::Walk => "read",
        Op::Write => "write",
    };
    let access = if op == Op::Write {
        "read-write"
    } else {
        "read"
    };
    let shown = given.to_string_lossy().into_owned();
    let (reason, missing_grant) = match covering_grant(req, given) {
        None => {
            let grant = format!(
                "grants: {{ files: [{{ path: {}, access: {access} }}] }}",
                suggested_grant_path(given, op)
            );
            (
                format!("no files grant covers it (add {grant})"),
                Some(grant),
            )
        }
        Some(g) if op == Op::Write && !g.writable => {
            let grant = format!(
                "grants: {{ files: [{{ path: {}, access: read-write }}] }}",
                g.path.display()
            );
            (
                format!(
                    "the files grant for '{}' is read-only (change it to {grant})",
                    g.path.display()
                ),
                Some(grant),
            )
        }
        Some(_) => (io_reason(err), None),
    };
    FsError {
        message: format!("cannot {verb} '{shown}': {reason}"),
        path: shown,
        missing_grant,
    }
}

/// The path a grant should name: the path itself for a directory listing,
/// else its parent (`.` for a bare relative name). A walk may start at a
/// file or a directory, unknown which while it is unreadable: its parent is
/// right for both, unless the path ends with `/`.
fn suggested_grant_path(given: &Path, op: Op) -> String {
    let is_dir = match op {
        Op::ReadDir => true,
        Op::Walk => given.as_os_str().to_string_lossy().ends_with('/'),
        Op::Read | Op::Write => false,
    };
    let dir = if is_dir {
        given
    } else {
        given.parent().unwrap_or(given)
    };
    let text = dir.to_string_lossy();
    let trimmed = text.trim_end_matches('/');
    if text.is_empty() {
        ".".to_string()
    } else if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `io::Error` text without the platform-specific `(os error N)` suffix.
fn io_reason(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Fold `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn req(grants: &[(&str, bool)]) -> Request {
        Request {
            run_id: "r".into(),
            step_id: "s".into(),
            attempt: 1,
            idempotency_key: "r:s:0:1".into(),
            config: Value::Null,
            inputs: Value::Null,
            args: Value::Null,
            workdir: "/work/flow".into(),
            file_grants: grants
                .iter()
                .map(|(p, w)| FileGrant {
                    path: p.into(),
                    writable: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn resolves_relative_to_workdir() {
        let r = req(&[]);
        assert_eq!(
            resolve(&r, "src/../a.txt"),
            PathBuf::from("/work/flow/a.txt")
        );
        assert_eq!(resolve(&r, "/etc/./passwd"), PathBuf::from("/etc/passwd"));
        assert_eq!(display(&r, "/work/flow/src/x"), "src/x");
        assert_eq!(display(&r, "/etc/passwd"), "/etc/passwd");
    }

    #[test]
    fn explains_missing_grant() {
        let r = req(&[("/work/flow/src", false)]);
        let err = io::Error::from(io::ErrorKind::NotFound);
        let e = explain(&r, Path::new("/etc/passwd"), Op::Read, &err);
        assert_eq!(
            e.message,
            "cannot read '/etc/passwd': no files grant covers it \
             (add grants: { files: [{ path: /etc, access: read }] })"
        );
        let e = explain(&r, Path::new("src/../../x"), Op::Read, &err);
        assert!(e.message.contains("no files grant covers it"), "{e}");
        let e = explain(&r, Path::new("/etc/passwd"), Op::Walk, &err);
        assert!(e.message.contains("{ path: /etc, access: read }"), "{e}");
        let e = explain(&r, Path::new("/x"), Op::Read, &err);
        assert!(e.message.contains("{ path: /, access: read }"), "{e}");
        let e = explain(&r, Path::new("docs/"), Op::Walk, &err);
        assert!(e.message.contains("{ path: docs, access: read }"), "{e}");
        let e = explain(&r, Path::new("docs"), Op::ReadDir, &err);
        assert!(e.message.contains("{ path: docs, access: read }"), "{e}");
        let e = explain(&r, Path::new("notes.txt"), Op::Read, &err);
        assert!(e.message.contains("{ path: ., access: read }"), "{e}");
        let e = explain(&r, Path::new("src/a.rs"), Op::Write, &err);
        assert!(e.message.contains("is read-only"), "{e}");
        let e = explain(&r, Path::new("src/a.rs"), Op::Read, &err);
        assert!(e.missing_grant.is_none(), "{e}");
    }
}
