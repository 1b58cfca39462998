//! File access performed by the host on behalf of a step (the agent tools:
//! read_file, write_file, list_dir ...), confined to the step's `files`
//! grants: the same roots as the step's WASI preopens, each opened once as a
//! directory handle, so host-side tools reach no further than the step's
//! own code.
//!
//! A path is used in two stages, so that what a policy checked is what is
//! touched:
//!
//! 1. [`GrantedFiles::resolve`] follows the symlinks below the granted roots
//!    (reading each one through the root's handle) and gives the path that
//!    will really be touched; that path is what grants and policies check.
//!    A link that leads outside every root is refused by the grants check.
//! 2. [`GrantedFiles::read`], [`GrantedFiles::write`] and
//!    [`GrantedFiles::list`] open a resolved path from its root's handle one
//!    component at a time with `O_NOFOLLOW`: no symlink is followed, so a
//!    link swapped in after the check makes the call fail instead of
//!    redirecting it. Only regular files are read or written (a FIFO or a
//!    device is refused without blocking: they are opened `O_NONBLOCK`), and
//!    reads stop at the caller's limit.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::Dir;

use crate::step::grants::ResolvedGrants;

/// Symlinks one resolution may follow (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

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
        /// What went wrong (a symlink met while opening ends up here).
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

/// What a bounded read returned.
#[derive(Debug)]
pub struct ReadBytes {
    /// At most the limit's bytes, from the start of the file.
    pub bytes: Vec<u8>,
    /// Whether the file holds more than that.
    pub truncated: bool,
}

