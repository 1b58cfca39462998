//! The `wfhost` command line: parse arguments, call the library, render
//! the result for people (default) or machines (`--json`).

mod approvals;
mod bench;
mod control;
mod events_view;
mod export;
mod history;
mod init;
mod inspect;
mod interrupt;
mod lazy;
mod notes;
mod output;
mod plugin;
mod plugin_new;
mod run;
mod say;
mod serve;
mod terminal;
mod validate;
mod worker;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{check_grants, tokio_runtime};

/// Exit code of a run that failed or of an operational error.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of invalid input: a bad workflow, bad arguments, an unknown run.
pub const EXIT_INVALID: u8 = 2;
/// Exit code of a run left paused or blocked: `wfhost resume` continues it.
pub const EXIT_STOPPED: u8 = 3;

/// A user mistake: reported on one line, exit code 2.
pub use crate::app::Invalid;

/// wfhost runs workflows (YAML or JSON DAGs of steps) whose every step is a
/// sandboxed WebAssembly component, and records every transition in SQLite
/// (or PostgreSQL, shared by workers on several machines).
#[derive(Debug, Parser)]
#[command(name = "wfhost", version, about, long_about = None)]
pub struct Cli {
    /// Kept for `wfhost --home DIR COMMAND` (each command that uses a home
    /// takes `--home` itself, which wins).
    #[arg(long, hide = true, value_name = "DIR")]
    home: Option<PathBuf>,

