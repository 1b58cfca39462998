//! The OS sandbox around programs started through `process` (see
//! [`super::process`] for what a step author sees).
//!
//! Everything is prepared in the host, before `fork`: the Landlock ruleset
//! (paths opened, rules added), the `pids` cgroup and its `cgroup.procs`
//! descriptor, the user-namespace id maps. Between `fork` and `exec` the
//! child ([`ChildSetup::enter`]) only makes system calls, in this order:
//!
//! 1. `setsid`: its own session and process group, no controlling terminal;
//! 2. joins the `pids` cgroup (a `write` to the pre-opened `cgroup.procs`);
//! 3. `unshare`: a user namespace (its uid and gid mapped to themselves, so
//!    even a root host's program keeps no privilege over the machine), a
//!    network namespace with nothing in it unless the step has a `network`
//!    grant, and a pid namespace;
//! 4. `RLIMIT_NPROC` for hosts that do not run as root;
//! 5. `no_new_privs` and `landlock_restrict_self`;
//! 6. with a pid namespace, two `fork`s: the first process stays outside the
//!    namespace, ignores polite signals and mirrors how the program ended
//!    (it is the process the host waits for); the second is the namespace's
//!    init, reaps orphans and exits when the program does, which makes the
//!    kernel kill whatever the program left behind; the third execs the
//!    program. Every process of the tree dies with that init, even one that
//!    left the process group.
//!
//! What the kernel offers is detected once ([`support`]); what a step needs
//! and the kernel lacks either fails the call (`sandbox: strict`, the
//! default) or is reported as a warning (`sandbox: best-effort`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use crate::step::grants::ResolvedGrants;
use crate::workflow::model::SandboxMode;

/// Most tasks (processes and threads) the tree of one started program may
/// have at once: enough for a parallel build, few enough that a fork bomb
/// leaves the host responsive.
pub(crate) const MAX_TASKS: u64 = 512;

/// The message of a strict step on a kernel without Landlock.
pub(crate) const LANDLOCK_MISSING: &str = "the OS sandbox (Landlock) is not available on this \
     kernel; set `sandbox: best-effort` on the step to run programs without it";

/// System directories a program may read (not execute: only the step's
/// granted programs and their dynamic loader may be `execve`d).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];
/// Single files of `/etc` every program may read (the dynamic loader's
/// configuration, the time zone). The rest of `/etc` stays closed.
const SYSTEM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/timezone",
];
/// Directories of `/etc` every program may read.
const SYSTEM_ETC_DIRS: &[&str] = &["/etc/ld.so.conf.d"];
/// Devices a program may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
/// What name resolution and TLS need, readable when the step may use the
/// network.
const NETWORK_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
];
const NETWORK_DIRS: &[&str] = &["/etc/ssl", "/etc/ca-certificates", "/etc/pki"];