impl GrantedFiles {
    /// Open every granted directory (relative paths resolve against `workdir`).
    pub fn open(grants: &ResolvedGrants, workdir: &Path) -> std::io::Result<GrantedFiles> {
        let mut roots = Vec::new();
        for (path, writable) in &grants.files {
            // The handle opened when the grants were resolved, so a
            // directory swapped for a symlink since then is not followed.
            let dir = match grants.handle(path) {
                Some(handle) => handle.dir().try_clone()?,
                None => crate::step::grants::DirHandle::open(path)?
                    .dir()
                    .try_clone()?,
            };
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

    /// The absolute path `path` (relative to the workflow directory) really
    /// names: `.` and `..` folded and every symlink below a granted root
    /// followed (read through the root's handle, up to 40). Parts that do not
    /// exist (a file to create) stay as written. The result may lie outside
    /// every root: the grants check refuses it then.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, FileError> {
        let requested = normalize(&self.workdir.join(path));
        let mut pending: Vec<OsString> = names(&requested);
        pending.reverse();
        let mut current = PathBuf::from("/");
        let mut followed = 0usize;
        while let Some(name) = pending.pop() {
            if name == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&name);
            let Some(root) = self.root_of(&next) else {
                current = next;
                continue;
            };
            let relative = names(next.strip_prefix(&root.path).unwrap_or(Path::new("")));
            if relative.is_empty() {
                current = next;
                continue;
            }
            match read_link_beneath(root.dir.as_fd(), &relative) {
                Ok(Some(target)) => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(io(
                            path,
                            std::io::Error::other("more than 40 symlinks to follow"),
                        ));
                    }
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        current = PathBuf::from("/");
                    }
                    let mut parts = names(&target);
                    parts.reverse();
                    pending.extend(parts);
                }
                Ok(None) => current = next,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => current = next,
                Err(error) => return Err(io(path, error)),
            }
        }
        Ok(current)
    }

    /// Read at most `limit` bytes of a regular file (a resolved path).
    pub fn read(&self, path: &str, limit: usize) -> Result<ReadBytes, FileError> {
        let (root, relative) = self.locate(path, false)?;
        let file = open_beneath(
            root.dir.as_fd(),
            &relative,
            libc::O_RDONLY | libc::O_NONBLOCK,
        )
        .map_err(|source| io(path, source))?;
        let file = regular(std::fs::File::from(file)).map_err(|source| io(path, source))?;
        let mut bytes = Vec::new();
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| io(path, source))?;
        let truncated = bytes.len() as u64 > limit;
        bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(ReadBytes { bytes, truncated })
    }

    /// Create or replace a regular file (a resolved path; its directory
    /// must exist).
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), FileError> {
        let (root, relative) = self.locate(path, true)?;
        let file = open_beneath(
            root.dir.as_fd(),
            &relative,
            libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK,
        )
        .map_err(|source| io(path, source))?;
        let mut file = regular(std::fs::File::from(file)).map_err(|source| io(path, source))?;
        file.set_len(0).map_err(|source| io(path, source))?;
        file.write_all(bytes).map_err(|source| io(path, source))
    }

    /// Names in a directory (a resolved path), sorted; directories end
    /// with `/`.
    pub fn list(&self, path: &str) -> Result<Vec<String>, FileError> {
        let (root, relative) = self.locate(path, false)?;
        let dir = open_dir_beneath(root.dir.as_fd(), &relative, libc::O_RDONLY)
            .map_err(|source| io(path, source))?;
        let dir = Dir::from_std_file(std::fs::File::from(dir));
        let mut names = Vec::new();
        for entry in dir.entries().map_err(|source| io(path, source))? {
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

    /// The most specific root holding `absolute` (lexically).
    fn root_of(&self, absolute: &Path) -> Option<&Root> {
        crate::step::grants::covering_root(&self.roots, |root| root.path.as_path(), absolute)
    }

    /// The root covering `path` and the names below it.
    fn locate(&self, path: &str, write: bool) -> Result<(&Root, Vec<OsString>), FileError> {
        let absolute = normalize(&self.workdir.join(path));
        let parent = absolute
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let Some(root) = self.root_of(&absolute) else {
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
        let relative = names(absolute.strip_prefix(&root.path).unwrap_or(Path::new("")));
        Ok((root, relative))
    }
}

/// Resolve `.` and `..` lexically (symlinks are [`GrantedFiles::resolve`]'s
/// business).
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

/// The names of `path`, `..` kept as `..` (the root and `.` dropped).
fn names(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)`: `name`
/// is one path component.
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("'{}' is not a file name", name.to_string_lossy()),
        ));
    }
    let name = CString::new(name.as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in a path")
    })?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the
    // returned descriptor is owned by nobody else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        // O_NOFOLLOW on a symlink: ELOOP, or ENOTDIR with O_DIRECTORY.
        if error.raw_os_error() == Some(libc::ELOOP)
            || error.raw_os_error() == Some(libc::ENOTDIR) && is_symlink_at(dir, &name)
        {
            return Err(std::io::Error::other(format!(
                "'{}' is a symlink, which is not followed here (it changed since it was checked?)",
                name.to_string_lossy()
            )));
        }
        return Err(error);
    }
    // SAFETY: `fd` was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `name` in `dir` is a symlink.
fn is_symlink_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> bool {
    // SAFETY: an all-zero `stat` is valid; valid descriptor and name.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let status = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    status == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The directory `names` below `root`, opened with `flags`, no symlink
/// followed on the way.
fn open_dir_beneath(
    root: BorrowedFd<'_>,
    names: &[OsString],
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    let Some((last, parents)) = names.split_last() else {
        return open_at(root, OsStr::new("."), flags | libc::O_DIRECTORY);
    };
    let mut current = open_at(root, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY)?;
    for name in parents {
        current = open_at(current.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY)?;
    }
    open_at(current.as_fd(), last, flags | libc::O_DIRECTORY)
}

/// The file `names` below `root`, opened with `flags`, no symlink followed.
fn open_beneath(
    root: BorrowedFd<'_>,
    names: &[OsString],
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    let Some((last, parents)) = names.split_last() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "a granted directory, not a file",
        ));
    };
    let parent = open_dir_beneath(root, parents, libc::O_PATH)?;
    open_at(parent.as_fd(), last, flags)
}

/// The target of `names` below `root` when it is a symlink.
fn read_link_beneath(
    root: BorrowedFd<'_>,
    names: &[OsString],
) -> std::io::Result<Option<OsString>> {
    let Some((last, parents)) = names.split_last() else {
        return Ok(None);
    };
    let parent = open_dir_beneath(root, parents, libc::O_PATH)?;
    let name = CString::new(last.as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in a path")
    })?;
    let mut buffer = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid descriptor, NUL-terminated name, buffer of the given size.
    let length = unsafe {
        libc::readlinkat(
            parent.as_raw_fd(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if length < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            // Not a symlink.
            Some(libc::EINVAL) => Ok(None),
            _ => Err(error),
        };
    }
    buffer.truncate(length as usize);
    Ok(Some(OsString::from(std::ffi::OsStr::from_bytes(&buffer))))
}

/// The file, if it is a regular file; a FIFO, device, socket or directory
/// is refused by name.
fn regular(file: std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(std::io::Error::other(format!(
        "{what}: only regular files are read or written"
    )))
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
        assert_eq!(files.read("ro/a.txt", 100).unwrap().bytes, b"alpha");
        assert_eq!(files.read("ro/sub/../a.txt", 100).unwrap().bytes, b"alpha");
        files.write("rw/new.txt", b"hello").unwrap();
        assert_eq!(files.read("rw/new.txt", 100).unwrap().bytes, b"hello");
        assert_eq!(files.list("ro").unwrap(), ["a.txt", "etc", "link", "sub/"]);
    }

    #[test]
    fn paths_outside_the_grants_are_denied_naming_the_grant() {
        let (_dir, files) = setup();
        let error = files.read("secret.txt", 100).unwrap_err().to_string();
        assert!(
            error.contains("no files grant covers it") && error.contains("access: read"),
            "{error}"
        );
        let error = files.read("ro/../secret.txt", 100).unwrap_err().to_string();
        assert!(error.contains("no files grant covers it"), "{error}");
        let error = files.read("/etc/passwd", 100).unwrap_err().to_string();
        assert!(error.contains("path: /etc, access: read"), "{error}");
        let error = files.write("ro/a.txt", b"x").unwrap_err().to_string();
        assert!(
            error.contains("is read-only") && error.contains("access: read-write"),
            "{error}"
        );
    }

    #[test]
    fn symlinks_are_never_followed_when_opening() {
        let (_dir, files) = setup();
        assert!(matches!(
            files.read("ro/link", 100),
            Err(FileError::Io { .. })
        ));
        let error = files.read("ro/etc/passwd", 100).unwrap_err().to_string();
        assert!(error.contains("symlink"), "{error}");
        assert!(files.list("ro/etc").is_err());
    }

    #[test]
    fn resolve_follows_links_below_the_roots() {
        let (dir, files) = setup();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink("sub", base.join("ro/to-sub")).unwrap();
        std::os::unix::fs::symlink("../rw", base.join("ro/to-rw")).unwrap();
        std::os::unix::fs::symlink("loop", base.join("rw/loop")).unwrap();
        assert_eq!(
            files.resolve("ro/to-sub/x.txt").unwrap(),
            base.join("ro/sub/x.txt")
        );
        // Into another root, and out of every root.
        assert_eq!(files.resolve("ro/to-rw/y").unwrap(), base.join("rw/y"));
        assert_eq!(files.resolve("ro/link").unwrap(), base.join("secret.txt"));
        assert_eq!(
            files.resolve("ro/etc/passwd").unwrap(),
            Path::new("/etc/passwd")
        );
        // What is outside the roots is not looked into.
        assert_eq!(files.resolve("elsewhere/../x").unwrap(), base.join("x"));
        let error = files.resolve("rw/loop").unwrap_err().to_string();
        assert!(error.contains("40 symlinks"), "{error}");
        // The resolved path opens without following anything.
        let resolved = files.resolve("ro/to-sub/../a.txt").unwrap();
        assert_eq!(resolved, base.join("ro/a.txt"));
        let text = files.read(resolved.to_str().unwrap(), 100).unwrap();
        assert_eq!(text.bytes, b"alpha");
    }

    #[test]
    fn reads_stop_at_the_limit_and_refuse_special_files() {
        let (dir, files) = setup();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let read = files.read("ro/a.txt", 3).unwrap();
        assert_eq!((read.bytes.as_slice(), read.truncated), (&b"alp"[..], true));
        let read = files.read("ro/a.txt", 5).unwrap();
        assert!(!read.truncated);
        let fifo = base.join("rw/fifo");
        let name = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // Neither blocks on the FIFO (nobody writes or reads it).
        let error = files.read("rw/fifo", 10).unwrap_err().to_string();
        assert!(error.contains("a FIFO: only regular files"), "{error}");
        let error = files.write("rw/fifo", b"x").unwrap_err().to_string();
        assert!(
            error.contains("FIFO") || error.contains("No such device"),
            "{error}"
        );
        let error = files.read("ro/sub", 10).unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");
        let devices = GrantedFiles::open(
            &ResolvedGrants {
                files: vec![(PathBuf::from("/dev"), false)],
                ..ResolvedGrants::default()
            },
            Path::new("/"),
        )
        .unwrap();
        let error = devices.read("/dev/zero", 10).unwrap_err().to_string();
        assert!(error.contains("a device"), "{error}");
    }
}