    /// Kept for `wfhost --config FILE COMMAND` (see `--home`).
    #[arg(long, hide = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `--home` and `--config`: on the commands that use a home (not on
/// `init`, `graph`, `plugins`, `bench`, `completions`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Place {
    /// Where runs are stored (SQLite database and run folders). Default:
    /// the nearest `.wfhost` directory here or above (`wfhost init` makes
    /// one), else `$XDG_DATA_HOME/wfhost` (`~/.local/share/wfhost`).
    #[arg(long, env = "WFHOST_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Host config file: the operator's `[ceiling]` on grants and the
    /// `[store]` settings (default: `config.toml` in the home, if present).
    #[arg(long, env = "WFHOST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Keep runs in PostgreSQL instead of SQLite under the home:
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (default: the
    /// config's `[store] url`, else SQLite). The home still holds this
    /// machine's caches and run folders.
    #[arg(long, env = "WFHOST_STORE", value_name = "URL", hide_env_values = true)]
    store: Option<String>,
}

impl Command {
    /// The command's `--home`/`--config`, when it has them.
    fn place(&self) -> Option<&Place> {
        Some(match self {
            Command::Run(a) => &a.place,
            Command::Validate(a) => &a.place,
            Command::Runs(a) => &a.place,
            Command::Workflows(a) => &a.place,
            Command::Status(a) => &a.place,
            Command::Pause(a) | Command::Cancel(a) => &a.place,
            Command::Resume(a) => &a.place,
            Command::Retry(a) => &a.place,
            Command::Watch(a) => &a.place,
            Command::Checkpoints(a) => &a.place,
            Command::Checkpoint(a) => &a.place,
            Command::Restore(a) => &a.place,
            Command::Prune(a) => &a.place,
            Command::Logs(a) => &a.place,
            Command::Export(a) => &a.place,
            Command::Approvals(a) => &a.place,
            Command::Approve(a) => &a.place,
            Command::Deny(a) => &a.place,
            Command::Plugin(a) => return plugin::place(a),
            Command::Serve(a) => &a.place,
            Command::Worker(a) => &a.place,
            Command::Artifacts(a) => &a.place,
            Command::Comment(a) => &a.place,
            Command::Token(a) => return serve::token_place(a),
            Command::Init(_)
            | Command::Graph(_)
            | Command::Plugins(_)
            | Command::Bench(_)
            | Command::Completions(_) => return None,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a directory a wfhost project: its own home (`.wfhost/`), a commented config, a starter workflow.
    Init(lazy::Lazy<init::InitArgs>),
    /// Run a workflow; exits 0 when the run completed, 1 when it failed, 2 on invalid input, 3 when paused or blocked, 130/143 when Ctrl-C/SIGTERM cancelled it.
    Run(lazy::Lazy<run::RunArgs>),
    /// Check a workflow without running it; exits 0 when valid, 2 with the problems.
    Validate(lazy::Lazy<validate::ValidateArgs>),
    /// Print a workflow's step graph as Mermaid or Graphviz dot.
    Graph(lazy::Lazy<validate::GraphArgs>),
    /// List recorded runs, newest first.
    Runs(lazy::Lazy<inspect::RunsArgs>),
    /// List the workflows that have runs (or the files of `--dir`) with executions, success rate and average duration.
    Workflows(lazy::Lazy<workflows::WorkflowsArgs>),
    /// Show a run and its steps (run ids accept unique prefixes).
    Status(lazy::Lazy<inspect::StatusArgs>),
    /// Ask the process driving a run to pause: running steps finish, no new step starts.
    Pause(lazy::Lazy<control::RunRef>),
    /// Continue a paused, blocked or stale (crashed) run in this process.
    Resume(lazy::Lazy<control::ResumeArgs>),
    /// Re-run a step of a finished run (`--from`: and everything downstream), keeping history.
    Retry(lazy::Lazy<control::RetryArgs>),
    /// Cancel a run: running steps are stopped and their programs killed.
    Cancel(lazy::Lazy<control::RunRef>),
    /// Follow a run's events live until it stops.
    Watch(lazy::Lazy<history::WatchArgs>),
    /// Mark a run's present state with a label, to restore it later.
    Checkpoint(lazy::Lazy<history::CheckpointArgs>),
    /// List the checkpoints of a run: step transitions and labelled ones.
    Checkpoints(lazy::Lazy<history::CheckpointsArgs>),
    /// Resume a run from a checkpoint: steps finished after it run again.
    Restore(lazy::Lazy<history::RestoreArgs>),
    /// Delete finished runs older than an age, with their folders; or prune
    /// the compile cache (`--cache`).
    Prune(lazy::Lazy<history::PruneArgs>),
    /// Print the log of a run, or of one of its steps.
    Logs(lazy::Lazy<inspect::LogsArgs>),
    /// Write a run's whole folder (each step's input, output, events, summary) from the store.
    Export(lazy::Lazy<export::ExportArgs>),
    /// List the built-in step components and tool policies.
    Plugins(lazy::Lazy<inspect::PluginsArgs>),
    /// The plugin author's toolbox: `wit`, `new`, `check`, `call`.
    Plugin(plugin::PluginArgs),
    /// Measure scheduling and persistence overhead on synthetic workflows.
    Bench(lazy::Lazy<bench::BenchArgs>),
    /// Print a shell completion script: `wfhost completions bash > /etc/bash_completion.d/wfhost`.
    Completions(lazy::Lazy<CompletionsArgs>),
    /// List agents' tool calls waiting for a person (`--all`: answered ones too).
    Approvals(lazy::Lazy<approvals::ApprovalsArgs>),
    /// Approve a waiting tool call: the agent's call goes ahead.
    Approve(lazy::Lazy<approvals::ApproveArgs>),
    /// Deny a waiting tool call: the reason goes back to the agent's model.
    Deny(lazy::Lazy<approvals::DenyArgs>),
    /// List a run's artifacts (files kept from steps), or extract one with `--get`.
    Artifacts(lazy::Lazy<notes::ArtifactsArgs>),
    /// Comment on a run or one of its steps.
    Comment(lazy::Lazy<notes::CommentArgs>),
    /// Serve the REST API and live events (SSE) of this home over HTTP.
    Serve(lazy::Lazy<serve::ServeArgs>),
    /// Drive the runs waiting in the store (queued with `run --detach`, or left by a driver that died); with `--store postgres://…`, one worker per machine shares the runs.
    Worker(lazy::Lazy<worker::WorkerArgs>),
    /// Bearer tokens for `wfhost serve` on a non-loopback address.
    Token(serve::TokenArgs),
}

/// Arguments of `wfhost completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// `wfhost completions SHELL`: the completion script on stdout.
fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "wfhost", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::runtime::serve_launcher_if_asked();
    crate::runtime::cache::serve_optimizer_if_asked();
    crate::runtime::use_launcher();
    crate::runtime::cache::enable_optimizer();
    let cli = Cli::parse();
    init_tracing();
    let place = cli.command.place().cloned().unwrap_or_default();
    let config = place.config.or(cli.config.clone());
    let _ = CONFIG_FILE.set(config.clone());
    let _ = STORE_URL.set(place.store.clone());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let home = crate::app::home::find(place.home.as_deref().or(cli.home.as_deref()), &cwd);
    let _ = HOME.set(home.clone());
    let home = home.path;
    if !drives_a_run(&cli.command) {
        quiet_on_closed_pipe();
    }
    let wants_json = json_requested();
    let result = match cli.command {
        Command::Init(args) => init::init(args.0),
        Command::Run(args) => run::run(&home, config.as_deref(), args.0),
        Command::Validate(args) => validate::validate(&home, config.as_deref(), args.0),
        Command::Graph(args) => validate::graph(&home, args.0),
        Command::Runs(args) => inspect::runs(&home, args.0),
        Command::Workflows(args) => workflows::workflows(&home, args.0),
        Command::Status(args) => inspect::status(&home, args.0),
        Command::Logs(args) => inspect::logs(&home, args.0),
        Command::Export(args) => export::export(&home, args.0),
        Command::Pause(args) => control::pause(&home, args.0),
        Command::Resume(args) => control::resume(&home, config.as_deref(), args.0),
        Command::Cancel(args) => control::cancel(&home, args.0),
        Command::Watch(args) => history::watch(&home, args.0),
        Command::Checkpoints(args) => history::checkpoints(&home, args.0),
        Command::Checkpoint(args) => history::checkpoint(&home, args.0),
        Command::Restore(args) => history::restore(&home, config.as_deref(), args.0),
        Command::Prune(args) => history::prune(&home, args.0),
        Command::Retry(args) => control::retry(&home, config.as_deref(), args.0),
        Command::Plugins(args) => inspect::plugins(args.0),
        Command::Plugin(args) => plugin::plugin(&home, args),
        Command::Bench(args) => bench::bench(args.0),
        Command::Completions(args) => completions(args.0),
        Command::Approvals(args) => approvals::approvals(&home, args.0),
        Command::Approve(args) => approvals::approve(&home, args.0),
        Command::Deny(args) => approvals::deny(&home, args.0),
        Command::Artifacts(args) => notes::artifacts(&home, args.0),
        Command::Comment(args) => notes::comment(&home, args.0),
        Command::Serve(args) => serve::serve(&home, config.as_deref(), args.0),
        Command::Worker(args) => worker::worker(&home, config.as_deref(), args.0),
        Command::Token(args) => serve::token(&home, args),
    };
    match result {
        Ok(code) => code,
        Err(error) => report_error(&error, wants_json),
    }
}

/// Report a failed command: `error: …` lines on stderr and, when the
/// command was asked for `--json`, the same as a JSON document on stdout
/// (`{"error": {"kind": "invalid"|"failed", "message", "diagnostics"}}`,
/// each diagnostic with `file`, `line`, `col`, `step` and `message`).
/// Invalid input exits 2, other failures 1.
fn report_error(error: &anyhow::Error, json: bool) -> ExitCode {
    let (kind, message, code) = if let Some(invalid) = error.downcast_ref::<Invalid>() {
        ("invalid", invalid.0.clone(), EXIT_INVALID)
    } else if let Some(invalid) = error.downcast_ref::<crate::app::InvalidWorkflow>() {
        ("invalid", invalid.to_string(), EXIT_INVALID)
    } else {
        ("failed", format!("{error:#}"), EXIT_FAILED)
    };
    for line in message.lines() {
        say::err_line(&format!("error: {line}"));
    }
    if json {
        let diagnostics: Vec<serde_json::Value> = error
            .downcast_ref::<crate::app::InvalidWorkflow>()
            .map(|invalid| invalid.0.iter().map(diagnostic_json).collect())
            .unwrap_or_default();
        let doc = serde_json::json!({
            "error": {
                "kind": kind,
                "message": message,
                "exit_code": code,
                "diagnostics": diagnostics,
            }
        });
        say::out_line(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    ExitCode::from(code)
}

fn diagnostic_json(diagnostic: &crate::workflow::Diagnostic) -> serde_json::Value {
    let location = diagnostic.location.as_ref();
    serde_json::json!({
        "file": location.map(|l| &l.file),
        "line": location.map(|l| l.line).filter(|&n| n > 0),
        "col": location.map(|l| l.col).filter(|&n| n > 0),
        "step": diagnostic.step,
        "message": diagnostic.message,
    })
}

/// Whether the command line asks for JSON output (`--json` before any
/// `--`), so that even a failure is reported as JSON.
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

/// Whether the command drives a run (which must go on when its terminal
/// output goes away, so it keeps Rust's ignored SIGPIPE).
fn drives_a_run(command: &Command) -> bool {
    matches!(
        command,
        Command::Run(_)
            | Command::Resume(_)
            | Command::Retry(_)
            | Command::Restore(_)
            // The server writes to sockets: a client that goes away must
            // be an error on that write, never a SIGPIPE that kills it.
            | Command::Serve(_)
            | Command::Worker(_)
    )
}

/// A command that only prints ends quietly when its reader goes away
/// (`wfhost runs | head -1`): the default SIGPIPE action, as for other
/// Unix tools, instead of a panic on the failed write.
fn quiet_on_closed_pipe() {
    // SAFETY: restoring a signal's default action has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Warnings, and the announcement of a slow first compile.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wfhost::compile=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// The `--config` file given on the command line, if any.
static CONFIG_FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The `--config` file given on the command line, if any.
fn config_file() -> Option<&'static std::path::Path> {
    CONFIG_FILE.get().and_then(|c| c.as_deref())
}

/// The `--store` URL (or `WFHOST_STORE`), if any.
static STORE_URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The `--store` URL (or `WFHOST_STORE`), if any.
fn store_url() -> Option<&'static str> {
    STORE_URL.get().and_then(|url| url.as_deref())
}

/// The home this process uses (see [`crate::app::home::find`]).
static HOME: std::sync::OnceLock<crate::app::home::Home> = std::sync::OnceLock::new();

/// Open the existing store under `home` (see [`crate::app::open_store`]);
/// a home where nothing was ever run is an error, not a new empty store.
fn open_store(
    home: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn crate::store::EngineStore>> {
    if !store_exists(home)? {
        return Err(Invalid(no_runs_here(home)).into());
    }
    crate::app::open_store(home, config_file(), store_url())
}

/// Whether there is a store to read: a PostgreSQL one is chosen, or the
/// home has a SQLite database.
fn store_exists(home: &std::path::Path) -> anyhow::Result<bool> {
    Ok(
        crate::app::store_url(home, config_file(), store_url())?.is_some()
            || crate::app::home::has_store(home),
    )
}

/// What a read-only command says where no run was ever recorded.
fn no_runs_here(home: &std::path::Path) -> String {
    format!(
        "no runs recorded in {} (the wfhost home here; `--home DIR` or WFHOST_HOME chooses another)",
        home.display()
    )
}

/// Open the store under `home` for a new run, creating it (and saying
/// where) if this home has none yet.
fn create_store(
    home: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn crate::store::EngineStore>> {
    let postgres = crate::app::store_url(home, config_file(), store_url())?.is_some();
    let created = !postgres && !crate::app::home::has_store(home);
    let store = crate::app::open_store(home, config_file(), store_url())?;
    if created {
        let why = match HOME.get().map(|h| h.source) {
            Some(crate::app::home::HomeSource::User) => {
                " (the per-user home: no `.wfhost` here or above; `wfhost init` makes one)"
            }
            _ => "",
        };
        say::err_line(&format!("created wfhost home {}{why}", home.display()));
    }
    Ok(store)
}

/// Resolve a run id prefix, turning "unknown" and "ambiguous" into user errors.
fn resolve_run(store: &dyn crate::store::EngineStore, prefix: &str) -> anyhow::Result<String> {
    use crate::store::StoreError;
    match store.resolve_run_id(prefix) {
        Ok(id) => Ok(id),
        Err(error @ (StoreError::UnknownRun(_) | StoreError::AmbiguousRun { .. })) => {
            Err(Invalid(error.to_string()).into())
        }
        Err(error) => Err(error.into()),
    }
}

/// The operator's ceiling: from `config` (`--config`), else
/// `<home>/config.toml` if it exists (see [`crate::app::load_ceiling`]).
fn load_ceiling(
    home: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::engine::ceiling::Ceiling>> {
    crate::app::load_ceiling(home, config.or(config_file()))
}

/// A driver for `store` executing steps with the wasm runtime, printing
/// progress (and step logs when `show_logs`) unless `quiet`.
fn driver(
    home: &std::path::Path,
    store: &std::sync::Arc<dyn crate::store::EngineStore>,
    ceiling: Option<crate::engine::ceiling::Ceiling>,
    quiet: bool,
    show_logs: bool,
) -> anyhow::Result<crate::engine::Driver> {
    let runtime = crate::app::runtime(home)?;
    let executor = std::sync::Arc::new(crate::runtime::WasmExecutor(runtime));
    driver_on(executor, store, ceiling, quiet, show_logs)
}

/// [`driver`] executing steps with `executor`.
fn driver_on(
    executor: std::sync::Arc<dyn crate::step::executor::StepExecutor>,
    store: &std::sync::Arc<dyn crate::store::EngineStore>,
    ceiling: Option<crate::engine::ceiling::Ceiling>,
    quiet: bool,
    show_logs: bool,
) -> anyhow::Result<crate::engine::Driver> {
    use std::sync::Arc;
    let listener: Arc<dyn crate::engine::RunListener> = if quiet {
        Arc::new(crate::engine::Silent)
    } else {
        Arc::new(output::ProgressPrinter::new(show_logs))
    };
    Ok(crate::app::driver_with(store, executor, ceiling, listener))
}