// ---------------------------------------------------------------------------
// What the kernel offers

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
fn probe_in_child(check: impl Fn() -> bool) -> bool {
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

/// Id maps of a fresh user namespace: the host's uid and gid mapped to
/// themselves, nothing else (all an unprivileged process may write, and all
/// a root host's program should have: root inside, without any capability
/// over the rest of the machine).
#[derive(Debug, Clone)]
struct IdMaps {
    uid: Vec<u8>,
    gid: Vec<u8>,
}

impl IdMaps {
    fn current() -> IdMaps {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        IdMaps {
            uid: format!("{uid} {uid} 1\n").into_bytes(),
            gid: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    /// Write the maps of the caller's own (new) user namespace.
    ///
    /// # Safety
    /// Async-signal-safe: system calls only.
    unsafe fn write(&self) -> Result<(), Stage> {
        // A kernel without the setgroups file predates the rule it enforces.
        if write_file(c"/proc/self/setgroups", b"deny") < 0 && errno() != libc::ENOENT {
            return Err(Stage::IdMaps);
        }
        if write_file(c"/proc/self/uid_map", &self.uid) < 0
            || write_file(c"/proc/self/gid_map", &self.gid) < 0
        {
            return Err(Stage::IdMaps);
        }
        Ok(())
    }
}

/// Find a writable `pids` cgroup hierarchy: cgroup v1's `pids` controller,
/// else cgroup v2 when `pids` is enabled (or can be) below the host's own
/// cgroup. Returns the directory to create per-program cgroups in.
fn find_cgroup_root() -> Option<PathBuf> {
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
/// could (their programs died with them, see [`wait_for_report`]). Only
/// old ones: a fresh empty one may belong to a host about to use it.
fn remove_stale_cgroups(root: &Path) {
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
/// into it.
fn probe_cgroup(dir: &Path) -> bool {
    let Ok(cgroup) = Cgroup::create(dir) else {
        return false;
    };
    let fd = cgroup.procs.as_raw_fd();
    // SAFETY: a write to an open descriptor.
    let joined = probe_in_child(|| unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) == 1 });
    cgroup.remove(Instant::now() + Duration::from_secs(1));
    joined
}

// ---------------------------------------------------------------------------
// Per-program cgroup

/// A `pids` cgroup holding one started program's tree.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened for the child to move itself in.
    procs: OwnedFd,
}

impl Cgroup {
    /// Create `wfhost-<uuid>` below `root` with `pids.max` set.
    fn create(root: &Path) -> io::Result<Cgroup> {
        let dir = root.join(format!("wfhost-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        let setup = || -> io::Result<OwnedFd> {
            let limit = dir.join("pids.max");
            if !limit.exists() && root.join("cgroup.subtree_control").exists() {
                // cgroup v2: the controller must be enabled in the parent.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+pids");
            }
            std::fs::write(&limit, MAX_TASKS.to_string())?;
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            Ok(procs.into())
        };
        match setup() {
            Ok(procs) => Ok(Cgroup { dir, procs }),
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

// ---------------------------------------------------------------------------
// Preparing one program's sandbox

/// What one program may touch, besides its grants.
pub(crate) struct Request<'a> {
    /// The step's grants.
    pub grants: &'a ResolvedGrants,
    /// The program (granted read and execute when outside system dirs).
    pub program: &'a Path,
    /// The program's private directory (read-write; `TMPDIR`).
    pub private_dir: &'a Path,
    /// The `WFHOST_OUTPUT` file, if any (read-write).
    pub output_file: Option<&'a Path>,
}

/// A sandbox ready to be installed on a command.
pub(crate) struct Prepared {
    setup: ChildSetup,
    /// Owners of the descriptors `setup` refers to; dropped after spawning.
    _ruleset: Option<OwnedFd>,
    stage_read: OwnedFd,
    _stage_write: OwnedFd,
    cgroup: Option<Cgroup>,
    /// What could not be enforced (best-effort mode), for the step's log.
    pub warnings: Vec<String>,
}

/// Prepare the sandbox of one program. Fails (strict mode) with the
/// message to show when the kernel cannot enforce what the step needs.
pub(crate) fn prepare(request: &Request, support: &Support) -> Result<Prepared, String> {
    let grants = request.grants;
    let strict = grants.sandbox == SandboxMode::Strict;
    let mut missing = Vec::new();
    let networked = !grants.network.is_empty();
    let port_rules = grants.network.iter().all(|g| g.port.is_some());
    let ns = support.namespaces;
    let abi = support.landlock_abi;

    if abi < 1 {
        if strict {
            return Err(LANDLOCK_MISSING.to_string());
        }
        missing.push(
            "Landlock is not available on this kernel: the program can read and write \
             everything the host's user can"
                .to_string(),
        );
    }
    if !networked && !ns.net {
        if strict {
            return Err(best_effort_hint(
                "network namespaces are not available here, so the OS sandbox cannot cut \
                 programs off the network",
            ));
        }
        missing.push(if abi >= 4 {
            "no network namespace: only TCP is blocked (by Landlock), UDP and other \
             protocols are not"
                .to_string()
        } else {
            "no network namespace and no Landlock TCP rules: the program has the host's \
             network"
                .to_string()
        });
    }
    if networked && port_rules && abi < 4 {
        if strict {
            return Err(best_effort_hint(&format!(
                "this kernel's Landlock (ABI {abi}) cannot restrict TCP ports (ABI 4 can), so \
                 the network grant cannot be limited to its ports"
            )));
        }
        missing.push(format!(
            "Landlock ABI {abi} cannot restrict TCP ports: the program may connect to any port"
        ));
    }
    if support.root && !ns.user {
        if strict {
            return Err(best_effort_hint(
                "user namespaces are not available here, so a program started by a root host \
                 would keep root's privileges",
            ));
        }
        missing.push("no user namespace: the program keeps the host's root privileges".into());
    }
    if (1..6).contains(&abi) {
        missing.push(format!(
            "Landlock ABI {abi} cannot scope signals and abstract unix sockets (ABI 6 can)"
        ));
    }
    if !(ns.pid && lifeline().is_some()) {
        if strict {
            return Err(best_effort_hint(
                "pid namespaces are not available here, so the OS sandbox cannot make sure \
                 that every process a program starts ends with it",
            ));
        }
        missing.push(
            "no pid namespace: processes that leave the program's process group may outlive it"
                .into(),
        );
    }

    let mut cgroup_error = None;
    let cgroup = match &support.cgroup {
        Some(root) => match Cgroup::create(root) {
            Ok(cgroup) => Some(cgroup),
            Err(error) => {
                cgroup_error = Some(format!("cannot create a pids cgroup: {error}"));
                None
            }
        },
        None => None,
    };
    let nproc = if support.root {
        None
    } else if ns.user {
        // Counted per user namespace: exactly this program's tree.
        Some(MAX_TASKS as libc::rlim_t)
    } else {
        // Counted over all the user's processes: leave room for MAX_TASKS
        // more (an unprivileged process cannot raise its hard limit).
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut current) };
        Some((user_tasks() + MAX_TASKS as libc::rlim_t).min(current.rlim_max))
    };
    if cgroup.is_none() && nproc.is_none() {
        let why = cgroup_error
            .take()
            .unwrap_or_else(|| "no writable pids cgroup was found".to_string());
        if strict {
            return Err(best_effort_hint(&format!(
                "the pids limit is not available here ({why}; RLIMIT_NPROC does not bind a \
                 root host), so the OS sandbox cannot limit the program to {MAX_TASKS} tasks"
            )));
        }
        missing.push(format!(
            "{why} and RLIMIT_NPROC does not bind root: the program's number of processes is \
             not limited (to {MAX_TASKS})"
        ));
    }
    // Without a cgroup but with RLIMIT_NPROC the limit holds all the same.
    if let Some(why) = cgroup_error {
        tracing::debug!("OS sandbox: {why}; RLIMIT_NPROC limits the program instead");
    }

    let ruleset = if abi >= 1 {
        Some(build_ruleset(request, abi, ns.net).map_err(|e| format!("OS sandbox: {e}"))?)
    } else {
        None
    };

    let mut unshare = 0;
    if ns.user {
        unshare |= libc::CLONE_NEWUSER;
    }
    if ns.net && !networked {
        unshare |= libc::CLONE_NEWNET;
    }
    if ns.pid && lifeline().is_some() {
        unshare |= libc::CLONE_NEWPID;
    }

    let (stage_read, stage_write) = stage_pipe().map_err(|e| format!("OS sandbox: {e}"))?;
    let setup = ChildSetup {
        stage: stage_write.as_raw_fd(),
        cgroup_procs: cgroup.as_ref().map(|c| c.procs.as_raw_fd()),
        unshare,
        id_maps: ns.user.then(IdMaps::current),
        nproc,
        ruleset: ruleset.as_ref().map(AsRawFd::as_raw_fd),
        pid_init: ns.pid && lifeline().is_some(),
        lifeline: lifeline().unwrap_or(-1),
    };
    let warnings = if strict {
        for what in &missing {
            tracing::debug!("OS sandbox: {what}");
        }
        Vec::new()
    } else {
        missing
            .into_iter()
            .map(|what| format!("sandbox: best-effort: {what}"))
            .collect()
    };
    Ok(Prepared {
        setup,
        _ruleset: ruleset,
        stage_read,
        _stage_write: stage_write,
        cgroup,
        warnings,
    })
}

fn best_effort_hint(what: &str) -> String {
    format!("{what}; set `sandbox: best-effort` on the step to run programs without it")
}

impl Prepared {
    /// Make `command`'s child enter the sandbox between fork and exec.
    pub(crate) fn install(&self, command: &mut tokio::process::Command) {
        let setup = self.setup.clone();
        // SAFETY: `enter` only makes async-signal-safe system calls on data
        // prepared before the fork; the descriptors it uses stay open until
        // the spawn returned (they are owned by `self`).
        unsafe {
            command.pre_exec(move || setup.enter());
        }
    }

    /// The pids cgroup of the program, to kill its tree and remove it.
    pub(crate) fn take_cgroup(&mut self) -> Option<Cgroup> {
        self.cgroup.take()
    }

    /// Explain a spawn error: which step of the sandbox set-up failed.
    pub(crate) fn explain(&self, error: &io::Error) -> String {
        let mut byte = 0u8;
        // SAFETY: a non-blocking read of one byte into a local.
        let read = unsafe { libc::read(self.stage_read.as_raw_fd(), (&raw mut byte).cast(), 1) };
        match (read, Stage::from_byte(byte)) {
            (1, Some(stage)) => format!("{error} (while {})", stage.describe()),
            _ => error.to_string(),
        }
    }
}

fn stage_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the array with two new descriptors we own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Tasks (threads) currently run by the host's user, for an RLIMIT_NPROC
/// that leaves room for `MAX_TASKS` more without a user namespace.
fn user_tasks() -> libc::rlim_t {
    // SAFETY: plain getter.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| {
            std::fs::read_dir(e.path().join("task"))
                .map(|tasks| tasks.count() as libc::rlim_t)
                .unwrap_or(1)
        })
        .sum()
}

/// The Landlock rules of one program, as `(path, access)`.
fn fs_rules(request: &Request, abi: ABI) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    // Execute is granted on the programs alone: no directory rule carries
    // it, so nothing copied into a writable directory can be run either.
    let no_exec = !BitFlags::from(AccessFs::Execute);
    let executable = AccessFs::from_read(abi) & AccessFs::from_file(abi);
    let read_dir = AccessFs::from_read(abi) & no_exec;
    let read_file = executable & no_exec;
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let write_file = AccessFs::from_file(abi) & no_exec;
    let all = AccessFs::from_all(abi) & no_exec;
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    let mut add = |path: &Path, dir: BitFlags<AccessFs>, file: BitFlags<AccessFs>| {
        if let Ok(meta) = std::fs::metadata(path) {
            let access = if meta.is_dir() { dir } else { file };
            rules.push((path.to_path_buf(), access));
        }
    };
    for dir in SYSTEM_DIRS {
        add(Path::new(dir), read_dir, read_file);
    }
    for file in SYSTEM_FILES {
        add(
            Path::new(file),
            read_only,
            read_only & AccessFs::from_file(abi),
        );
    }
    for dir in SYSTEM_ETC_DIRS {
        add(
            Path::new(dir),
            read_only,
            read_only & AccessFs::from_file(abi),
        );
    }
    for device in DEVICES {
        add(Path::new(device), write_file, write_file);
    }
    if !request.grants.network.is_empty() {
        for file in NETWORK_FILES.iter().chain(NETWORK_DIRS) {
            add(
                Path::new(file),
                read_only,
                read_only & AccessFs::from_file(abi),
            );
        }
    }
    // Only the programs the step may start can be executed, by anything in
    // the tree (a rule on each file), and the dynamic loader each names
    // (the kernel opens it for execution too).
    let programs = std::iter::once(request.program)
        .chain(request.grants.exec.iter().map(|grant| grant.path.as_path()));
    for program in programs {
        // A granted script's `#!` interpreter is granted with it.
        let interpreter = script_interpreter(program);
        for file in std::iter::once(program).chain(interpreter.as_deref()) {
            add(file, read_dir, executable);
            if let Some(loader) = elf_interpreter(file) {
                add(&loader, read_dir, executable);
            }
        }
    }
    for (path, writable) in &request.grants.files {
        if *writable {
            add(path, all, write_file);
        } else {
            add(path, read_dir, read_file);
        }
    }
    add(request.private_dir, all, write_file);
    if let Some(file) = request.output_file {
        add(file, write_file, write_file);
    }
    rules
}

