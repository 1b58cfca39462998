//! The `process` interface: start a program the step's `exec` grant allows.
//!
//! The child runs outside wasm, so it gets what the host can enforce here:
//! an environment cleared except `PATH`, granted variables and `WFHOST_*`;
//! its own process group, killed as a whole at the deadline (SIGTERM, then
//! SIGKILL after a grace period) or when the step is cancelled; and output
//! capped in memory. Denials are values (`process-error::denied`), never traps.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::bindings::process::{self, Denial, Output, ProcessError};
use super::state::{StepContext, StepState};
use crate::engine::grants::{resolve_program, ExecGrant};

/// Time between SIGTERM and SIGKILL when a program runs out of time.
const KILL_GRACE: Duration = Duration::from_secs(2);

impl process::Host for StepState {
    async fn run(&mut self, command: process::Command) -> Result<Output, ProcessError> {
        let step = self.step.clone();
        run_program(&step, command).await
    }
}

async fn run_program(
    step: &StepContext,
    request: process::Command,
) -> Result<Output, ProcessError> {
    let invocation = &step.invocation;
    let program = authorize(&invocation.grants.exec, &request.program)?;
    let cwd = match &request.cwd {
        Some(dir) => invocation.workdir.join(dir),
        None => invocation.workdir.clone(),
    };
    if !cwd.is_dir() {
        return Err(ProcessError::Failed(format!(
            "working directory '{}' does not exist",
            cwd.display()
        )));
    }

    let mut command = Command::new(&program);
    command
        .args(&request.args)
        .current_dir(&cwd)
        .env_clear()
        .stdin(if request.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for grant in &invocation.grants.env {
        if let Some(value) = grant.value() {
            command.env(&grant.name, value);
        }
    }
    command
        .env("WFHOST_RUN_ID", &invocation.run_id)
        .env("WFHOST_STEP_ID", &invocation.step_id)
        .env("WFHOST_ATTEMPT", invocation.attempt.to_string())
        .env("WFHOST_IDEMPOTENCY_KEY", &invocation.idempotency_key);
    for (name, value) in &request.env {
        command.env(name, value);
    }
    let output_file = if request.capture_output_file {
        let path = new_output_file(&invocation.scratch_dir)?;
        command.env("WFHOST_OUTPUT", &path);
        Some(path)
    } else {
        None
    };

    let mut child = command.spawn().map_err(|error| {
        ProcessError::Failed(format!("cannot start '{}': {error}", program.display()))
    })?;
    let group = ProcessGroup(child.id().map(|pid| pid as i32));

    if let (Some(bytes), Some(mut stdin)) = (request.stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // A child that does not read its input is not an error.
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let cap = usize::try_from(invocation.grants.max_output).unwrap_or(usize::MAX);
    let stdout = tokio::spawn(read_capped(child.stdout.take(), cap));
    let stderr = tokio::spawn(read_capped(child.stderr.take(), cap));

    let now = tokio::time::Instant::now();
    let mut limit = step.deadline.saturating_duration_since(now);
    if let Some(ms) = request.timeout_ms {
        limit = limit.min(Duration::from_millis(ms));
    }
    let (status, timed_out) = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => {
            group.signal(libc::SIGTERM);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(status) => (status, true),
                Err(_) => {
                    group.signal(libc::SIGKILL);
                    (child.wait().await, true)
                }
            }
        }
    };
    // Programs the step started do not outlive it: whatever is left of the
    // group (background jobs holding the pipes open) is killed now.
    group.finish();
    let status =
        status.map_err(|error| ProcessError::Failed(format!("waiting for program: {error}")))?;
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();

    let output_file = match output_file {
        Some(path) => {
            let bytes = tokio::fs::read(&path).await.unwrap_or_default();
            let _ = tokio::fs::remove_file(&path).await;
            Some(bytes)
        }
        None => None,
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(Output {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        timed_out,
        output_file,
    })
}

/// Check `program` against the `exec` grant; returns the granted path.
fn authorize(granted: &[ExecGrant], program: &str) -> Result<PathBuf, ProcessError> {
    let requested = resolve_program(program);
    let found = granted
        .iter()
        .find(|grant| grant.name == program || requested.as_ref() == Some(&grant.path));
    if let Some(grant) = found {
        return Ok(grant.path.clone());
    }
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string());
    Err(ProcessError::Denied(Denial {
        what: format!("starting program '{program}'"),
        missing_grant: format!("grants: {{ exec: [{name}] }}"),
    }))
}

fn new_output_file(dir: &Path) -> Result<PathBuf, ProcessError> {
    std::fs::create_dir_all(dir).map_err(|error| {
        ProcessError::Failed(format!("cannot create '{}': {error}", dir.display()))
    })?;
    let path = dir.join(format!("output-{}.env", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, b"").map_err(|error| {
        ProcessError::Failed(format!("cannot create '{}': {error}", path.display()))
    })?;
    Ok(path)
}

/// Read a stream to its end, keeping at most `cap` bytes (the step's
/// `max_output`) and noting how much was dropped.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut dropped = 0usize;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    if dropped > 0 {
        kept.extend_from_slice(
            format!("\n[wfhost: output cut, {dropped} more bytes dropped]\n").as_bytes(),
        );
    }
    kept
}

/// A child's process group; signalled as a whole, killed when dropped (the
/// step was cancelled or timed out while the program ran).
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn signal(&self, signal: i32) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg has no memory-safety preconditions; a stale
            // group id at worst yields ESRCH.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }
}

impl ProcessGroup {
    /// Kill what is left of the group after the leader was reaped, then
    /// forget the id so it is never signalled again (it could be reused).
    fn finish(mut self) {
        self.signal(libc::SIGKILL);
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}
