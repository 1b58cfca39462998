//! The launcher process: a fresh, single-threaded copy of the wfhost binary
//! that forks sandboxed programs on the host's behalf. Forking it costs a
//! small fraction of forking the host (its page tables are tiny; the host's
//! grow with the run), and no copy-on-write faults land on the host.
//!
//! It serves one host over the socket it got as stdin: each SPAWN frame
//! brings the program's command line and the descriptors prepared by the
//! host (stdio, the cgroup to join, the Landlock ruleset). With a pid
//! namespace, the launcher clones the namespace's init into its new
//! namespaces, which sets itself up and starts the program
//! ([`ChildSetup::run_as_init`]); without one, the child does what the
//! host's own child would ([`ChildSetup::enter`]), then `execve`. The
//! launcher answers STARTED (exec'd) or FAILED (stage and errno), later
//! EXITED with the program's wait status, and exits when the host closes
//! the socket.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::wire::{self, CommandLine, Reply, SpawnFrame};
use crate::runtime::sandbox::child::{
    child_exits, drain, errno, ChildSetup, IdMaps, Stage, STARTED_RECORD,
};

/// A program whose start has not been reported yet.
struct Starting {
    id: u64,
    pid: libc::pid_t,
    /// Read end of the pipe the child reports on: a failed set-up, or (a
    /// namespace's init, see [`ChildSetup::run_as_init`]) that the program
    /// started and later its wait status; EOF before a record means the
    /// program was exec'd.
    errors: OwnedFd,
}

/// What the launcher knows of one child (the leader of a program's tree).
enum Child {
    /// Start not reported yet; its exit, if it came first, is kept.
    Starting { id: u64, exited: Option<i32> },
    /// Reported started: its exit is reported too (with the program's own
    /// status, when its init wrote it on `reports`).
    Running { id: u64, reports: OwnedFd },
    /// Its set-up failed: reaped without a word.
    Failed,
}

