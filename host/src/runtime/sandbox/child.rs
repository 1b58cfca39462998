//! What the child does between `fork` and `exec` (see the module doc of
//! [`super`]): system calls only, on data prepared in the host.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// Id maps of a fresh user namespace: the host's uid and gid mapped to
/// themselves, nothing else (all an unprivileged process may write, and all
/// a root host's program should have: root inside, without any capability
/// over the rest of the machine).
#[derive(Debug, Clone)]
pub(super) struct IdMaps {
    uid: Vec<u8>,
    gid: Vec<u8>,
}

impl IdMaps {
    pub(super) fn current() -> IdMaps {
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
    pub(super) unsafe fn write(&self) -> Result<(), Stage> {
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

/// Which part of the child's set-up failed (sent to the host through a
/// pipe, one byte, for the error message).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(super) enum Stage {
    Session = 1,
    Cgroup,
    Namespaces,
    IdMaps,
    Limits,
    NoNewPrivs,
    Landlock,
    Init,
    Directory,
    Exec,
}

impl Stage {
    pub(super) fn from_byte(byte: u8) -> Option<Stage> {
        use Stage::*;
        [
            Session, Cgroup, Namespaces, IdMaps, Limits, NoNewPrivs, Landlock, Init, Directory,
            Exec,
        ]
        .into_iter()
        .find(|stage| *stage as u8 == byte)
    }

    /// Whether the stage uses what [`super::support`] detected (a failure
    /// there may mean the kernel no longer offers it).
    pub(super) fn needs_support(self) -> bool {
        matches!(self, Stage::Cgroup | Stage::Namespaces | Stage::IdMaps)
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Stage::Session => "starting a new session",
            Stage::Cgroup => "joining the program's pids cgroup",
            Stage::Namespaces => "entering new user/network/pid namespaces",
            Stage::IdMaps => "writing the user namespace's id maps",
            Stage::Limits => "setting the process limit",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Landlock => "enforcing the Landlock ruleset",
            Stage::Init => "starting the sandbox's init process",
            Stage::Directory => "entering the working directory",
            Stage::Exec => "starting the program",
        }
    }
}

/// Everything the child does between fork and exec, on data prepared in
/// the host. Raw descriptors are owned by [`Prepared`].
#[derive(Clone)]
pub(super) struct ChildSetup {
    pub(super) stage: RawFd,
    pub(super) cgroup_join: Option<RawFd>,
    /// A network namespace to join (`setns`) instead of creating one.
    pub(super) join_net: Option<RawFd>,
    pub(super) unshare: libc::c_int,
    pub(super) id_maps: Option<IdMaps>,
    pub(super) nproc: Option<libc::rlim_t>,
    pub(super) ruleset: Option<RawFd>,
    pub(super) pid_init: bool,
    /// Read end of [`lifeline`]: hangs up when the host process is gone.
    pub(super) lifeline: RawFd,
}

impl ChildSetup {
    /// Enter the sandbox. Runs in the forked child: system calls only.
    pub(super) fn enter(&self) -> io::Result<()> {
        // SAFETY: every call below is async-signal-safe and uses memory
        // prepared before the fork.
        unsafe {
            if libc::setsid() < 0 {
                return Err(self.fail(Stage::Session));
            }
            if let Some(fd) = self.cgroup_join {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(self.fail(Stage::Cgroup));
                }
            }
            // Joined before the user namespace is created: afterwards the
            // child has no privilege over the host's namespaces.
            if let Some(fd) = self.join_net {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(self.fail(Stage::Namespaces));
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
            self.restrict()?;
            if self.pid_init {
                self.split_init()
            } else {
                Ok(())
            }
        }
    }

