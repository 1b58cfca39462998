//! What the kernel offers the OS sandbox, detected once: the Landlock ABI,
//! the namespaces a child can enter, a writable `pids` cgroup hierarchy.
//!
//! Detecting forks the host twice and creates namespaces and a cgroup
//! (a few ms on the first program's path). A complete result is
//! remembered in the compile cache's directory for later processes of the
//! same boot, user and namespaces (see [`remembered`]); anything less is
//! detected again every time. Remembering can only make a later program
//! fail loudly (its set-up is refused where the kernel changed), never
//! run with less: a failed set-up forgets the result (see
//! [`forget_remembered`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::cgroup::{find_cgroup_root, remove_stale_cgroups};
use super::child::{errno, IdMaps};

/// What this host can enforce, detected once.
#[derive(Debug, Clone)]
pub(crate) struct Support {
    /// Landlock ABI version; 0 when the kernel has no Landlock.
    pub landlock_abi: i32,
    /// Which namespaces a child can enter.
    pub namespaces: Namespaces,
    /// Where per-program `pids` cgroups can be created, if anywhere.
    pub cgroup: Option<PathBuf>,
    /// Whether the host runs as root (uid 0).
    pub root: bool,
}

/// Namespaces a child can enter (`unshare` works with these flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Namespaces {
    pub user: bool,
    pub net: bool,
    pub pid: bool,
}

impl Namespaces {
    /// All three: what a complete sandbox enters.
    pub const ALL: Namespaces = Namespaces {
        user: true,
        net: true,
        pid: true,
    };
}

/// Where a complete result is remembered, once set (see
/// [`detect_support_in_background`]).
static REMEMBERED_IN: OnceLock<PathBuf> = OnceLock::new();

/// The file a result is remembered in, below the compile cache's directory.
const REMEMBERED_FILE: &str = "sandbox-support.json";

/// What this kernel offers, detected on first use (or remembered from an
/// earlier process of the same boot, user and namespaces).
pub(crate) fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let landlock_abi = landlock_abi();
        // SAFETY: a plain getter.
        let root = unsafe { libc::geteuid() } == 0;
        let file = REMEMBERED_IN.get();
        let key = file.and_then(|_| environment_key());
        let remembered = file
            .zip(key.as_deref())
            .and_then(|(file, key)| remembered(file, key, landlock_abi, root));
        let support = match remembered {
            Some(support) => {
                if let Some(root) = &support.cgroup {
                    remove_stale_cgroups(root);
                }
                support
            }
            None => {
                let support = Support {
                    landlock_abi,
                    namespaces: probe_namespaces(),
                    cgroup: find_cgroup_root().inspect(|dir| remove_stale_cgroups(dir)),
                    root,
                };
                if let Some((file, key)) = file.zip(key.as_deref()) {
                    remember(file, key, &support);
                }
                support
            }
        };
        tracing::debug!(?support, "OS sandbox support");
        support
    })
}

/// What is written down of a complete result: the environment it was
/// detected in, and what is not detected again when it is read.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    key: String,
    landlock_abi: i32,
    cgroup: PathBuf,
}

/// What a detection's result depends on besides the kernel's Landlock ABI
/// (asked every time, it costs one system call): the boot, this process's
/// user, group and namespaces, its cgroup, and the limits on new
/// namespaces. `None` where the boot cannot be told (nothing is then
/// remembered).
fn environment_key() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let mut key = format!("boot {}", boot.trim());
    for ns in ["user", "mnt", "pid", "cgroup"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok()?;
        key.push_str(&format!("\n{ns} {}", link.display()));
    }
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    key.push_str(&format!("\nids {uid} {gid}"));
    // The cgroup that per-program cgroups are made below: v1's `pids`
    // line, v2's `0::` line (other controllers' lines may differ between
    // processes of one session and do not matter).
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let controllers = line.split(':').nth(1).unwrap_or_default();
        if line.starts_with("0::") || controllers.split(',').any(|c| c == "pids") {
            key.push_str(&format!("\ncgroup {line}"));
        }
    }
    for file in [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/user/max_net_namespaces",
        "/proc/sys/user/max_pid_namespaces",
        "/proc/sys/kernel/unprivileged_userns_clone",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ] {
        let value = std::fs::read_to_string(file).unwrap_or_else(|_| "-".into());
        key.push_str(&format!("\n{file} {}", value.trim()));
    }
    Some(key)
}