/// The interpreter a script names on its `#!` line, canonical; `None` for
/// anything else.
fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(program).ok()?;
    let read = file.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n')?];
    let text = std::str::from_utf8(line).ok()?;
    let path = text.split_whitespace().next()?;
    std::fs::canonicalize(path).ok()
}

/// The dynamic loader an ELF program names (`PT_INTERP`), canonical;
/// `None` for a static program, a script or anything unreadable.
fn elf_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let mut file = std::fs::File::open(program).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    if header[..4] != *b"\x7fELF" || header[5] != 1 {
        return None; // not ELF, or not little-endian
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let wide = match header[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (
            u64_at(&header, 32),
            u16_at(&header, 54),
            u16_at(&header, 56),
        )
    } else {
        (
            u32_at(&header, 28) as u64,
            u16_at(&header, 42),
            u16_at(&header, 44),
        )
    };
    let needed = if wide { 56 } else { 32 };
    if phentsize < needed || phnum > 256 {
        return None;
    }
    let mut entry = vec![0u8; phentsize as usize];
    for index in 0..phnum {
        file.seek(SeekFrom::Start(phoff.checked_add(index * phentsize)?))
            .ok()?;
        file.read_exact(&mut entry).ok()?;
        if u32_at(&entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (u64_at(&entry, 8), u64_at(&entry, 32))
        } else {
            (u32_at(&entry, 4) as u64, u32_at(&entry, 16) as u64)
        };
        if size == 0 || size > 4096 {
            return None;
        }
        let mut name = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut name).ok()?;
        let name = name.split(|b| *b == 0).next()?;
        use std::os::unix::ffi::OsStrExt;
        return std::fs::canonicalize(std::ffi::OsStr::from_bytes(name)).ok();
    }
    None
}

