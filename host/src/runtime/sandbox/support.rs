//! What the kernel offers the OS sandbox, detected once: the Landlock ABI,
//! the namespaces a child can enter, a writable `pids` cgroup hierarchy.

use std::path::PathBuf;
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

/// What this kernel offers, detected on first use.
pub(crate) fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let support = Support {
            landlock_abi: landlock_abi(),
            namespaces: probe_namespaces(),
            cgroup: find_cgroup_root().inspect(|root| remove_stale_cgroups(root)),
            root: unsafe { libc::geteuid() } == 0,
        };
        tracing::debug!(?support, "OS sandbox support");
        support
    })
}

/// Detect [`support`] on a thread of its own, unless done or under way:
/// the probes fork this process and create namespaces and a cgroup (a few
/// ms), which a run that will start programs does while it sets up rather
/// than on its first program's path. A program that starts meanwhile
/// waits for the detection to finish.
pub(crate) fn detect_support_in_background() {
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
        return Namespaces {
            user: true,
            net: true,
            pid: true,
        };
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