/// The result remembered in `file` for `key`, if there is one, it was made
/// with this Landlock ABI, and its cgroup directory is still a directory
/// of a cgroup file system (`root`: whether this process runs as root).
fn remembered(file: &Path, key: &str, landlock_abi: i32, root: bool) -> Option<Support> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    let remembered: Remembered = serde_json::from_str(&text).ok()?;
    if remembered.key != key || remembered.landlock_abi != landlock_abi {
        return None;
    }
    if !is_cgroup_dir(&remembered.cgroup) {
        return None;
    }
    Some(Support {
        landlock_abi,
        namespaces: Namespaces::ALL,
        cgroup: Some(remembered.cgroup),
        root,
    })
}

/// Write `support` down for `key` when it is complete (Landlock, the three
/// namespaces and a `pids` cgroup); a partial result is detected again by
/// every process. Best effort: a file that cannot be written is skipped.
fn remember(file: &Path, key: &str, support: &Support) {
    let complete = support.landlock_abi > 0 && support.namespaces == Namespaces::ALL;
    let Some(cgroup) = support.cgroup.clone().filter(|_| complete) else {
        return;
    };
    let remembered = Remembered {
        key: key.to_string(),
        landlock_abi: support.landlock_abi,
        cgroup,
    };
    let Ok(text) = serde_json::to_string(&remembered) else {
        return;
    };
    let Some(dir) = file.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    // Written whole under a name of its own, then renamed: a reader sees
    // the old file or the new one.
    let partial = dir.join(format!("{REMEMBERED_FILE}.{}.tmp", std::process::id()));
    if std::fs::write(&partial, text).is_err() || std::fs::rename(&partial, file).is_err() {
        let _ = std::fs::remove_file(&partial);
    }
}

/// Forget a remembered result: a program's sandbox could not be set up
/// (the kernel or its limits changed since), so the next process detects
/// again.
pub(crate) fn forget_remembered() {
    if let Some(file) = REMEMBERED_IN.get() {
        forget(file);
    }
}

fn forget(file: &Path) {
    let _ = std::fs::remove_file(file);
}

/// Whether `dir` is a directory of a cgroup (v1 or v2) file system.
fn is_cgroup_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    let magic = fs.f_type as i64;
    (magic == CGROUP_SUPER_MAGIC || magic == CGROUP2_SUPER_MAGIC) && dir.is_dir()
}

/// Detect [`support`] on a thread of its own, unless done or under way:
/// the probes fork this process and create namespaces and a cgroup (a few
/// ms), which a run that will start programs does while it sets up rather
/// than on its first program's path. A program that starts meanwhile
/// waits for the detection to finish. A complete result is remembered in
/// `cache_dir`, if given, for the processes that come after.
pub(crate) fn detect_support_in_background(cache_dir: Option<&Path>) {
    if let Some(dir) = cache_dir {
        let _ = REMEMBERED_IN.set(dir.join(REMEMBERED_FILE));
    }
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("wfhost-sandbox-probe".into())
            .spawn(|| {
                support();
            });
    });
}

fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and the VERSION flag the call only
    // returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// Run `check` in a forked child and report whether it returned true.
