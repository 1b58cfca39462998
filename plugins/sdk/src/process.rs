//! Run programs on the host, as the step's `exec` grant allows.
//!
//! The program runs outside the sandbox (with an OS sandbox of its own), to
//! completion; its output comes back in one piece.
//!
//! ```ignore
//! use wfhost_sdk::process::{self, Command};
//! let out = process::run(Command::new("git").args(["rev-parse", "HEAD"]))?;
//! let head = out.stdout_text().trim().to_string();
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::bindings::wfhost::plugin::process as wit;
use crate::StepError;

/// What to start: a builder over the WIT `command` record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    capture_output_file: bool,
}

impl Command {
    /// A command running `program` (a name the `exec` grant lists, or an
    /// absolute path) with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            ..Default::default()
        }
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory (absolute host path); by default the workflow's
    /// directory. Use [`crate::fs::resolve`] for paths relative to it.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Add an environment variable (the child's environment otherwise holds
    /// only `PATH`, the granted variables and `WFHOST_*`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Add environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Bytes written to the child's standard input, which is then closed.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kill the program (and its process group) after this long. The step's
    /// own deadline applies regardless.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Ask the host for a `WFHOST_OUTPUT` file; its contents come back in
    /// [`Output::output_file`].
    pub fn capture_output_file(mut self, capture: bool) -> Self {
        self.capture_output_file = capture;
        self
    }

    /// The program this command runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Run the command; same as [`run`].
    pub fn run(self) -> Result<Output, ProcessError> {
        run(self)
    }
}

/// How a program ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when the program was ended by a signal.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if any.
    pub signal: Option<i32>,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
    /// Whether the program was killed because it ran out of time.
    pub timed_out: bool,
    /// Contents of the `WFHOST_OUTPUT` file, if one was requested.
    pub output_file: Option<Vec<u8>>,
}

impl Output {
    /// Exit code 0, not timed out.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a program could not be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// The step's grants do not allow this call.
    Denied {
        /// What was refused, e.g. `exec of 'curl'`.
        what: String,
        /// The grant line that would allow it, e.g. `grants: { exec: [curl] }`.
        missing_grant: String,
    },
    /// The program could not be started (not found, not executable ...).
    Failed(String),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Denied {
                what,
                missing_grant,
            } => write!(f, "denied: {what} (add {missing_grant})"),
            ProcessError::Failed(message) => write!(f, "could not start program: {message}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// Both kinds are permanent: retrying does not add a grant or a program.
impl From<ProcessError> for StepError {
    fn from(e: ProcessError) -> Self {
        StepError::Permanent(e.to_string())
    }
}

/// Run a program to completion and collect its output.
pub fn run(cmd: Command) -> Result<Output, ProcessError> {
    call(cmd, wit::run)
}

/// Like [`run`], and each line the program writes also goes to the step's
/// log as it is written (stdout at info, stderr at warn): users follow it
/// live, and the lines of a program killed by a timeout or a cancel are
/// kept. Needs a host with `wfhost:plugin@0.1.1`.
pub fn run_streamed(cmd: Command) -> Result<Output, ProcessError> {
    call(cmd, wit::run_streamed)
}

fn call(
    cmd: Command,
    start: fn(&wit::Command) -> Result<wit::Output, wit::ProcessError>,
) -> Result<Output, ProcessError> {
    let timeout_ms = cmd
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let wit_cmd = wit::Command {
        program: cmd.program,
        args: cmd.args,
        cwd: cmd.cwd,
        env: cmd.env,
        stdin: cmd.stdin,
        timeout_ms,
        capture_output_file: cmd.capture_output_file,
    };
    match start(&wit_cmd) {
        Ok(o) => Ok(Output {
            exit_code: o.exit_code,
            signal: o.signal,
            stdout: o.stdout,
            stderr: o.stderr,
            timed_out: o.timed_out,
            output_file: o.output_file,
        }),
        Err(wit::ProcessError::Denied(d)) => Err(ProcessError::Denied {
            what: d.what,
            missing_grant: d.missing_grant,
        }),
        Err(wit::ProcessError::Failed(m)) => Err(ProcessError::Failed(m)),
    }
}