    /// The launcher's way into the sandbox, in a process it cloned straight
    /// into the new user and pid namespaces (so this process is their init
    /// and no process stays outside to mirror the program; see
    /// [`super::launcher`]): the same set-up as [`ChildSetup::enter`], then
    /// the program is started with `posix_spawn` (a `vfork`: no copy of
    /// this process's page tables) and this process reaps orphans until it
    /// ends. Reports on the stage pipe: a failure (stage, errno) or
    /// [`STARTED_RECORD`], later the program's wait status (4 bytes).
    /// Exiting kills whatever the program left in the namespace. Never
    /// returns.
    ///
    /// # Safety
    /// Runs in a freshly cloned child of a single-threaded process; the
    /// pointers are a NULL-terminated `argv` and `envp` and `program` a C
    /// string, all prepared before the clone.
    pub(super) unsafe fn run_as_init(
        &self,
        stdio: [RawFd; 3],
        program: *const libc::c_char,
        argv: *const *mut libc::c_char,
        envp: *const *mut libc::c_char,
    ) -> ! {
        self.take_stdio(stdio);
        if self.enter_namespaced().is_err() {
            libc::_exit(127);
        }
        // The program gets an empty signal mask and SIGPIPE's default action
        // (this process blocks SIGCHLD and, as any Rust program, ignores
        // SIGPIPE).
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut pipe_only: libc::sigset_t = std::mem::zeroed();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigemptyset(&mut pipe_only);
        libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
        if libc::posix_spawnattr_init(&mut attr) != 0
            || libc::posix_spawnattr_setsigmask(&mut attr, &empty) != 0
            || libc::posix_spawnattr_setsigdefault(&mut attr, &pipe_only) != 0
            || libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ) != 0
        {
            report_failure(self.stage, Stage::Init, libc::ENOMEM);
            libc::_exit(127);
        }
        // Children's ends arrive on a signalfd (SIGCHLD is blocked here, as
        // in the launcher), polled with the lifeline.
        let exits = child_exits();
        if exits < 0 {
            self.fail(Stage::Init);
            libc::_exit(127);
        }
        let mut child: libc::pid_t = 0;
        let spawned = libc::posix_spawn(&mut child, program, std::ptr::null(), &attr, argv, envp);
        if spawned != 0 {
            report_failure(self.stage, Stage::Exec, spawned);
            libc::_exit(127);
        }
        libc::write(
            self.stage,
            STARTED_RECORD.as_ptr().cast(),
            STARTED_RECORD.len(),
        );
        no_core_dumps();
        let mut keep = [self.stage, self.lifeline, exits];
        keep.sort_unstable();
        close_all_except(&keep);
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: exits,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.lifeline,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                libc::_exit(0);
            }
            // The host is gone: so is everything it started.
            if fds[1].revents != 0 {
                libc::_exit(0);
            }
            drain(exits);
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL);
                if pid == child {
                    let bytes = status.to_ne_bytes();
                    libc::write(self.stage, bytes.as_ptr().cast(), 4);
                    libc::_exit(0);
                }
                if pid < 0 && errno() == libc::ECHILD {
                    libc::_exit(0);
                }
                if pid <= 0 {
                    break;
                }
            }
        }
    }

    /// Make `stdio` the calling process's descriptors 0 to 2, or report
    /// the failure and exit.
    ///
    /// # Safety
    /// In a forked or cloned child: system calls only.
    pub(super) unsafe fn take_stdio(&self, stdio: [RawFd; 3]) {
        for (target, fd) in stdio.into_iter().enumerate() {
            // dup2 clears close-on-exec on the copy; the sources are >= 3.
            if libc::dup2(fd, target as RawFd) < 0 {
                self.fail(Stage::Exec);
                libc::_exit(127);
            }
        }
    }

    /// [`ChildSetup::enter`] for a process already in its new namespaces:
    /// session, cgroup, id maps, limits, `no_new_privs`, Landlock.
    unsafe fn enter_namespaced(&self) -> io::Result<()> {
        if libc::setsid() < 0 {
            return Err(self.fail(Stage::Session));
        }
        if let Some(fd) = self.cgroup_join {
            if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(self.fail(Stage::Cgroup));
            }
        }
        if let Some(maps) = &self.id_maps {
            if let Err(stage) = maps.write() {
                return Err(self.fail(stage));
            }
        }
        // This process watches the host's lifeline and reports how the
        // program ended: the program (root of the same user namespace) must
        // not be able to ptrace it or open its descriptors. Not dumpable,
        // it can't: this process's memory belongs to the host's namespace,
        // where the program holds no capability. (After the id maps: they
        // are written through this process's own /proc files.)
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 {
            return Err(self.fail(Stage::Init));
        }
        self.restrict()
    }

    /// The process limit, `no_new_privs` and the Landlock ruleset.
    unsafe fn restrict(&self) -> io::Result<()> {
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
        Ok(())
    }

    /// Record the failing stage for the host and return the error.
    pub(super) unsafe fn fail(&self, stage: Stage) -> io::Error {
        let error = errno();
        report_failure(self.stage, stage, error);
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
        // The init of the new pid namespace: not dumpable, so that the
        // program (root of the same user namespace) cannot ptrace it (see
        // `enter_namespaced`).
        libc::close(report[0]);
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 {
            return Err(self.fail(Stage::Init));
        }
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

/// Block SIGCHLD and return a non-blocking signalfd that is readable when a
/// child ended (-1 when none can be made).
///
/// # Safety
/// Changes the calling thread's signal mask.
pub(super) unsafe fn child_exits() -> RawFd {
    let mut children = std::mem::zeroed::<libc::sigset_t>();
    libc::sigemptyset(&mut children);
    libc::sigaddset(&mut children, libc::SIGCHLD);
    libc::sigprocmask(libc::SIG_BLOCK, &children, std::ptr::null_mut());
    libc::signalfd(-1, &children, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
}

/// Empty the signalfd of [`child_exits`] (the children are then reaped with
/// `waitpid`).
pub(super) fn drain(exits: RawFd) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    // SAFETY: non-blocking reads into a local.
    while unsafe { libc::read(exits, info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// What [`ChildSetup::run_as_init`] writes on the stage pipe once the
/// program started: a stage byte of 0 (no failure) and four zero bytes.
pub(super) const STARTED_RECORD: [u8; 5] = [0; 5];

/// Write the failing stage and its errno (five bytes, one `write`, so the
/// reader sees all or nothing) to `fd`.
pub(super) unsafe fn report_failure(fd: RawFd, stage: Stage, error: libc::c_int) {
    let mut bytes = [0u8; 5];
    bytes[0] = stage as u8;
    bytes[1..].copy_from_slice(&error.to_le_bytes());
    libc::write(fd, bytes.as_ptr().cast(), bytes.len());
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
pub(super) fn lifeline() -> Option<RawFd> {
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

pub(super) fn errno() -> libc::c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_stages_round_trip_through_their_byte() {
        for stage in [Stage::Session, Stage::Cgroup, Stage::Landlock, Stage::Init] {
            let back = Stage::from_byte(stage as u8).unwrap();
            assert_eq!(back.describe(), stage.describe());
        }
        assert!(Stage::from_byte(0).is_none());
    }
}