/// Build the Landlock ruleset in the host; the child only enforces it.
fn build_ruleset(request: &Request, abi_version: i32, netns: bool) -> Result<OwnedFd, String> {
    let abi = ABI::from(abi_version);
    let grants = request.grants;
    let fs = AccessFs::from_all(abi);
    // TCP: with a network grant, connect only to granted ports (any port
    // when a grant names none) and never listen; without one, the empty
    // network namespace already cuts everything, Landlock only steps in
    // when there is no namespace.
    let mut tcp: BitFlags<AccessNet> = BitFlags::EMPTY;
    let mut ports = Vec::new();
    if abi_version >= 4 {
        if grants.network.is_empty() {
            if !netns {
                tcp = AccessNet::BindTcp | AccessNet::ConnectTcp;
            }
        } else {
            tcp = AccessNet::BindTcp.into();
            if grants.network.iter().all(|g| g.port.is_some()) {
                tcp |= AccessNet::ConnectTcp;
                ports = grants.network.iter().filter_map(|g| g.port).collect();
                ports.sort_unstable();
                ports.dedup();
            }
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(fs)
        .map_err(|e| e.to_string())?;
    if !tcp.is_empty() {
        ruleset = ruleset.handle_access(tcp).map_err(|e| e.to_string())?;
    }
    if abi_version >= 6 {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    for (path, access) in fs_rules(request, abi) {
        // A granted directory's rule is made on the handle opened when the
        // run started, not on its name, which may have been swapped since.
        let rule = match request.grants.handle(&path) {
            Some(handle) => created.add_rule(PathBeneath::new(handle.as_fd(), access)),
            None => {
                let fd = PathFd::new(&path)
                    .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
                created.add_rule(PathBeneath::new(fd, access))
            }
        };
        created = rule.map_err(|e| format!("rule for '{}': {e}", path.display()))?;
    }
    for port in ports {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| format!("rule for TCP port {port}: {e}"))?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| "Landlock refused the ruleset".to_string())
}

// ---------------------------------------------------------------------------
// In the child, between fork and exec

/// Which part of the child's set-up failed (sent to the host through a
/// pipe, one byte, for the error message).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Stage {
    Session = 1,
    Cgroup,
    Namespaces,
    IdMaps,
    Limits,
    NoNewPrivs,
    Landlock,
    Init,
}

impl Stage {
    fn from_byte(byte: u8) -> Option<Stage> {
        use Stage::*;
        [
            Session, Cgroup, Namespaces, IdMaps, Limits, NoNewPrivs, Landlock, Init,
        ]
        .into_iter()
        .find(|stage| *stage as u8 == byte)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::Session => "starting a new session",
            Stage::Cgroup => "joining the program's pids cgroup",
            Stage::Namespaces => "entering new user/network/pid namespaces",
            Stage::IdMaps => "writing the user namespace's id maps",
            Stage::Limits => "setting the process limit",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Landlock => "enforcing the Landlock ruleset",
            Stage::Init => "starting the sandbox's init process",
        }
    }
}

