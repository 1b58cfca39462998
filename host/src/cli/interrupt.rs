//! Ctrl-C and `SIGTERM` while this process drives a run (`run`, `resume`,
//! `retry`, `restore`).
//!
//! The first signal is a cancel: the run is asked to stop the way `wfhost
//! cancel` asks (running programs get `SIGTERM` and their grace period,
//! `finally` steps run, the run ends `cancelled`), and the process exits
//! 130 (`SIGINT`) or 143 (`SIGTERM`). A second signal stops at once: the
//! drive is dropped (its programs are killed with their process trees) and
//! the run is left as a crash leaves it, for `wfhost resume`. `SIGHUP` (the
//! terminal went away) does not stop the drive: the run goes on, and what
//! cannot be printed any more is dropped.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use super::say::err_line;
use crate::engine::RunOutcome;
use crate::store::EngineStore;

/// How a drive under [`drive`] ended.
pub enum Driven {
    /// The drive ran to its end; `interrupted` is the signal that asked it
    /// to cancel, if one did.
    Finished {
        /// What the drive returned.
        outcome: Result<RunOutcome>,
        /// The signal that cancelled the run, if any.
        interrupted: Option<i32>,
    },
    /// A second signal stopped the process at once.
    Stopped {
        /// The second signal.
        signal: i32,
    },
}

/// How long the runtime may take to drop a stopped drive's tasks (their
/// programs' trees are killed as they are dropped).
const STOP_BUDGET: Duration = Duration::from_secs(3);

/// Drive `drive` (of run `run_id`) on a fresh runtime, turning `SIGINT` and
/// `SIGTERM` into a cancel, and a second one into a stop.
///
/// With `announce`, a tool call held for a person is announced on stderr
/// as soon as it waits, with the commands that answer it.
pub fn drive(
    store: &dyn EngineStore,
    run_id: &str,
    announce: bool,
    drive: impl Future<Output = Result<RunOutcome>>,
) -> Result<Driven> {
    drive_on(super::tokio_runtime()?, store, run_id, announce, drive)
}

/// [`drive`] on `runtime` (made beforehand, as `wfhost run` does while it
/// opens the store).
pub fn drive_on(
    runtime: tokio::runtime::Runtime,
    store: &dyn EngineStore,
    run_id: &str,
    announce: bool,
    drive: impl Future<Output = Result<RunOutcome>>,
) -> Result<Driven> {
    let driven = runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::pin!(drive);
        let mut interrupted = None;
        let mut approvals = tokio::time::interval(APPROVAL_POLL);
        let mut announced = std::collections::HashSet::new();
        loop {
            let signal = tokio::select! {
                outcome = &mut drive => return Ok(Driven::Finished { outcome, interrupted }),
                _ = approvals.tick(), if announce => {
                    announce_approvals(store, run_id, &mut announced);
                    continue;
                }
                _ = interrupt.recv() => libc::SIGINT,
                _ = terminate.recv() => libc::SIGTERM,
                _ = hangup.recv() => continue,
            };
            if interrupted.is_some() {
                return Ok(Driven::Stopped { signal });
            }
            interrupted = Some(signal);
            err_line(&format!(
                "{}: cancelling run {run_id}: running programs get SIGTERM and their grace \
                 period, `finally` steps run (again to stop at once)",
                name(signal)
            ));
            if let Err(error) = store.set_request(run_id, Some("cancel")) {
                err_line(&format!("cannot ask run {run_id} to cancel: {error}"));
                return Ok(Driven::Stopped { signal });
            }
        }
    });
    if let Ok(Driven::Stopped { signal }) = &driven {
        runtime.shutdown_timeout(STOP_BUDGET);
        err_line(&format!(
            "{}: stopped at once; run {run_id} is left as a crash leaves it: \
             `wfhost resume {run_id}` continues it",
            name(*signal)
        ));
    } else {
        // The drive is over and what it did is committed: its worker
        // threads are told to stop but not waited for (joining them cost
        // ~0.3 ms at the end of every run; the process ends next).
        runtime.shutdown_background();
    }
    driven
}

/// How often a driving terminal looks for tool calls held for a person.
const APPROVAL_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Say once for each newly pending approval of the run that it waits, and
/// how to answer it.
fn announce_approvals(
    store: &dyn EngineStore,
    run_id: &str,
    announced: &mut std::collections::HashSet<i64>,
) {
    let Ok(pending) = store.approvals(Some(run_id), false) else {
        return;
    };
    let style = super::output::Style::for_stderr();
    for approval in pending {
        if !announced.insert(approval.id) {
            continue;
        }
        let prompt = super::terminal::error_line(&approval.prompt);
        err_line(&style.warn(&format!(
            "  ⏸ {}: waiting for your approval of {} ({prompt})",
            approval.step_id,
            super::terminal::terminal_safe(&approval.tool)
        )));
        err_line(&format!(
            "    answer: wfhost approve {run_id} {id}   or   wfhost deny {run_id} {id} --reason TEXT",
            id = approval.id
        ));
    }
}

/// The exit code of a process ended by `signal` (128 + its number).
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// How a signal that cancels a run is named in messages.
pub(super) fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "interrupted (SIGINT)",
        _ => "terminated (SIGTERM)",
    }
}
