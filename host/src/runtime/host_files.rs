//! File access performed by the host on behalf of a step (the agent tools
//! of a later issue: read_file, write_file, list_dir ...), confined to the
//! step's `files` grants with cap-std: the same roots as the step's WASI
//! preopens, so host-side tools reach no further than the step's own code.
//! `..` cannot climb out of a root and symlinks that lead outside it are
//! refused by cap-std.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use crate::engine::grants::ResolvedGrants;

/// Why a file operation on behalf of a step failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No grant allows it.
    #[error("access to '{path}' denied: {reason} (add grants: {{ files: [{{ path: {grant_path}, access: {access} }}] }})")]
    Denied {
        /// The path asked for.
        path: String,
        /// Why.
        reason: String,
        /// A grant path that would allow it.
        grant_path: String,
        /// The access mode needed.
        access: &'static str,
    },
    /// The operation was allowed but failed.
    #[error("'{path}': {source}")]
    Io {
        /// The path asked for.
        path: String,
        /// What went wrong (escape attempts through symlinks end up here).
        source: std::io::Error,
    },
}

struct Root {
    path: PathBuf,
    dir: Dir,
    writable: bool,
}

/// A step's granted directories, opened once.
pub struct GrantedFiles {
    roots: Vec<Root>,
    workdir: PathBuf,
}

impl GrantedFiles {
    /// Open every granted directory (relative paths resolve against `workdir`).
    pub fn open(grants: &ResolvedGrants, workdir: &Path) -> std::io::Result<GrantedFiles> {
        let mut roots = Vec::new();
        for (path, writable) in &grants.files {
            let dir = Dir::open_ambient_dir(path, ambient_authority())?;
            roots.push(Root {
                path: path.clone(),
                dir,
                writable: *writable,
            });
        }
        // The most specific root wins when grants nest.
        roots.sort_by_key(|root| std::cmp::Reverse(root.path.components().count()));
        Ok(GrantedFiles {
            roots,
            workdir: workdir.to_path_buf(),
        })
    }

    /// Read a whole file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, FileError> {
        let (root, relative) = self.locate(path, false)?;
        let mut file = root
            .dir
            .open(&relative)
            .map_err(|source| io(path, source))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| io(path, source))?;
        Ok(bytes)
    }

    /// Create or replace a file (its directory must exist).
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), FileError> {
        let (root, relative) = self.locate(path, true)?;
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let mut file = root
            .dir
            .open_with(&relative, &options)
            .map_err(|source| io(path, source))?;
        file.write_all(bytes).map_err(|source| io(path, source))
    }

    /// Names in a directory, sorted; directories end with `/`.
    pub fn list(&self, path: &str) -> Result<Vec<String>, FileError> {
        let (root, relative) = self.locate(path, false)?;
        let entries = if relative.as_os_str().is_empty() {
            root.dir.entries()
        } else {
            root.dir.read_dir(&relative)
        }
        .map_err(|source| io(path, source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| io(path, source))?;
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                name.push('/');
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// The root covering `path` and the path relative to it.
    fn locate(&self, path: &str, write: bool) -> Result<(&Root, PathBuf), FileError> {
        let absolute = normalize(&self.workdir.join(path));
        let parent = absolute
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let Some(root) = self
            .roots
            .iter()
            .find(|root| absolute.starts_with(&root.path))
        else {
            return Err(FileError::Denied {
                path: path.to_string(),
                reason: "no files grant covers it".to_string(),
                grant_path: parent,
                access: if write { "read-write" } else { "read" },
            });
        };
        if write && !root.writable {
            return Err(FileError::Denied {
                path: path.to_string(),
                reason: format!("the grant for '{}' is read-only", root.path.display()),
                grant_path: root.path.display().to_string(),
                access: "read-write",
            });
        }
        let relative = absolute
            .strip_prefix(&root.path)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        Ok((root, relative))
    }
}

/// Resolve `.` and `..` lexically (symlinks are cap-std's business).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn io(path: &str, source: std::io::Error) -> FileError {
    FileError::Io {
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, GrantedFiles) {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("ro/sub")).unwrap();
        std::fs::create_dir_all(base.join("rw")).unwrap();
        std::fs::write(base.join("ro/a.txt"), "alpha").unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), base.join("ro/link")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("ro/etc")).unwrap();
        let grants = ResolvedGrants {
            files: vec![(base.join("ro"), false), (base.join("rw"), true)],
            ..ResolvedGrants::default()
        };
        let files = GrantedFiles::open(&grants, &base).unwrap();
        (dir, files)
    }

    #[test]
    fn reads_and_writes_inside_grants() {
        let (_dir, files) = setup();
        assert_eq!(files.read("ro/a.txt").unwrap(), b"alpha");
        assert_eq!(files.read("ro/sub/../a.txt").unwrap(), b"alpha");
        files.write("rw/new.txt", b"hello").unwrap();
        assert_eq!(files.read("rw/new.txt").unwrap(), b"hello");
        assert_eq!(files.list("ro").unwrap(), ["a.txt", "etc", "link", "sub/"]);
    }

    #[test]
    fn paths_outside_the_grants_are_denied_naming_the_grant() {
        let (_dir, files) = setup();
        let error = files.read("secret.txt").unwrap_err().to_string();
        assert!(
            error.contains("no files grant covers it") && error.contains("access: read"),
            "{error}"
        );
        let error = files.read("ro/../secret.txt").unwrap_err().to_string();
        assert!(error.contains("no files grant covers it"), "{error}");
        let error = files.read("/etc/passwd").unwrap_err().to_string();
        assert!(error.contains("path: /etc, access: read"), "{error}");
        let error = files.write("ro/a.txt", b"x").unwrap_err().to_string();
        assert!(
            error.contains("is read-only") && error.contains("access: read-write"),
            "{error}"
        );
    }

    #[test]
    fn symlinks_out_of_a_root_are_refused() {
        let (_dir, files) = setup();
        assert!(matches!(files.read("ro/link"), Err(FileError::Io { .. })));
        assert!(files.read("ro/etc/passwd").is_err());
        assert!(files.list("ro/etc").is_err());
    }
}