/// Everything the child does between fork and exec, on data prepared in
/// the host. Raw descriptors are owned by [`Prepared`].
#[derive(Clone)]
struct ChildSetup {
    stage: RawFd,
    cgroup_procs: Option<RawFd>,
    unshare: libc::c_int,
    id_maps: Option<IdMaps>,
    nproc: Option<libc::rlim_t>,
    ruleset: Option<RawFd>,
    pid_init: bool,
    /// Read end of [`lifeline`]: hangs up when the host process is gone.
    lifeline: RawFd,
}

impl ChildSetup {
    /// Enter the sandbox. Runs in the forked child: system calls only.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: every call below is async-signal-safe and uses memory
        // prepared before the fork.
        unsafe {
            if libc::setsid() < 0 {
                return Err(self.fail(Stage::Session));
            }
            if let Some(fd) = self.cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(self.fail(Stage::Cgroup));
                }
            }
            if self.unshare != 0 && libc::unshare(self.unshare) < 0 {
                return Err(self.fail(Stage::Namespaces));
            }
            if let Some(maps) = &self.id_maps {
                if let Err(stage) = maps.write() {
                    return Err(self.fail(stage));
                }
            }
            if let Some(limit) = self.nproc {
                let limit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &limit) < 0 {
                    return Err(self.fail(Stage::Limits));
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(self.fail(Stage::NoNewPrivs));
            }
            if let Some(fd) = self.ruleset {
                if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) < 0 {
                    return Err(self.fail(Stage::Landlock));
                }
            }
            if self.pid_init {
                self.split_init()
            } else {
                Ok(())
            }
        }
    }

    /// Record the failing stage for the host and return the error.
    unsafe fn fail(&self, stage: Stage) -> io::Error {
        let error = errno();
        libc::write(self.stage, [stage as u8].as_ptr().cast(), 1);
        io::Error::from_raw_os_error(error)
    }

    /// Fork twice (see the module doc). Returns only in the process that
    /// execs the program.
    unsafe fn split_init(&self) -> io::Result<()> {
        let mut report = [-1; 2];
        if libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(self.fail(Stage::Init));
        }
        let init = libc::fork();
        if init < 0 {
            return Err(self.fail(Stage::Init));
        }
        if init > 0 {
            // The process the host waits for, outside the new namespace.
            libc::close(report[1]);
            for signal in POLITE_SIGNALS {
                libc::signal(*signal, libc::SIG_IGN);
            }
            no_core_dumps();
            let mut keep = [report[0], self.lifeline];
            keep.sort_unstable();
            close_all_except(&keep);
            let reported = wait_for_report(report[0], self.lifeline, init);
            let mut status = 0;
            while libc::waitpid(init, &mut status, 0) < 0 && errno() == libc::EINTR {}
            mirror(reported.unwrap_or(status));
        }
        // The init of the new pid namespace.
        libc::close(report[0]);
        let program = libc::fork();
        if program < 0 {
            return Err(self.fail(Stage::Init));
        }
        if program == 0 {
            libc::close(report[1]);
            return Ok(());
        }
        no_core_dumps();
        close_all_except(&[report[1]]);
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, libc::__WALL);
            if pid == program {
                let bytes = status.to_ne_bytes();
                libc::write(report[1], bytes.as_ptr().cast(), 4);
                // Exiting kills and reaps everything left in the namespace.
                libc::_exit(0);
            }
            if pid < 0 && errno() != libc::EINTR {
                libc::_exit(0);
            }
        }
    }
}

