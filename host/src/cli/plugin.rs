//! `wfhost plugin`: the plugin author's toolbox — the WIT contract
//! (`wit`), a new project (`new`), a check of a built component (`check`),
//! and one plugin run alone (`call`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::say::out_line;
use super::Invalid;
use crate::app::plugins::{check, Report};
use crate::runtime::inspect::{World, PLUGIN_PACKAGE_VERSION, PLUGIN_WIT};

/// Arguments of `wfhost plugin`.
#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PluginCommand {
    /// Print the WIT package this wfhost provides (`wfhost:plugin`), or write it as DIR/plugin.wit.
    Wit(super::lazy::Lazy<WitArgs>),
    /// Write a new plugin project that builds and runs as generated.
    New(super::lazy::Lazy<super::plugin_new::NewArgs>),
    /// Check a built component: its world, its imports against what wfhost provides, its config schema; compiles it into the cache.
    Check(super::lazy::Lazy<CheckArgs>),
    /// Run one step plugin (or, with --function, any exported function) alone with a config and grants, and print its output.
    Call(super::lazy::Lazy<CallArgs>),
}

/// Arguments of `wfhost plugin wit`.
#[derive(Debug, clap::Args)]
pub struct WitArgs {
    /// Write `plugin.wit` into this directory (created if missing) instead
    /// of printing it.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The world `plugin check --world` expects.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorldArg {
    /// A step plugin (`describe`, `run`).
    Step,
    /// A tool policy (`decide`).
    ToolPolicy,
}

/// Arguments of `wfhost plugin check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The component (`.wasm`), or a built-in name.
    file: String,
    /// The world it must implement (default: whichever its exports say).
    #[arg(long, value_enum)]
    world: Option<WorldArg>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wfhost plugin call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The step plugin (`.wasm`), or a built-in name.
    file: String,
    /// The step's `with:` config, a JSON object (with `--function`: the
    /// function's parameters by name).
    #[arg(long = "with", value_name = "JSON", default_value = "{}")]
    with: String,
    /// Call this exported function (`name` or `interface#name`) of any
    /// component instead of a step plugin's `run`.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// A grant, as in a step's `grants:`: `files=./data` (read;
    /// `files=./out:rw` read-write),
    /// `exec=sh`, `env=HOME`, `network=api.example.com:443`,
    /// `memory=64MiB`, `timeout=10s`, `max_output=1MiB`; or a YAML/JSON
    /// mapping (`'{exec: [sh, ls]}'`). Repeatable; paths are relative to
    /// the current directory.
    #[arg(long = "grant", value_name = "KEY=VALUE")]
    grants: Vec<String>,
    /// Print no step log lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// The host config whose operator ceiling applies.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Run `wfhost plugin …`.
pub fn plugin(home: &Path, args: PluginArgs) -> Result<ExitCode> {
    match args.command {
        PluginCommand::Wit(args) => wit(args.0),
        PluginCommand::New(args) => super::plugin_new::new(args.0),
        PluginCommand::Check(args) => check_command(home, args.0),
        PluginCommand::Call(args) => call(home, args.0),
    }
}

/// The `--home`/`--config` of the subcommands that use a home.
pub(super) fn place(args: &PluginArgs) -> Option<&super::Place> {
    match &args.command {
        PluginCommand::Call(call) => Some(&call.place),
        _ => None,
    }
}

