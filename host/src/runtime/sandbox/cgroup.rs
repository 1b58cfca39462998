//! The `pids` cgroup of one started program: finding a writable hierarchy,
//! creating, signalling and removing the per-program cgroup.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::support::probe_in_child;
use super::MAX_TASKS;

/// Find a writable `pids` cgroup hierarchy: cgroup v1's `pids` controller,
/// else cgroup v2 when `pids` is enabled (or can be) below the host's own
/// cgroup. Returns the directory to create per-program cgroups in.
pub(super) fn find_cgroup_root() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let v1_path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "pids")
            .then(|| path.to_string())
    });
    let v2_path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_string));
    let mut candidates = Vec::new();
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rest: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rest.len() < 3 {
            continue;
        }
        let (root, mount_point) = (fields[3], fields[4]);
        let path = match rest[0] {
            "cgroup" if rest[2].split(',').any(|o| o == "pids") => v1_path.as_deref(),
            "cgroup2" => v2_path.as_deref(),
            _ => None,
        };
        let Some(path) = path else { continue };
        let relative = path.strip_prefix(root).unwrap_or(path);
        let dir = Path::new(mount_point).join(relative.trim_start_matches('/'));
        // v1 first: it works below a cgroup that has processes.
        if rest[0] == "cgroup" {
            candidates.insert(0, dir);
        } else {
            candidates.push(dir);
        }
    }
    candidates.into_iter().find(|dir| probe_cgroup(dir))
}

/// Remove `wfhost-*` cgroups left empty by hosts that died before they
/// could (their programs died with them, see [`super::child`]). Only
/// old ones: a fresh empty one may belong to a host about to use it.
pub(super) fn remove_stale_cgroups(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix("wfhost-")
            .is_some_and(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()));
        let stale = ours
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60));
        if stale {
            // Fails, harmlessly, when processes are still in it.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Whether a `pids` cgroup can be created below `dir` and a process moved
/// into it (the way the child of a started program joins it).
fn probe_cgroup(dir: &Path) -> bool {
    let Ok(cgroup) = Cgroup::create(dir) else {
        return false;
    };
    let fd = cgroup.join.as_raw_fd();
    // SAFETY: a write to an open descriptor.
    let joined = probe_in_child(|| unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) == 1 });
    cgroup.remove(Instant::now() + Duration::from_secs(1));
    joined
}

// Per-program cgroup

/// A `pids` cgroup holding one started program's tree.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    /// The file the child writes `0` to to move itself in (see
    /// [`JOIN_V1`]), opened in the host.
    pub(super) join: OwnedFd,
}

/// How the (single-threaded) forked child joins a cgroup v1: it moves its
/// one thread through `tasks`, which the kernel does without the global
/// write lock that a move through `cgroup.procs` takes (and whose RCU grace
/// period cost 10-25 ms per program). A process with one thread is the same
/// thing as that thread, and every task it starts afterwards is born in the
/// cgroup, so the result is the same. cgroup v2 has no `tasks` file (and
/// moves whole processes only): there the child uses `cgroup.procs`.
const JOIN_V1: &str = "tasks";

impl Cgroup {
    /// Create `wfhost-<uuid>` below `root` with `pids.max` set.
    pub(super) fn create(root: &Path) -> io::Result<Cgroup> {
        let dir = root.join(format!("wfhost-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        let setup = || -> io::Result<OwnedFd> {
            let limit = dir.join("pids.max");
            if !limit.exists() && root.join("cgroup.subtree_control").exists() {
                // cgroup v2: the controller must be enabled in the parent.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+pids");
            }
            std::fs::write(&limit, MAX_TASKS.to_string())?;
            let open = |name: &str| std::fs::OpenOptions::new().write(true).open(dir.join(name));
            let join = match open(JOIN_V1) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => open("cgroup.procs")?,
                join => join?,
            };
            Ok(join.into())
        };
        match setup() {
            Ok(join) => Ok(Cgroup { dir, join }),
            Err(error) => {
                let _ = std::fs::remove_dir(&dir);
                Err(error)
            }
        }
    }

    /// The processes in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Send `signal` to every process in the cgroup; returns how many there
    /// were.
    pub(crate) fn signal(&self, signal: i32) -> usize {
        let pids = self.pids();
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions; the pid was
            // in our cgroup a moment ago.
            unsafe {
                libc::kill(*pid, signal);
            }
        }
        pids.len()
    }

    /// Remove the cgroup if it is empty; true when it is gone.
    pub(crate) fn try_remove(&self) -> bool {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(error) => error.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Remove the (emptied) cgroup, retrying until `deadline`: the kernel
    /// may take a moment after the last process died.
    pub(crate) fn remove(self, deadline: Instant) {
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return,
                Err(error) if Instant::now() >= deadline => {
                    tracing::debug!(dir = %self.dir.display(), %error, "cannot remove cgroup");
                    return;
                }
                Err(_) => {
                    self.signal(libc::SIGKILL);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Already removed, or never used; if processes are still in it, the
        // next host's start removes it once it is stale.
        self.try_remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_joins_through_the_pre_opened_file() {
        // Not a kernel feature the sandbox needs (RLIMIT_NPROC stands in for
        // a host that is not root), so no CI failure without one.
        let Some(root) = super::super::support().cgroup.clone() else {
            eprintln!("skipped: no writable pids cgroup here");
            return;
        };
        let cgroup = Cgroup::create(&root).unwrap();
        let fd = cgroup.join.as_raw_fd();
        // `report`: child to test; `release`: test to child.
        let (mut report, mut release) = ([-1; 2], [-1; 2]);
        // SAFETY: pipe fills the arrays.
        unsafe {
            assert_eq!(libc::pipe(report.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(release.as_mut_ptr()), 0);
        }
        // SAFETY: the child only writes and reads descriptors, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let joined = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::write(report[1], [joined as u8].as_ptr().cast(), 1);
                let mut byte = 0u8;
                libc::read(release[0], (&raw mut byte).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut joined = 0u8;
        // SAFETY: reads one byte into a local.
        unsafe { libc::read(report[0], (&raw mut joined).cast(), 1) };
        let members = cgroup.pids();
        // SAFETY: release and reap the child; close the pipes.
        unsafe {
            libc::write(release[1], b"x".as_ptr().cast(), 1);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            for fd in report.into_iter().chain(release) {
                libc::close(fd);
            }
        }
        assert_eq!(joined, 1, "the child could not join its cgroup");
        assert_eq!(members, vec![pid], "the child is not (alone) in its cgroup");
        cgroup.remove(Instant::now() + Duration::from_secs(1));
    }
}