/// Serve the host on descriptor 0 until it hangs up. Never returns.
pub(crate) fn serve() -> ! {
    // SAFETY: the launcher is single-threaded; every call below works on
    // descriptors it owns.
    unsafe {
        libc::setsid();
        let socket = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if socket < 0 {
            libc::_exit(70);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        let exits = child_exits();
        if exits < 0 {
            libc::_exit(71);
        }
        let (empty_network, host_network) = empty_network().unzip();
        let code = Launcher {
            socket,
            exits,
            empty_network,
            host_network,
            lifeline: -1,
            starting: Vec::new(),
            children: HashMap::new(),
        }
        .run();
        libc::_exit(code)
    }
}

struct Launcher {
    socket: RawFd,
    exits: RawFd,
    /// One empty network namespace for the programs without network (see
    /// [`empty_network`]).
    empty_network: Option<OwnedFd>,
    /// The launcher's own network namespace, to return to after cloning a
    /// program into the empty one.
    host_network: Option<OwnedFd>,
    lifeline: RawFd,
    starting: Vec<Starting>,
    children: HashMap<libc::pid_t, Child>,
}

impl Launcher {
    /// The loop; returns the exit code.
    fn run(&mut self) -> i32 {
        loop {
            let mut fds = vec![
                libc::pollfd {
                    fd: self.socket,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.exits,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            fds.extend(self.starting.iter().map(|starting| libc::pollfd {
                fd: starting.errors.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: polls a live array.
            if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return 72;
            }
            // Starts first: an exit seen in the same round is then known to
            // belong to a reported program.
            let ready: Vec<usize> = (0..self.starting.len())
                .filter(|i| fds[2 + i].revents != 0)
                .collect();
            for i in ready.into_iter().rev() {
                let starting = self.starting.swap_remove(i);
                if self.report_start(starting).is_err() {
                    return 0;
                }
            }
            if fds[1].revents != 0 && self.reap().is_err() {
                return 0;
            }
            if fds[0].revents != 0 {
                match wire::recv(self.socket) {
                    Ok(Some((frame, received))) => {
                        if self.handle(&frame, received).is_err() {
                            return 0;
                        }
                    }
                    // The host is gone: what runs keeps its lifeline.
                    Ok(None) => return 0,
                    Err(_) => return 73,
                }
            }
        }
    }

    fn handle(&mut self, frame: &[u8; wire::FRAME], received: Vec<OwnedFd>) -> std::io::Result<()> {
        match frame[0] {
            wire::INIT if received.len() == 1 && self.lifeline < 0 => {
                let mut received = received;
                self.lifeline = received.pop().map_or(-1, IntoRawFd::into_raw_fd);
                Ok(())
            }
            wire::SPAWN => {
                let request = SpawnFrame::decode(frame);
                if received.len() != request.fd_count() {
                    return self.reply(
                        request.id,
                        wire::FAILED,
                        0,
                        Stage::Exec as i32,
                        libc::EBADF,
                    );
                }
                match self.spawn(&request, &received) {
                    Ok(starting) => {
                        self.children.insert(
                            starting.pid,
                            Child::Starting {
                                id: request.id,
                                exited: None,
                            },
                        );
                        self.starting.push(starting);
                        Ok(())
                    }
                    Err((stage, error)) => {
                        self.reply(request.id, wire::FAILED, 0, stage as i32, error)
                    }
                }
                // `received` closes here: the child has its copies.
            }
            // Anything else is not from our host: ignore it.
            _ => Ok(()),
        }
    }

    /// Fork the child that enters the sandbox and execs the program.
    fn spawn(&self, request: &SpawnFrame, fds: &[OwnedFd]) -> Result<Starting, (Stage, i32)> {
        let raw = |i: usize| fds[i].as_raw_fd();
        let command = CommandLine::from_fd(raw(0)).ok_or((Stage::Exec, libc::E2BIG))?;
        let (stdin, stdout, stderr) = (raw(1), raw(2), raw(3));
        let mut next = 4;
        let mut take = |flag: bool| {
            flag.then(|| {
                next += 1;
                raw(next - 1)
            })
        };
        let cgroup_join = take(request.cgroup);
        let ruleset = take(request.ruleset);
        let mut errors = [-1; 2];
        // SAFETY: pipe2 fills the array with two new descriptors we own.
        if unsafe { libc::pipe2(errors.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err((Stage::Init, errno()));
        }
        // SAFETY: just created.
        let (errors_read, errors_write) = unsafe {
            (
                OwnedFd::from_raw_fd(errors[0]),
                OwnedFd::from_raw_fd(errors[1]),
            )
        };
        let share_net = request.share_net && request.unshare & libc::CLONE_NEWNET != 0;
        let join_net = match &self.empty_network {
            Some(fd) if share_net => Some(fd.as_raw_fd()),
            _ => None,
        };
        let mut unshare = request.unshare;
        if join_net.is_some() {
            unshare &= !libc::CLONE_NEWNET;
        }
        let setup = ChildSetup {
            stage: errors_write.as_raw_fd(),
            cgroup_join,
            join_net,
            unshare,
            id_maps: (request.unshare & libc::CLONE_NEWUSER != 0).then(IdMaps::current),
            nproc: (request.nproc != u64::MAX).then_some(request.nproc as libc::rlim_t),
            ruleset,
            pid_init: request.pid_init && self.lifeline >= 0,
            lifeline: self.lifeline,
        };
        let mut argv: Vec<*const libc::c_char> = command.args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = command.env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        if setup.pid_init {
            let pid = self.clone_init(&setup, [stdin, stdout, stderr], &command, &argv, &envp)?;
            return Ok(Starting {
                id: request.id,
                pid,
                errors: errors_read,
            });
        }
        // SAFETY: the launcher is single-threaded, so the child may run
        // ordinary code; it only makes system calls on prepared data anyway.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err((Stage::Init, errno()));
        }
        if pid == 0 {
            // SAFETY: in the child, on descriptors and strings prepared above.
            unsafe {
                enter_and_exec(&setup, [stdin, stdout, stderr], &command, &argv, &envp);
            }
        }
        Ok(Starting {
            id: request.id,
            pid,
            errors: errors_read,
        })
    }

    /// Clone the program's init straight into its new namespaces (one
    /// process less than forking a child that unshares and forks again; see
    /// [`ChildSetup::run_as_init`]). The launcher enters the program's
    /// working directory and, when the program shares it, the empty
    /// network namespace for the clone, and returns to its own after.
    fn clone_init(
        &self,
        setup: &ChildSetup,
        stdio: [RawFd; 3],
        command: &CommandLine,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> Result<libc::pid_t, (Stage, i32)> {
        // SAFETY: namespace and directory calls on descriptors and strings
        // we own; the clone's child runs `run_as_init` on data prepared
        // above and never returns.
        unsafe {
            if libc::chdir(command.cwd.as_ptr()) < 0 {
                return Err((Stage::Directory, errno()));
            }
            let joined = match setup.join_net {
                Some(fd) => {
                    if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                        let error = errno();
                        libc::chdir(c"/".as_ptr());
                        return Err((Stage::Namespaces, error));
                    }
                    true
                }
                None => false,
            };
            let flags = (setup.unshare as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong;
            let pid = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize)
                as libc::pid_t;
            if pid == 0 {
                setup.run_as_init(
                    stdio,
                    command.program.as_ptr(),
                    argv.as_ptr().cast(),
                    envp.as_ptr().cast(),
                );
            }
            let error = errno();
            if joined {
                let back = self.host_network.as_ref().map_or(-1, |fd| fd.as_raw_fd());
                if libc::setns(back, libc::CLONE_NEWNET) < 0 {
                    // See `empty_network`: never start a networked program
                    // from the empty namespace.
                    libc::_exit(74);
                }
            }
            libc::chdir(c"/".as_ptr());
            if pid < 0 {
                return Err((Stage::Namespaces, error));
            }
            Ok(pid)
        }
    }

    /// The child's set-up pipe is readable: a failure, a start record or
    /// EOF (exec'd).
    fn report_start(&mut self, starting: Starting) -> std::io::Result<()> {
        let mut bytes = [0u8; 5];
        // SAFETY: reads into a local; the writer sends its 5 bytes at once.
        let n = unsafe {
            libc::read(
                starting.errors.as_raw_fd(),
                bytes.as_mut_ptr().cast(),
                bytes.len(),
            )
        };
        let exited = match self.children.get(&starting.pid) {
            Some(Child::Starting { exited, .. }) => *exited,
            _ => None,
        };
        if n == 5 && bytes != STARTED_RECORD {
            let error = i32::from_le_bytes(bytes[1..5].try_into().unwrap_or_default());
            if exited.is_some() {
                self.children.remove(&starting.pid);
            } else {
                self.children.insert(starting.pid, Child::Failed);
            }
            return self.reply(starting.id, wire::FAILED, 0, i32::from(bytes[0]), error);
        }
        self.reply(starting.id, wire::STARTED, starting.pid, 0, 0)?;
        match exited {
            Some(status) => {
                self.children.remove(&starting.pid);
                let status = program_status(&starting.errors, status);
                self.reply(starting.id, wire::EXITED, starting.pid, status, 0)
            }
            None => {
                self.children.insert(
                    starting.pid,
                    Child::Running {
                        id: starting.id,
                        reports: starting.errors,
                    },
                );
                Ok(())
            }
        }
    }

    /// SIGCHLD: reap every child that ended and report the started ones.
    fn reap(&mut self) -> std::io::Result<()> {
        drain(self.exits);
        loop {
            let mut status = 0;
            // SAFETY: reaps any ended child of ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            match self.children.remove(&pid) {
                Some(Child::Running { id, reports }) => {
                    let status = program_status(&reports, status);
                    self.reply(id, wire::EXITED, pid, status, 0)?
                }
                Some(Child::Starting { id, .. }) => {
                    self.children.insert(
                        pid,
                        Child::Starting {
                            id,
                            exited: Some(status),
                        },
                    );
                }
                Some(Child::Failed) | None => {}
            }
        }
    }

    fn reply(&self, id: u64, kind: u8, pid: i32, value: i32, errno: i32) -> std::io::Result<()> {
        let frame = Reply {
            kind,
            id,
            pid,
            value,
            errno,
        }
        .encode();
        wire::send(self.socket, &frame, &[])
    }
}

/// How the program ended: the wait status its namespace's init wrote on
/// `reports` before it exited (see [`ChildSetup::run_as_init`]), else the
/// ended child's own `status` (a program forked without a pid namespace,
/// or an init that was killed).
fn program_status(reports: &OwnedFd, status: i32) -> i32 {
    let mut bytes = [0u8; 4];
    // SAFETY: reads into a local. The writer has exited (it was reaped), so
    // the read does not block: the record or EOF.
    let n = unsafe { libc::read(reports.as_raw_fd(), bytes.as_mut_ptr().cast(), 4) };
    if n == 4 {
        i32::from_ne_bytes(bytes)
    } else {
        status
    }
}

/// A new, empty network namespace (its loopback down, no other device)
/// for the programs that have no network: creating one per program was
/// a good part of a script step's cost, and tearing it down more (the
/// kernel's `cleanup_net`). Only a launcher with the privilege to create
/// it while staying in the host's namespace (a root host) has one.
/// Programs join it before entering their own user namespace, so they
/// hold no privilege over it: they cannot bring its loopback up, nor
/// reach one another through it (no address works; abstract unix sockets
/// are scoped by Landlock, or the host does not share the namespace).
/// Returns it with the launcher's own network namespace.
fn empty_network() -> Option<(OwnedFd, OwnedFd)> {
    let open_current = || {
        // SAFETY: opens a new descriptor we own.
        let fd = unsafe {
            libc::open(
                c"/proc/self/ns/net".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: just opened.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let host = open_current()?;
    // SAFETY: namespace calls on descriptors we own.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) < 0 {
            return None;
        }
        let empty = open_current();
        if libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) < 0 {
            // Stuck outside the host's network, the launcher would start
            // networked programs without it: better no launcher at all.
            libc::_exit(74);
        }
        Some((empty?, host))
    }
}

/// In the forked child: stdio, signals, directory, sandbox, `execve`.
/// Never returns; a failure is reported on the set-up pipe (stage and
/// errno) and ends the child with 127.
unsafe fn enter_and_exec(
    setup: &ChildSetup,
    stdio: [RawFd; 3],
    command: &CommandLine,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    setup.take_stdio(stdio);
    // The launcher blocks SIGCHLD and, as any Rust program, ignores SIGPIPE:
    // the program gets neither.
    let mut empty = std::mem::zeroed::<libc::sigset_t>();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    if libc::chdir(command.cwd.as_ptr()) < 0 {
        setup.fail(Stage::Directory);
        libc::_exit(127);
    }
    if setup.enter().is_err() {
        libc::_exit(127);
    }
    libc::execve(command.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    setup.fail(Stage::Exec);
    libc::_exit(127)
}