/// Wait for the init's report of how the program ended. When the host
/// process dies first (the lifeline hangs up), kill the init, which takes
/// the program's whole tree with it: programs do not outlive their host.
unsafe fn wait_for_report(report: RawFd, lifeline: RawFd, init: libc::pid_t) -> Option<i32> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: report,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: lifeline,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return None;
        }
        if fds[0].revents != 0 {
            let mut bytes = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let n = libc::read(report, bytes[got..].as_mut_ptr().cast(), 4 - got);
                if n > 0 {
                    got += n as usize;
                } else if n == 0 || errno() != libc::EINTR {
                    break;
                }
            }
            return (got == 4).then(|| i32::from_ne_bytes(bytes));
        }
        if fds[1].revents != 0 {
            libc::kill(init, libc::SIGKILL);
            return None;
        }
    }
}

/// A pipe whose write end only the host process holds (close-on-exec, and
/// closed by the sandbox's waiting processes), so its read end hangs up
/// when the host is gone, however it died.
fn lifeline() -> Option<RawFd> {
    static LIFELINE: OnceLock<Option<(OwnedFd, OwnedFd)>> = OnceLock::new();
    LIFELINE
        .get_or_init(|| {
            let mut fds = [-1; 2];
            // SAFETY: pipe2 fills the array with two new descriptors we own.
            unsafe {
                if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
                    return None;
                }
                Some((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
            }
        })
        .as_ref()
        .map(|(read, _)| read.as_raw_fd())
}

/// Signals the waiting process ignores: the program gets them (it is in the
/// same process group) and the waiting process reports how it ended.
const POLITE_SIGNALS: &[libc::c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
];

/// End the calling process the way `status` says the program ended.
unsafe fn mirror(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal);
    }
    libc::_exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    })
}

