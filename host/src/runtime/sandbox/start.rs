//! Starting a program in its prepared sandbox: through the launcher when
//! there is one, else forked from the host; either way the caller gets
//! the same [`Started`] program.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::child::Stage;
use super::launcher::{self, CommandLine, SpawnFrame};
use super::Prepared;

/// What to start, besides its sandbox.
pub(crate) struct Launch<'a> {
    /// The program (an absolute path).
    pub program: &'a Path,
    /// Its name for itself (argv[0]).
    pub name: &'a std::ffi::OsStr,
    /// Its arguments (after argv[0]).
    pub args: &'a [String],
    /// Its whole environment.
    pub env: &'a BTreeMap<OsString, OsString>,
    /// Where it starts.
    pub cwd: &'a Path,
    /// Whether its stdin is a pipe (else `/dev/null`).
    pub stdin: bool,
}

/// A started program: the leader of its process group, its pipes, and how
/// it ended.
pub(crate) struct Started {
    /// The pid of the tree's leader, which is also its process group.
    pub pid: i32,
    /// The program's stdin, when piped.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Its stdout.
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Its stderr.
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    exit: Exit,
}

enum Exit {
    /// Forked from the host: tokio waits for it (and kills it on drop).
    Forked(tokio::process::Child),
    /// Started by the launcher, which reports its end.
    Launched {
        exited: oneshot::Receiver<i32>,
        status: Option<ExitStatus>,
    },
}

impl Started {
    /// Wait for the program's tree leader to end (cancel-safe; may be
    /// called again after it returned).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match &mut self.exit {
            Exit::Forked(child) => child.wait().await,
            Exit::Launched { exited, status } => {
                if let Some(status) = status {
                    return Ok(*status);
                }
                let raw = exited.await.map_err(|_| {
                    io::Error::other("the sandbox launcher stopped while the program ran")
                })?;
                let ended = ExitStatus::from_raw(raw);
                *status = Some(ended);
                Ok(ended)
            }
        }
    }
}

/// Start `launch` in the sandbox `prepared`; the error is the message to
/// show (which part of the set-up failed, and why).
pub(crate) async fn start(prepared: &Prepared, launch: &Launch<'_>) -> Result<Started, String> {
    let failed = |why: String| format!("cannot start '{}': {why}", launch.program.display());
    match launcher::client() {
        Some(client) => launched(&client, prepared, launch).await.map_err(failed),
        None => forked(prepared, launch).map_err(failed),
    }
}

/// Forked from the host, entering the sandbox between fork and exec.
fn forked(prepared: &Prepared, launch: &Launch<'_>) -> Result<Started, String> {
    let mut command = tokio::process::Command::new(launch.program);
    command
        .arg0(launch.name)
        .args(launch.args)
        .current_dir(launch.cwd)
        .env_clear()
        .envs(launch.env)
        .stdin(if launch.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    prepared.install(&mut command);
    let mut child = command.spawn().map_err(|error| prepared.explain(&error))?;
    let pid = child.id().map_or(-1, |pid| pid as i32);
    Ok(Started {
        pid,
        stdin: child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>),
        stdout: child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        stderr: child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        exit: Exit::Forked(child),
    })
}

/// Started by the launcher, from descriptors the host prepared.
async fn launched(
    client: &launcher::Client,
    prepared: &Prepared,
    launch: &Launch<'_>,
) -> Result<Started, String> {
    let text = |error: io::Error| error.to_string();
    let command = CommandLine::new(
        launch.program.as_os_str(),
        launch.cwd.as_os_str(),
        std::iter::once(launch.name).chain(
            launch
                .args
                .iter()
                .map(|arg| std::ffi::OsStr::new(arg.as_str())),
        ),
        launch
            .env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str())),
    )
    .map_err(text)?;
    let command = command.to_memfd().map_err(text)?;
    let (stdin_ours, stdin_theirs) = if launch.stdin {
        let (read, write) = pipe().map_err(text)?;
        (Some(write), read)
    } else {
        let null = std::fs::File::open("/dev/null").map_err(text)?;
        (None, OwnedFd::from(null))
    };
    let (stdout_ours, stdout_theirs) = pipe().map_err(text)?;
    let (stderr_ours, stderr_theirs) = pipe().map_err(text)?;

    let setup = &prepared.setup;
    let mut fds: Vec<RawFd> = vec![
        command.as_raw_fd(),
        stdin_theirs.as_raw_fd(),
        stdout_theirs.as_raw_fd(),
        stderr_theirs.as_raw_fd(),
    ];
    fds.extend(setup.cgroup_join);
    fds.extend(setup.ruleset);
    let frame = SpawnFrame {
        id: 0,
        unshare: setup.unshare,
        nproc: setup.nproc.unwrap_or(u64::MAX),
        pid_init: setup.pid_init,
        cgroup: setup.cgroup_join.is_some(),
        ruleset: setup.ruleset.is_some(),
        share_net: prepared.share_network,
    };
    let replies = client
        .spawn(frame, &fds)
        .map_err(|error| format!("cannot reach the sandbox launcher: {error}"))?;
    // The launcher's child has its copies now.
    drop((command, stdin_theirs, stdout_theirs, stderr_theirs));

    let pid = match PendingStart(Some(replies.started)).answer().await {
        Some(Ok(pid)) => pid,
        Some(Err((stage, errno))) => {
            let error = io::Error::from_raw_os_error(errno);
            let stage = Stage::from_byte(stage);
            if stage.is_some_and(Stage::needs_support) {
                super::support::forget_remembered();
            }
            return Err(match stage {
                Some(Stage::Exec) | None => error.to_string(),
                Some(stage) => format!("{error} (while {})", stage.describe()),
            });
        }
        None => return Err("the sandbox launcher stopped".to_string()),
    };
    let reader = |fd: OwnedFd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map(|r| Box::new(r) as Box<dyn AsyncRead + Send + Unpin>)
    };
    let stdin = match stdin_ours {
        Some(fd) => Some(
            tokio::net::unix::pipe::Sender::from_owned_fd(fd)
                .map(|w| Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>)
                .map_err(text)?,
        ),
        None => None,
    };
    Ok(Started {
        pid,
        stdin,
        stdout: Some(reader(stdout_ours).map_err(text)?),
        stderr: Some(reader(stderr_ours).map_err(text)?),
        exit: Exit::Launched {
            exited: replies.exited,
            status: None,
        },
    })
}

/// A start request whose answer nobody will read (the step was dropped
/// while the program started): whatever started is killed.
struct PendingStart(Option<oneshot::Receiver<launcher::StartResult>>);

impl PendingStart {
    /// The launcher's answer; `None` if it stopped first.
    async fn answer(mut self) -> Option<launcher::StartResult> {
        let answer = match self.0.as_mut() {
            Some(started) => started.await.ok(),
            None => None,
        };
        self.0 = None;
        answer
    }
}

impl Drop for PendingStart {
    fn drop(&mut self) {
        let Some(started) = self.0.take() else {
            return;
        };
        let _ = std::thread::Builder::new()
            .name("wfhost-orphan".into())
            .spawn(move || {
                if let Ok(Ok(pid)) = started.blocking_recv() {
                    // SAFETY: killpg has no memory-safety preconditions;
                    // the group was the program's a moment ago.
                    unsafe { libc::killpg(pid, libc::SIGKILL) };
                }
            });
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the array with two new descriptors we own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}