/// `check` runs between `fork` and `_exit` of a multi-threaded process: it
/// must only make system calls (no allocation, no locks).
pub(super) fn probe_in_child(check: impl Fn() -> bool) -> bool {
    // SAFETY: the child only runs `check` (async-signal-safe by contract)
    // and `_exit`s; the parent reaps it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return false;
        }
        if pid == 0 {
            libc::_exit(if check() { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if errno() != libc::EINTR {
                return false;
            }
        }
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

fn probe_namespaces() -> Namespaces {
    let maps = IdMaps::current();
    let all = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWPID;
    // SAFETY (all three closures): system calls only.
    if probe_in_child(|| unsafe { libc::unshare(all) == 0 && maps.write().is_ok() }) {
        return Namespaces::ALL;
    }
    let user = probe_in_child(|| unsafe {
        libc::unshare(libc::CLONE_NEWUSER) == 0 && maps.write().is_ok()
    });
    let net_pid = libc::CLONE_NEWNET | libc::CLONE_NEWPID;
    if probe_in_child(|| unsafe { libc::unshare(net_pid) == 0 }) {
        return Namespaces {
            user,
            net: true,
            pid: true,
        };
    }
    Namespaces {
        user,
        net: probe_in_child(|| unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 }),
        pid: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(cgroup: PathBuf) -> Support {
        Support {
            landlock_abi: 5,
            namespaces: Namespaces::ALL,
            cgroup: Some(cgroup),
            root: false,
        }
    }

    /// A directory of a mounted cgroup file system, if this machine has one.
    fn a_cgroup_dir() -> Option<PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mounts.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let kind = right.split(' ').next()?;
            let dir = PathBuf::from(left.split(' ').nth(4)?);
            (matches!(kind, "cgroup" | "cgroup2") && is_cgroup_dir(&dir)).then_some(dir)
        })
    }

    #[test]
    fn a_complete_result_is_remembered_for_the_same_environment_only() {
        let Some(cgroup) = a_cgroup_dir() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but no cgroup file system is mounted here"
            );
            eprintln!("skipped: no cgroup file system here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache").join(REMEMBERED_FILE);
        remember(&file, "boot a", &complete(cgroup.clone()));
        let again = remembered(&file, "boot a", 5, false).expect("not remembered");
        assert_eq!(again.cgroup, Some(cgroup));
        assert_eq!(again.namespaces, complete(PathBuf::new()).namespaces);
        assert!(
            remembered(&file, "boot b", 5, false).is_none(),
            "another boot"
        );
        assert!(
            remembered(&file, "boot a", 6, false).is_none(),
            "another ABI"
        );
        forget(&file);
        assert!(remembered(&file, "boot a", 5, false).is_none(), "forgotten");
    }

    #[test]
    fn a_partial_result_is_detected_again_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(REMEMBERED_FILE);
        let mut partial = complete(dir.path().to_path_buf());
        partial.namespaces.net = false;
        remember(&file, "boot a", &partial);
        partial.namespaces.net = true;
        partial.cgroup = None;
        remember(&file, "boot a", &partial);
        partial = complete(dir.path().to_path_buf());
        partial.landlock_abi = 0;
        remember(&file, "boot a", &partial);
        assert!(!file.exists(), "a partial result was written down");
    }

    #[test]
    fn a_remembered_cgroup_must_still_be_a_cgroup_and_the_file_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(REMEMBERED_FILE);
        // Pointing at a plain directory (where `pids.max` would limit
        // nothing) is not believed.
        let forged = serde_json::json!({
            "key": "boot a", "landlock_abi": 5, "cgroup": dir.path(),
        });
        std::fs::write(&file, forged.to_string()).unwrap();
        assert!(remembered(&file, "boot a", 5, false).is_none());
        std::fs::write(&file, "{ not json").unwrap();
        assert!(remembered(&file, "boot a", 5, false).is_none());
        std::fs::write(&file, "").unwrap();
        assert!(remembered(&file, "boot a", 5, false).is_none());
    }

    #[test]
    fn the_environment_key_names_the_boot_and_is_stable() {
        let key = environment_key().expect("no boot id");
        assert!(key.starts_with("boot "), "{key}");
        assert!(key.contains("\nuser user:["), "{key}");
        assert_eq!(environment_key(), Some(key));
    }
}