unsafe fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    libc::setrlimit(libc::RLIMIT_CORE, &zero);
}

/// Close every descriptor but those in `keep` (sorted), including the
/// standard streams and the pipe through which std learns that the program
/// was exec'd.
unsafe fn close_all_except(keep: &[RawFd]) {
    let mut first: libc::c_uint = 0;
    let mut ok = true;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > first {
            ok &= libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) == 0;
        }
        first = fd + 1;
    }
    ok &= libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) == 0;
    if !ok {
        for fd in 0..4096 {
            if !keep.contains(&fd) {
                libc::close(fd);
            }
        }
    }
}

/// `open`, `write`, `close`: returns a negative number on failure.
unsafe fn write_file(path: &CStr, bytes: &[u8]) -> isize {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return -1;
    }
    let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    libc::close(fd);
    written
}

fn errno() -> libc::c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::grants::NetworkGrant;

    fn rules(grants: &ResolvedGrants, private: &Path) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
        let request = Request {
            grants,
            program: Path::new("/bin/sh"),
            private_dir: private,
            output_file: None,
        };
        fs_rules(&request, ABI::V7)
    }

    #[test]
    fn etc_stays_closed_but_for_the_loader_and_the_network_files() {
        let private = tempfile::tempdir().unwrap();
        let grants = ResolvedGrants::default();
        let closed = rules(&grants, private.path());
        assert!(closed.iter().all(|(path, _)| path != Path::new("/etc")));
        assert!(closed
            .iter()
            .all(|(path, _)| !path.starts_with("/etc/passwd") && !path.starts_with("/etc/ssl")));
        assert!(closed.iter().any(|(path, _)| path == Path::new("/usr")));
        let private_rule = closed
            .iter()
            .find(|(path, _)| path == private.path())
            .expect("the private directory is granted");
        assert!(private_rule
            .1
            .contains(AccessFs::WriteFile | AccessFs::MakeReg));

        let networked = ResolvedGrants {
            network: vec![NetworkGrant::parse("example.com:443").unwrap()],
            ..ResolvedGrants::default()
        };
        let open = rules(&networked, private.path());
        if Path::new("/etc/resolv.conf").exists() {
            let resolv = open
                .iter()
                .find(|(path, _)| path == Path::new("/etc/resolv.conf"))
                .expect("resolv.conf is readable with a network grant");
            assert_eq!(resolv.1, BitFlags::from(AccessFs::ReadFile));
        }
    }

    #[test]
    fn read_grants_are_read_only_and_files_get_file_rights_only() {
        let private = tempfile::tempdir().unwrap();
        let granted = tempfile::tempdir().unwrap();
        let grants = ResolvedGrants {
            files: vec![(granted.path().to_path_buf(), false)],
            ..ResolvedGrants::default()
        };
        let all = rules(&grants, private.path());
        let rule = all.iter().find(|(path, _)| path == granted.path()).unwrap();
        assert_eq!(rule.1, AccessFs::from_read(ABI::V7) & !AccessFs::Execute);
        let null = all
            .iter()
            .find(|(path, _)| path == Path::new("/dev/null"))
            .unwrap();
        assert!(null.1.contains(AccessFs::WriteFile | AccessFs::Truncate));
        assert!(!null.1.contains(AccessFs::ReadDir));
    }

    #[test]
    fn execute_is_granted_on_the_programs_and_their_loader_only() {
        let private = tempfile::tempdir().unwrap();
        let granted = tempfile::tempdir().unwrap();
        let cat = crate::step::grants::resolve_program("cat").unwrap();
        let grants = ResolvedGrants {
            files: vec![(granted.path().to_path_buf(), true)],
            exec: vec![crate::step::grants::ExecGrant {
                name: "cat".into(),
                path: cat.clone(),
            }],
            ..ResolvedGrants::default()
        };
        let all = rules(&grants, private.path());
        let executable: Vec<&PathBuf> = all
            .iter()
            .filter(|(_, access)| access.contains(AccessFs::Execute))
            .map(|(path, _)| path)
            .collect();
        let mut expected = vec![Path::new("/bin/sh").to_path_buf(), cat.clone()];
        expected.extend(elf_interpreter(&cat));
        expected.extend(elf_interpreter(Path::new("/bin/sh")));
        for path in &executable {
            assert!(expected.contains(path), "{path:?} is executable");
            assert!(!path.is_dir(), "a directory carries Execute: {path:?}");
        }
        assert!(executable.contains(&&cat));
        let usr = all
            .iter()
            .find(|(path, _)| path == Path::new("/usr"))
            .unwrap();
        assert!(usr.1.contains(AccessFs::ReadFile) && !usr.1.contains(AccessFs::Execute));
    }

    #[test]
    fn the_dynamic_loader_of_a_program_is_found() {
        let sh = crate::step::grants::resolve_program("sh").unwrap();
        if let Some(loader) = elf_interpreter(&sh) {
            assert!(loader.is_absolute() && loader.is_file(), "{loader:?}");
            assert!(loader.to_string_lossy().contains("ld"), "{loader:?}");
        }
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(elf_interpreter(script.path()), None);
        assert_eq!(script_interpreter(script.path()), Some(sh));
        assert_eq!(script_interpreter(Path::new("/nonexistent")), None);
        assert_eq!(elf_interpreter(Path::new("/nonexistent")), None);
    }

    #[test]
    fn failing_stages_round_trip_through_their_byte() {
        for stage in [Stage::Session, Stage::Cgroup, Stage::Landlock, Stage::Init] {
            let back = Stage::from_byte(stage as u8).unwrap();
            assert_eq!(back.describe(), stage.describe());
        }
        assert!(Stage::from_byte(0).is_none());
    }
}
