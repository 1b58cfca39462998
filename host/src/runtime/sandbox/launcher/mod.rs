//! The launcher (a zygote): a small process started once per host process,
//! from the host's own binary, that forks sandboxed programs for it.
//!
//! Forking the host itself copies its page tables, which grow with the
//! run (tens of megabytes of wasmtime code and memory maps), and makes
//! every page the host then writes fault copy-on-write, with TLB
//! shootdowns across cores: at a thousand script steps that was most of
//! their cost. The launcher is tiny and single-threaded; it receives what
//! the host prepared (stdio, the cgroup to join, the Landlock ruleset) as
//! descriptors, so every check stays on the objects the host opened.
//!
//! Used only when the binary enabled it ([`enable`]: `wfhost` does, on
//! start); elsewhere (unit tests, a library user) and when it cannot start,
//! programs are forked from the host as before.

mod server;
mod wire;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

pub(crate) use server::serve;
pub(super) use wire::{CommandLine, SpawnFrame};

/// The argument that makes the wfhost binary serve as the launcher.
pub const LAUNCHER_ARG: &str = "__wfhost-launcher";

static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();
static CURRENT: Mutex<Option<Arc<Client>>> = Mutex::new(None);

/// Start programs through a launcher run from `executable` (a binary whose
/// `main` calls [`serve`] when given [`LAUNCHER_ARG`]).
pub(crate) fn enable(executable: PathBuf) {
    let _ = EXECUTABLE.set(executable);
}

/// The running launcher, started on first use (again if it died); `None`
/// when not enabled or it cannot start (programs are then forked from the
/// host).
pub(super) fn client() -> Option<Arc<Client>> {
    let executable = EXECUTABLE.get()?;
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = current.as_ref().filter(|c| c.alive.load(Ordering::Acquire)) {
        return Some(client.clone());
    }
    match Client::start(executable) {
        Ok(client) => {
            let client = Arc::new(client);
            *current = Some(client.clone());
            Some(client)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot start the sandbox launcher; forking programs from the host");
            None
        }
    }
}

/// Start the launcher (if enabled and not running) on a thread of its own,
/// so it is ready when the first program is and the caller does not wait
/// for it: starting it is an `exec` of this binary, milliseconds. A
/// program asked for meanwhile waits for that start ([`client`]).
pub(crate) fn prestart() {
    static STARTING: AtomicBool = AtomicBool::new(false);
    if EXECUTABLE.get().is_none() || STARTING.swap(true, Ordering::AcqRel) {
        return;
    }
    let started = std::thread::Builder::new()
        .name("wfhost-launcher-start".into())
        .spawn(|| {
            let _ = client();
            STARTING.store(false, Ordering::Release);
        });
    if started.is_err() {
        STARTING.store(false, Ordering::Release);
        let _ = client();
    }
}

/// How a spawn request went: the program's pid, or the failing set-up
/// stage and errno.
pub(super) type StartResult = Result<i32, (u8, i32)>;

/// The host's side of the launcher.
pub(super) struct Client {
    socket: OwnedFd,
    next_id: AtomicU64,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    alive: Arc<AtomicBool>,
}

/// What a request still waits for.
struct Pending {
    started: Option<oneshot::Sender<StartResult>>,
    exited: Option<oneshot::Sender<i32>>,
}

/// Replies to one spawn request.
pub(super) struct Replies {
    /// Whether the program was exec'd.
    pub started: oneshot::Receiver<StartResult>,
    /// Its wait status once it ended.
    pub exited: oneshot::Receiver<i32>,
}

impl Client {
    fn start(executable: &std::path::Path) -> io::Result<Client> {
        let mut pair = [-1; 2];
        // SAFETY: socketpair fills the array with two new descriptors.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned here.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let mut child = std::process::Command::new(executable)
            .arg(LAUNCHER_ARG)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let lifeline = super::child::lifeline().unwrap_or(-1);
        let init = {
            let mut frame = [0u8; wire::FRAME];
            frame[0] = wire::INIT;
            frame
        };
        let fds: &[RawFd] = if lifeline >= 0 { &[lifeline] } else { &[] };
        if let Err(error) = wire::send(ours.as_raw_fd(), &init, fds) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        let reader = ours.try_clone()?;
        let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (pending_in_reader, alive_in_reader) = (pending.clone(), alive.clone());
        std::thread::Builder::new()
            .name("wfhost-launcher".into())
            .spawn(move || {
                read_replies(&reader, &pending_in_reader);
                alive_in_reader.store(false, Ordering::Release);
                // Everything still waiting learns the launcher is gone.
                pending_in_reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                let _ = child.kill();
                let _ = child.wait();
            })?;
        Ok(Client {
            socket: ours,
            next_id: AtomicU64::new(1),
            pending,
            alive,
        })
    }

    /// Ask for a program; `fds` as [`SpawnFrame::fd_count`] says.
    pub(super) fn spawn(&self, mut frame: SpawnFrame, fds: &[RawFd]) -> io::Result<Replies> {
        frame.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                frame.id,
                Pending {
                    started: Some(started_tx),
                    exited: Some(exited_tx),
                },
            );
        if let Err(error) = wire::send(self.socket.as_raw_fd(), &frame.encode(), fds) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&frame.id);
            self.alive.store(false, Ordering::Release);
            return Err(error);
        }
        Ok(Replies { started, exited })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing our end ends the launcher (the reader holds a copy, so
        // shut the socket down for both).
        // SAFETY: shutdown on our own socket.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Dispatch the launcher's replies until it hangs up.
fn read_replies(socket: &OwnedFd, pending: &Mutex<HashMap<u64, Pending>>) {
    while let Ok(Some((frame, _fds))) = wire::recv(socket.as_raw_fd()) {
        let reply = wire::Reply::decode(&frame);
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = pending.get_mut(&reply.id) else {
            continue;
        };
        match reply.kind {
            wire::STARTED => {
                if let Some(tx) = entry.started.take() {
                    let _ = tx.send(Ok(reply.pid));
                }
            }
            wire::FAILED => {
                if let Some(tx) = entry.started.take() {
                    let _ = tx.send(Err((reply.value as u8, reply.errno)));
                }
                pending.remove(&reply.id);
            }
            wire::EXITED => {
                if let Some(tx) = entry.exited.take() {
                    let _ = tx.send(reply.value);
                }
                pending.remove(&reply.id);
            }
            _ => {}
        }
    }
}