fn wit(args: WitArgs) -> Result<ExitCode> {
    let Some(dir) = args.out else {
        print!("{PLUGIN_WIT}");
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create '{}'", dir.display()))?;
    let path = dir.join("plugin.wit");
    std::fs::write(&path, PLUGIN_WIT)
        .with_context(|| format!("cannot write '{}'", path.display()))?;
    super::say::err_line(&format!(
        "wrote {} (wfhost:plugin@{PLUGIN_PACKAGE_VERSION})",
        path.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn check_command(home: &Path, args: CheckArgs) -> Result<ExitCode> {
    let runtime = crate::app::runtime(home)?;
    let tokio = super::tokio_runtime()?;
    let expected = args.world.map(|world| match world {
        WorldArg::Step => World::Step,
        WorldArg::ToolPolicy => World::ToolPolicy,
    });
    let component = component_arg(&args.file);
    let report = check(&runtime, &tokio, &component, expected)
        .map_err(|error| Invalid(format!("{error:#}")))?;
    if args.json {
        out_line(&serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print_report(&args.file, &report);
    }
    if let Some(first) = report.problems.first() {
        return Err(Invalid(format!(
            "'{}' cannot run as {}: {first}{}",
            args.file,
            expected.unwrap_or(report.inspection.world),
            match report.problems.len() {
                1 => String::new(),
                n => format!(" (and {} more problems above)", n - 1),
            }
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// A path as given when it names a file, else the name (a built-in).
fn component_arg(file: &str) -> String {
    let path = Path::new(file);
    if path.exists() {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .to_string_lossy()
            .into_owned()
    } else {
        file.to_string()
    }
}

fn print_report(file: &str, report: &Report) {
    let inspection = &report.inspection;
    let what = match inspection.world {
        World::Step => "a step plugin",
        World::ToolPolicy => "a tool policy",
        World::Functions => "a component of plain functions",
    };
    let size = report
        .size
        .map(|bytes| format!(", {:.1} MB", bytes as f64 / 1e6))
        .unwrap_or_default();
    out_line(&format!(
        "{file}: {what} (world `{}`){size}; compiled for this machine and cached",
        inspection.world
    ));
    if let Some(info) = &report.info {
        // What `describe` returned is the plugin's to choose: no escape
        // sequence reaches the terminal.
        let field =
            |key: &str| super::terminal::terminal_safe(info[key].as_str().unwrap_or_default());
        out_line(&format!(
            "  plugin: {} {} — {}",
            field("name"),
            field("version"),
            field("description")
        ));
    }
    out_line(&format!(
        "  imports ({}; this wfhost provides wfhost:plugin@{PLUGIN_PACKAGE_VERSION} and WASI 0.2):",
        inspection.imports.len()
    ));
    for import in &inspection.imports {
        match &import.missing {
            None => out_line(&format!("    ok       {}", import.name)),
            Some(why) => out_line(&format!("    MISSING  {}: {why}", import.name)),
        }
    }
    out_line(&format!("  exports: {}", inspection.exports.join(", ")));
    if let Some(schema) = report.config_schema() {
        out_line("  config schema (`with:`):");
        let text = serde_json::to_string_pretty(schema).unwrap_or_default();
        for line in text.lines() {
            out_line(&format!("    {line}"));
        }
    }
    if report.problems.is_empty() {
        out_line("  ok: ready to run");
    } else {
        for problem in &report.problems {
            out_line(&format!("  problem: {problem}"));
        }
    }
}

fn call(home: &Path, args: CallArgs) -> Result<ExitCode> {
    let with: Value = serde_json::from_str(&args.with)
        .map_err(|error| Invalid(format!("--with is not valid JSON: {error}")))?;
    if !with.is_object() {
        return Err(Invalid("--with must be a JSON object (the step's `with:`)".into()).into());
    }
    let grants = parse_grants(&args.grants)?;
    let component = component_arg(&args.file);
    if !Path::new(&component).exists() && crate::runtime::builtin::builtin(&component).is_none() {
        return Err(Invalid(format!(
            "'{}' is neither a file nor a built-in component",
            args.file
        ))
        .into());
    }
    let mut step = json!({
        "id": "call",
        "type": "function",
        "component": component,
        "with": with,
        "grants": grants,
    });
    if let Some(function) = &args.function {
        step["function"] = json!(function);
    }
    let source = serde_json::to_string_pretty(&json!({
        "name": "plugin-call",
        "steps": [step],
    }))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let builtins = crate::runtime::builtin::names();
    let workflow = crate::workflow::load_from_source(
        &source,
        "plugin-call.json",
        &cwd,
        crate::workflow::Format::Json,
        &builtins,
    )
    .map_err(crate::app::InvalidWorkflow)?;

    // The run is recorded in a throw-away home; the operator's ceiling of
    // the real one still applies.
    let ceiling = super::load_ceiling(home, args.place.config.as_deref())?;
    super::check_grants(home, &workflow, ceiling.as_ref())?;
    let scratch = ScratchHome::new()?;
    let store = crate::app::open_store(&scratch.0, None, None)?;
    let runtime = crate::app::runtime(home)?;
    let listener: std::sync::Arc<dyn crate::engine::RunListener> = if args.quiet {
        std::sync::Arc::new(crate::engine::Silent)
    } else {
        std::sync::Arc::new(super::output::ProgressPrinter::new(true))
    };
    let driver = crate::app::driver(&store, runtime, ceiling, listener);
    let run_args = json!({});
    let run_id = driver.create_run(&workflow, &run_args)?;
    let tokio = super::tokio_runtime()?;
    let outcome = tokio.block_on(driver.drive(&run_id, &workflow, &run_args))?;
    let status = crate::app::status::status_json(&*store, &run_id)?;
    let step = &status["steps"][0];
    if outcome.status == crate::store::RunStatus::Completed {
        out_line(&serde_json::to_string_pretty(&step["output"])?);
        return Ok(ExitCode::SUCCESS);
    }
    let error = step["error"]
        .as_str()
        .or(status["error"].as_str())
        .unwrap_or("the plugin failed");
    super::say::err_line(&format!("error: {error}"));
    Ok(ExitCode::from(super::EXIT_FAILED))
}

/// `--grant` values as a step's `grants:` mapping.
fn parse_grants(given: &[String]) -> Result<Value> {
    let mut grants = Map::new();
    for grant in given {
        let invalid = |why: &str| Invalid(format!("--grant '{grant}': {why}"));
        let mapping: Map<String, Value> = if grant.trim_start().starts_with('{') {
            serde_yaml::from_str(grant).map_err(|e| invalid(&format!("not a mapping: {e}")))?
        } else {
            let (key, value) = grant
                .split_once('=')
                .ok_or_else(|| invalid("expected KEY=VALUE, e.g. exec=sh or files=./data"))?;
            let value = match key {
                "files" => {
                    let (path, access) = match value.rsplit_once(':') {
                        Some((path, "rw")) => (path, "read-write"),
                        Some((path, "ro")) => (path, "read"),
                        _ => (value, "read"),
                    };
                    json!([{ "path": path, "access": access }])
                }
                "env" | "exec" | "network" => json!([value]),
                "memory" | "timeout" | "max_output" | "sandbox" => json!(value),
                _ => {
                    return Err(invalid(
                        "unknown grant; one of files, env, exec, network, memory, timeout, \
                         max_output",
                    )
                    .into())
                }
            };
            Map::from_iter([(key.to_string(), value)])
        };
        for (key, value) in mapping {
            match (grants.get_mut(&key), value) {
                (Some(Value::Array(list)), Value::Array(more)) => list.extend(more),
                (_, value) => {
                    grants.insert(key, value);
                }
            }
        }
    }
    Ok(Value::Object(grants))
}

/// A temporary home, removed when dropped.
struct ScratchHome(PathBuf);

impl ScratchHome {
    fn new() -> Result<ScratchHome> {
        let dir = std::env::temp_dir().join(format!(
            "wfhost-call-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create '{}'", dir.display()))?;
        Ok(ScratchHome(dir))
    }
}

impl Drop for ScratchHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_merge_lists_and_take_scalars() {
        let grants = parse_grants(&[
            "exec=sh".into(),
            "{exec: [ls]}".into(),
            "files=./data".into(),
            "files=./out:rw".into(),
            "memory=64MiB".into(),
        ])
        .unwrap();
        assert_eq!(
            grants,
            json!({
                "exec": ["sh", "ls"],
                "files": [
                    { "path": "./data", "access": "read" },
                    { "path": "./out", "access": "read-write" }
                ],
                "memory": "64MiB"
            })
        );
        let error = parse_grants(&["disk=all".into()]).unwrap_err().to_string();
        assert!(
            error.contains("--grant 'disk=all': unknown grant"),
            "{error}"
        );
        let error = parse_grants(&["exec".into()]).unwrap_err().to_string();
        assert!(error.contains("expected KEY=VALUE"), "{error}");
    }
}
