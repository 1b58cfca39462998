//! The narrow interface between the engine and whatever executes a step.
//!
//! The engine never touches wasmtime: it hands a [`StepInvocation`] to a
//! [`StepExecutor`] and gets an output or a [`StepFailure`] back. Tests use
//! in-memory executors; `wfhost` uses the wasm runtime.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Everything needed to run one attempt of one step.
#[derive(Debug, Clone)]
pub struct StepInvocation {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The component to run: a built-in name (`script`) or an absolute
    /// path of a `.wasm` file.
    pub component: String,
    /// The exported function to call (`name` or `interface#name`) instead
    /// of the `step` world's `run`; `config` then holds its parameters.
    pub function: Option<String>,
    /// 1-based attempt number.
    pub attempt: u32,
    /// `run:step:iteration:attempt`.
    pub idempotency_key: String,
    /// Rendered `with:` config (for script steps, including `run`).
    pub config: Value,
    /// Outputs of the needed steps, keyed by step id.
    pub inputs: Value,
    /// The run's arguments.
    pub args: Value,
    /// Absolute directory of the workflow file.
    pub workdir: PathBuf,
    /// Default working directory of the programs the step starts: the
    /// workflow's directory, or the step's `working_directory` under it.
    pub cwd: PathBuf,
    /// The step's grants, paths resolved.
    pub grants: ResolvedGrants,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// A private directory of this step in the run folder, for host-side files.
    pub scratch_dir: PathBuf,
    /// For agent steps: the session serving the `model` and `tools` imports.
    pub agent: Option<super::session::AgentHandle>,
    /// Fires when the run is cancelled: the step's started programs get
    /// SIGTERM, `kill_grace`, then SIGKILL, and the step ends.
    pub cancel: super::stop::StopSignal,
    /// Whether this process still holds the run's lease; asked right
    /// before a program is started.
    pub lease: LeaseCheck,
    /// For an attempt that goes on with a wait an earlier process left
    /// (see [`StepObserver::suspended`]): when to call the step, and with
    /// what state.
    pub resume: Option<Resume>,
}

/// A step's wait in `host.suspend`, as recorded: the wall-clock time to
/// call the step again and the state its next call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// When the wait ends.
    pub wake_at: std::time::SystemTime,
    /// What the next call's `host.resumed` returns.
    pub state: String,
}

/// The message for work refused because the lease was lost: `outcome`
/// says what became of it ("the program was not started").
pub fn lease_lost(outcome: &str) -> String {
    format!(
        "this process no longer holds the run's lease (another process took the run over): \
         {outcome}"
    )
}

/// Asks whether the driving process still holds its run's lease (see the
/// store's leases). The default always says yes (no lease involved).
#[derive(Clone, Default)]
pub struct LeaseCheck {
    holds: Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl LeaseCheck {
    /// A check that calls `holds`.
    pub fn new(holds: impl Fn() -> bool + Send + Sync + 'static) -> LeaseCheck {
        LeaseCheck {
            holds: Some(std::sync::Arc::new(holds)),
        }
    }

    /// Whether the lease is still held.
    pub fn holds(&self) -> bool {
        self.holds.as_ref().is_none_or(|holds| holds())
    }
}

impl std::fmt::Debug for LeaseCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseCheck")
    }
}

pub use super::grants::ResolvedGrants;

/// The idempotency key of an attempt, `run:step:position:attempt`
/// (`position`: the `for_each` item, 0 for other steps).
pub fn idempotency_key(run_id: &str, step_id: &str, position: usize, attempt: u32) -> String {
    format!("{run_id}:{step_id}:{position}:{attempt}")
}

/// How a step attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// May succeed if tried again.
    Transient,
    /// Will fail again.
    Permanent,
    /// Ran past its deadline and was stopped.
    Timeout,
    /// Whatever ran it was lost mid-attempt (a worker died); what it did
    /// is unknown, so a step not marked idempotent blocks its run.
    Interrupted,
}

/// A failed attempt: what kind, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// Kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl StepFailure {
    /// A permanent failure with this message.
    pub fn permanent(message: impl Into<String>) -> StepFailure {
        StepFailure {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }

    /// A transient failure with this message.
    pub fn transient(message: impl Into<String>) -> StepFailure {
        StepFailure {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Severity of a step log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal output.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something went wrong.
    Error,
}

impl LogLevel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Receives what a running step reports.
pub trait StepObserver: Send + Sync {
    /// A log line.
    fn log(&self, level: LogLevel, message: &str);
    /// A progress report.
    fn progress(&self, message: &str, fraction: Option<f32>);

    /// Attempt `attempt` ended a call in `host.suspend` and waits, holding
    /// no instance, until `resume.wake_at`. An observer that records it
    /// (and then [`StepObserver::woken`]) lets a later process go on with
    /// the wait after this one is gone.
    fn suspended(&self, attempt: u32, resume: &Resume) {
        let _ = (attempt, resume);
    }

    /// The wait of the last [`StepObserver::suspended`] is over: the step's
    /// next call starts now.
    fn woken(&self, attempt: u32) {
        let _ = attempt;
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Executes step attempts.
pub trait StepExecutor: Send + Sync {
    /// Load (compile or fetch from cache) the given components before the
    /// run starts, so a broken plugin fails the run early and compile time
    /// does not count against any step's timeout.
    fn prepare(&self, components: &[String]) -> Result<(), String> {
        let _ = components;
        Ok(())
    }

    /// Where the executor keeps compiled code, if anywhere: host state that
    /// no step may be granted write access to.
    fn cache_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Run one attempt to completion (or until `invocation.timeout`).
    fn execute(
        &self,
        invocation: StepInvocation,
        observer: Arc<dyn StepObserver>,
    ) -> BoxFuture<Result<Value, StepFailure>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_lease_the_check_always_holds() {
        assert!(LeaseCheck::default().holds());
    }
}
