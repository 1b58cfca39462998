//! The OS sandbox around programs started through `process` (see
//! [`super::process`] for what a step author sees).
//!
//! Everything is prepared in the host, before `fork`: the Landlock ruleset
//! (paths opened, rules added), the `pids` cgroup and the descriptor the
//! child joins it through, the user-namespace id maps. The fork itself is
//! the [`launcher`]'s (a small process started from the host's binary),
//! which gets those as descriptors; without one, the host forks. Between
//! `fork` and `exec` the child ([`ChildSetup::enter`]) only makes system
//! calls, in this order:
//!
//! 1. `setsid`: its own session and process group, no controlling terminal;
//! 2. joins the `pids` cgroup (a `write` to the pre-opened `tasks` of cgroup
//!    v1, `cgroup.procs` of v2), and the launcher's shared empty network
//!    namespace where it has one (see [`launcher`]);
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
//! The launcher does the same with one process less: it clones the
//! namespace's init straight into the new namespaces (`clone` with the
//! namespace flags, after entering the working directory and the shared
//! empty network namespace itself); the init makes steps 1, 2 and 4 to 5
//! and starts the program with `posix_spawn` (a `vfork`), then tells the
//! launcher how it ended through the set-up pipe
//! ([`ChildSetup::run_as_init`]). It watches the host's lifeline itself.
//!
//! The rules' handles of system files and programs are kept for the host's
//! life while their names name the same files ([`handles`]).
//!
//! What the kernel offers is detected once ([`support`]); what a step needs
//! and the kernel lacks either fails the call (`sandbox: strict`, the
//! default) or is reported as a warning (`sandbox: best-effort`).

mod cgroup;
mod child;
mod handles;
mod launcher;
mod rules;
mod start;
mod support;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::step::grants::{NetworkAccess, ResolvedGrants, SandboxMode};

pub(crate) use cgroup::Cgroup;
pub(crate) use launcher::{
    enable as enable_launcher, prestart as prestart_launcher, serve as serve_launcher, LAUNCHER_ARG,
};
pub(crate) use start::{start, Launch, Started};
#[cfg(test)]
pub(crate) use support::Namespaces;
pub(crate) use support::{detect_support_in_background, support, Support};

use child::{lifeline, ChildSetup, IdMaps, Stage};
use rules::build_ruleset;

/// Most tasks (processes and threads) the tree of one started program may
/// have at once: enough for a parallel build, few enough that a fork bomb
/// leaves the host responsive.
pub(crate) const MAX_TASKS: u64 = 512;

/// The message of a strict step on a kernel without Landlock.
pub(crate) const LANDLOCK_MISSING: &str = "the OS sandbox (Landlock) is not available on this \
     kernel; set `sandbox: best-effort` on the step to run programs without it";

// Preparing one program's sandbox

/// What one program may touch, besides its grants.
pub(crate) struct Request<'a> {
    /// The step's grants.
    pub grants: &'a ResolvedGrants,
    /// The program (granted read and execute when outside system dirs).
    pub program: &'a Path,
    /// The program's private directory (read-write; `TMPDIR`, where the
    /// `WFHOST_OUTPUT` file is written too).
    pub private_dir: &'a Path,
}

/// A sandbox ready to be installed on a command.
pub(crate) struct Prepared {
    setup: ChildSetup,
    /// Owners of the descriptors `setup` refers to; dropped after spawning.
    _ruleset: Option<OwnedFd>,
    stage_read: OwnedFd,
    _stage_write: OwnedFd,
    cgroup: Option<Cgroup>,
    /// Whether the program may join the launcher's shared empty network
    /// namespace instead of creating its own: only where Landlock scopes
    /// abstract unix sockets (ABI 6), the one thing such a namespace would
    /// otherwise let two programs share.
    share_network: bool,
    /// What could not be enforced (best-effort mode), for the step's log.
    pub warnings: Vec<String>,
}

/// Prepare the sandbox of one program. Fails (strict mode) with the
/// message to show when the kernel cannot enforce what the step needs.
pub(crate) fn prepare(request: &Request, support: &Support) -> Result<Prepared, String> {
    let grants = request.grants;
    let strict = grants.sandbox == SandboxMode::Strict;
    let plan = crate::step::grants::sandbox_plan(grants);
    let networked = plan.network != NetworkAccess::None;
    let ns = support.namespaces;
    let abi = support.landlock_abi;
    let mut missing = check_kernel(grants.sandbox, &plan.network, support)?;
    let (cgroup, nproc) = limit_tasks(support, strict, &mut missing)?;

    let ruleset = if abi >= 1 {
        Some(build_ruleset(request, &plan, abi, ns.net).map_err(|e| format!("OS sandbox: {e}"))?)
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

    let ruleset_built = ruleset.is_some();
    let (stage_read, stage_write) = stage_pipe().map_err(|e| format!("OS sandbox: {e}"))?;
    let setup = ChildSetup {
        stage: stage_write.as_raw_fd(),
        cgroup_join: cgroup.as_ref().map(|c| c.join.as_raw_fd()),
        join_net: None,
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
        share_network: abi >= 6 && ruleset_built,
        warnings,
    })
}

/// What the kernel cannot enforce for this step: an error in strict mode,
/// else the list of what is missing (for best-effort warnings).
fn check_kernel(
    mode: SandboxMode,
    network: &NetworkAccess,
    support: &Support,
) -> Result<Vec<String>, String> {
    let strict = mode == SandboxMode::Strict;
    let mut missing = Vec::new();
    let networked = *network != NetworkAccess::None;
    let port_rules = matches!(network, NetworkAccess::Ports(_));
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

    Ok(missing)
}

/// How the program's number of tasks is limited: its `pids` cgroup and the
/// `RLIMIT_NPROC` to set, if any. Fails (strict mode) or notes in `missing`
/// when neither is available.
fn limit_tasks(
    support: &Support,
    strict: bool,
    missing: &mut Vec<String>,
) -> Result<(Option<Cgroup>, Option<libc::rlim_t>), String> {
    let ns = support.namespaces;
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

    Ok((cgroup, nproc))
}

fn best_effort_hint(what: &str) -> String {
    format!("{what}; set `sandbox: best-effort` on the step to run programs without it")
}

impl Prepared {
    /// Make `command`'s child enter the sandbox between fork and exec.
    fn install(&self, command: &mut tokio::process::Command) {
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
        let mut bytes = [0u8; 5];
        // SAFETY: a non-blocking read into a local (the stage and errno).
        let read = unsafe {
            libc::read(
                self.stage_read.as_raw_fd(),
                bytes.as_mut_ptr().cast(),
                bytes.len(),
            )
        };
        match (read, Stage::from_byte(bytes[0])) {
            (5, Some(stage)) => {
                if stage.needs_support() {
                    support::forget_remembered();
                }
                format!("{error} (while {})", stage.describe())
            }
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
