//! `wfhost run`: load, validate, resolve arguments, record and drive a run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::interrupt::{self, Driven};
use super::output::Style;
use super::say::{err_line, out_line};
use super::{Invalid, EXIT_FAILED};
use crate::store::RunStatus;
use crate::workflow::{self, LoadedWorkflow};

/// Arguments of `wfhost run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Workflow file (`.yaml`, `.yml` or `.json`).
    file: PathBuf,
    /// A run argument as NAME=VALUE (repeatable). Typed by the workflow's
    /// `args` schema: `--arg count=3` is a number when `count` is an integer.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    args: Vec<String>,
    /// A JSON or YAML file holding an object of run arguments; `--arg`
    /// values override it.
    #[arg(long, value_name = "FILE")]
    args_file: Option<PathBuf>,
    /// Run arguments as one JSON object, e.g. `--context '{"filePath":
    /// "src/a.ts"}'` (AutomatosX's spelling); `--arg` values override it,
    /// and it overrides `--args-file`.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Print the finished run as JSON on stdout (same shape as `status --json`).
    #[arg(long)]
    json: bool,
    /// Print no progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Do not echo step log lines while running (they stay in `wfhost logs`).
    #[arg(long)]
    no_logs: bool,
    /// Start the run and return: print its id, and drive it in a background
    /// process whose output goes to `driver.log` in the run folder. With a
    /// PostgreSQL store (`--store`), queue it instead: a `wfhost worker` on
    /// any machine takes it. Follow it with `wfhost watch`, `status`,
    /// `logs`; stop it with `cancel`.
    #[arg(long, conflicts_with = "json")]
    detach: bool,
    /// Who or what started the run (e.g. `ci-pipeline`), recorded on it and
    /// shown by `status`.
    #[arg(long, value_name = "NAME")]
    triggered_by: Option<String>,
    /// The run's priority, recorded on it and shown by `status` (default 0).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    priority: Option<i64>,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Run `wfhost run`.
pub fn run(home: &Path, config: Option<&Path>, args: RunArgs) -> Result<ExitCode> {
    let workflow = load_workflow(Some(home), &args.file)?;
    let ceiling = super::load_ceiling(home, config)?;
    // A run queued for workers has its grants resolved (and checked
    // against their ceilings) on the machines that run its steps.
    let on_postgres =
        crate::app::store_url(home, super::config_file(), super::store_url())?.is_some();
    let queued = args.detach && on_postgres;
    if !queued {
        super::check_grants(home, &workflow, ceiling.as_ref())?;
    }
    let policies = crate::app::plugins::link_policies(&workflow);
    if !policies.is_empty() {
        return Err(crate::app::InvalidWorkflow(policies).into());
    }
    let run_args = collect_args(
        &workflow,
        args.args_file.as_deref(),
        args.context.as_deref(),
        &args.args,
    )?;

    crate::app::runs::check_triggered_by(args.triggered_by.as_deref())?;
    // Driven here, every step runs here: its components load while the
    // store opens and the run is recorded and claimed; the driver waits
    // for them when it prepares the run. (A detached run is driven by
    // another process; on PostgreSQL steps may run on workers.)
    let warming = (!args.detach && !on_postgres).then(|| crate::app::warm_runtime(home, &workflow));
    let tokio = (!args.detach).then(crate::app::start_tokio_runtime);
    let store = super::create_store(home)?;
    let executor: std::sync::Arc<dyn crate::step::executor::StepExecutor> = match warming {
        Some(warming) => std::sync::Arc::new(warming),
        None => std::sync::Arc::new(crate::runtime::WasmExecutor(crate::app::runtime(home)?)),
    };
    let driver = super::driver_on(executor, &store, ceiling, args.quiet, !args.no_logs)?;
    let run_id = driver.create_run_with(
        &workflow,
        &run_args,
        args.triggered_by.as_deref(),
        args.priority.unwrap_or(0),
    )?;
    if args.detach {
        return detach(home, config, &*store, &run_id, args.quiet);
    }
    let runtime = match tokio {
        Some(starting) => starting.wait()?,
        None => super::tokio_runtime()?,
    };
    let driven = interrupt::drive_on(
        runtime,
        &*store,
        &run_id,
        !args.quiet,
        driver.drive(&run_id, &workflow, &run_args),
    )?;
    finish_and_exit(&*store, &run_id, args.json, args.quiet, driven)
}

/// `--detach`: drive the recorded run in a background process (see
/// [`crate::app::background`]) and print the run id.
fn detach(
    home: &Path,
    config: Option<&Path>,
    store: &dyn crate::store::EngineStore,
    run_id: &str,
    quiet: bool,
) -> Result<ExitCode> {
    if let Some(url) = store.url() {
        out_line(run_id);
        if !quiet {
            err_line(&format!(
                "run {run_id} queued in {}: a `wfhost worker` on that store takes it",
                crate::store::redact_url(&url)
            ));
            err_line(&format!(
                "follow it: wfhost watch {run_id} · wfhost status {run_id} · stop it: wfhost cancel {run_id}"
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let started = crate::app::background::start_driver(home, config, store, run_id)?;
    out_line(run_id);
    if !quiet {
        err_line(&format!(
            "run {run_id} started in the background (pid {}); its output: {}",
            started.pid,
            started.log.display()
        ));
        err_line(&format!(
            "follow it: wfhost watch {run_id} · wfhost status {run_id} · stop it: wfhost cancel {run_id}"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Report how a drive ended ([`finish_status`]), then end the process at
/// once when the store is a local SQLite file: by then everything the drive did is committed and its run
/// folder written (the drive's end waits for the run-folder writer), so
/// what returning would still do is teardown: dropping the store, the
/// component cache and the driver, and joining the run-folder writer, all
/// of which the kernel does faster in one go at exit (~0.5 ms of every
/// run). A PostgreSQL store's connections are closed properly instead.
pub fn finish_and_exit(
    store: &dyn crate::store::EngineStore,
    run_id: &str,
    json: bool,
    quiet: bool,
    driven: Driven,
) -> Result<ExitCode> {
    let status = finish_status(store, run_id, json, quiet, driven)?;
    if store.url().is_none() {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(status.into());
    }
    Ok(ExitCode::from(status))
}

/// Report how a drive ended and choose the exit code: 0 completed, 1
/// failed or cancelled, 3 paused or blocked (resume it), 128 + the signal
/// when a signal cancelled (130, 143) or stopped the run.
fn finish_status(
    store: &dyn crate::store::EngineStore,
    run_id: &str,
    json: bool,
    quiet: bool,
    driven: Driven,
) -> Result<u8> {
    let (outcome, interrupted) = match driven {
        Driven::Finished {
            outcome,
            interrupted,
        } => (outcome, interrupted),
        Driven::Stopped { signal } => {
            return Ok(interrupt::exit_code(signal));
        }
    };
    // A drive that failed is reported as an error (as JSON too with
    // `--json`), never after a status document: one document on stdout.
    let outcome = outcome?;
    if json {
        let status = crate::app::status::status_json(store, run_id)?;
        out_line(&serde_json::to_string_pretty(&status)?);
    }
    debug_assert_eq!(
        outcome.run_id, run_id,
        "finish reports the run it was given"
    );
    if !quiet {
        let style = Style::for_stderr();
        if let Some(message) = outcome
            .message
            .as_ref()
            .filter(|_| outcome.status == RunStatus::Blocked)
        {
            err_line(&style.warn(&format!("blocked: {message}")));
        }
        if outcome.status == RunStatus::Paused {
            err_line(&style.warn(&format!("paused: continue with `wfhost resume {run_id}`")));
        }
        err_line(&style.dim(&format!(
            "details: wfhost status {run_id} · wfhost logs {run_id}"
        )));
    }
    match (interrupted, outcome.status) {
        (Some(signal), RunStatus::Cancelled) => {
            return Ok(interrupt::exit_code(signal));
        }
        // The signal came as the run ended: "cancelling" was said, so say
        // why the run was not cancelled.
        (Some(signal), status) => err_line(&format!(
            "{}: run {run_id} had already ended ({}) when the cancel reached it",
            interrupt::name(signal),
            status.as_str()
        )),
        (None, _) => {}
    }
    Ok(match outcome.status {
        RunStatus::Completed | RunStatus::CompletedWithErrors => 0,
        RunStatus::Paused | RunStatus::Blocked => super::EXIT_STOPPED,
        _ => EXIT_FAILED,
    })
}

/// Load and validate a workflow file; problems become one [`Invalid`].
/// Agents its steps name but it does not define come from the agents file
/// of `home` (when given).
pub fn load_workflow(home: Option<&Path>, path: &Path) -> Result<LoadedWorkflow> {
    crate::app::runs::load_workflow(home, path)
}

/// What kind of JSON value `value` is, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Merge `--args-file`, `--context` and `--arg` values, apply defaults and
/// check the schema.
fn collect_args(
    workflow: &LoadedWorkflow,
    args_file: Option<&Path>,
    context: Option<&str>,
    pairs: &[String],
) -> Result<Value> {
    let schema = workflow.def.args.as_ref();
    let mut given = Map::new();
    if let Some(path) = args_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read args file '{}'", path.display()))
            .map_err(|e| Invalid(format!("{e:#}")))?;
        let value: Value =
            serde_yaml::from_str(&text).map_err(|e| Invalid(format!("{}: {e}", path.display())))?;
        match value {
            Value::Object(map) => given.extend(map),
            Value::Null => {}
            _ => {
                return Err(
                    Invalid(format!("{}: args file must hold an object", path.display())).into(),
                )
            }
        }
    }
    if let Some(text) = context {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => given.extend(map),
            Ok(other) => {
                return Err(Invalid(format!(
                    "--context must be a JSON object of arguments, not {}",
                    json_kind(&other)
                ))
                .into())
            }
            Err(e) => return Err(Invalid(format!("--context is not valid JSON: {e}")).into()),
        }
    }
    for pair in pairs {
        let Some((name, raw)) = pair.split_once('=') else {
            return Err(Invalid(format!("--arg '{pair}': expected NAME=VALUE")).into());
        };
        if name.is_empty() {
            return Err(Invalid(format!("--arg '{pair}': the name is empty")).into());
        }
        given.insert(
            name.to_string(),
            workflow::coerce_cli_arg(schema, name, raw),
        );
    }
    workflow::resolve_args(schema, given)
        .map_err(|diagnostics| crate::app::InvalidWorkflow(diagnostics).into())
}
