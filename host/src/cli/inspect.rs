//! Read-only commands over the store: `runs`, `status`, `logs`, `plugins`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use super::output::Style;
use crate::store::Store;

/// Arguments of `wfhost runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wfhost status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Print JSON: id, workflow, status, and each step's id, status,
    /// started_at, finished_at, attempts, output and error.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wfhost logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Only this step.
    step: Option<String>,
}

/// Arguments of `wfhost plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    /// Print JSON, including each plugin's config schema.
    #[arg(long)]
    json: bool,
}

/// `wfhost runs`.
pub fn runs(home: &Path, args: RunsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let runs = store.runs()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", home.display());
        return Ok(ExitCode::SUCCESS);
    }
    let style = Style::for_stdout();
    println!(
        "{:<12}  {:<10}  {:<24}  WORKFLOW",
        "RUN", "STATUS", "CREATED"
    );
    for run in runs {
        let word = if run.stale {
            "stale"
        } else {
            run.status.as_str()
        };
        let padding = " ".repeat(10usize.saturating_sub(word.len()));
        println!(
            "{:<12}  {}{padding}  {:<24}  {} ({})",
            run.id,
            style.status(word),
            run.created_at,
            run.workflow,
            run.workflow_path
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON document of `wfhost status --json` (and `run --json`).
pub fn status_json(store: &Store, run_id: &str) -> Result<Value> {
    let run = store.run(run_id)?;
    let steps = store.steps(run_id)?;
    Ok(json!({
        "id": run.id,
        "workflow": run.workflow,
        "workflow_path": run.workflow_path,
        "status": if run.stale { serde_json::json!("stale") } else { serde_json::json!(run.status) },
        "stale": run.stale,
        "driver_pid": run.driver_pid,
        "heartbeat_at": run.heartbeat_at,
        "request": run.request,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "definition_hash": run.definition_hash,
        "args": run.args,
        "run_dir": store.run_files(run_id).dir(),
        "steps": steps,
    }))
}

/// `wfhost status`.
pub fn status(home: &Path, args: StatusArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&store, &args.run)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&store, &run_id)?)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let run = store.run(&run_id)?;
    let style = Style::for_stdout();
    let shown = if run.stale {
        "stale"
    } else {
        run.status.as_str()
    };
    println!(
        "{} {} · {}",
        style.bold("run"),
        style.bold(&run.id),
        style.status(shown)
    );
    if run.stale {
        println!(
            "{}",
            style.warn(&format!(
                "its driving process stopped beating: resume with `wfhost resume {}`",
                run.id
            ))
        );
    }
    if let Some(request) = &run.request {
        println!("request   {request} (pending)");
    }
    println!("workflow  {} ({})", run.workflow, run.workflow_path);
    println!("created   {}", run.created_at);
    if let Some(finished) = &run.finished_at {
        println!("finished  {finished}");
    }
    if let Some(error) = &run.error {
        println!("error     {}", style.bad(error));
    }
    println!("folder    {}", store.run_files(&run_id).dir().display());
    println!();
    for step in store.steps(&run_id)? {
        let timing = match (&step.started_at, &step.finished_at) {
            (Some(start), Some(end)) => duration_between(start, end).unwrap_or_default(),
            (Some(_), None) => "…".to_string(),
            _ => String::new(),
        };
        let mut notes = vec![timing];
        if step.max_attempts > 1 || step.attempts > 1 {
            notes.push(format!(
                "attempt {}/{}",
                step.attempts,
                step.max_attempts.max(step.attempts)
            ));
        }
        if let Some(due) = &step.next_attempt_at {
            notes.push(format!("next attempt at {due}"));
        }
        let status = format!("{:<12}", step.status.as_str());
        println!(
            "  {:<24} {} {}",
            step.id,
            style.status(step.status.as_str()) + &status[step.status.as_str().len()..],
            style.dim(&notes.join(" · "))
        );
        if let Some(error) = &step.error {
            for line in error.lines().take(4) {
                println!("  {:<24} {}", "", style.bad(line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn duration_between(start: &str, end: &str) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    let millis = (end - start).num_milliseconds().max(0) as u64;
    Some(crate::runtime::humanize(std::time::Duration::from_millis(
        millis,
    )))
}

/// `wfhost logs`.
pub fn logs(home: &Path, args: LogsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&store, &args.run)?;
    if let Some(step) = &args.step {
        if !store.steps(&run_id)?.iter().any(|s| &s.id == step) {
            return Err(super::Invalid(format!("run {run_id} has no step '{step}'")).into());
        }
    }
    let style = Style::for_stdout();
    for event in store.events(&run_id, args.step.as_deref())? {
        let Some(step) = &event.step else { continue };
        let prefix = if args.step.is_some() {
            String::new()
        } else {
            format!("{} ", style.dim(&format!("{step} │")))
        };
        let text = |key: &str| {
            event
                .data
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match event.kind.as_str() {
            "log" => {
                let message = text("message");
                match text("level").as_str() {
                    "warn" | "error" => println!("{prefix}{}", style.warn(&message)),
                    _ => println!("{prefix}{message}"),
                }
            }
            "step_started" => println!(
                "{prefix}{}",
                style.dim(&format!("── started (attempt {})", event.data["attempt"]))
            ),
            "step_completed" => println!("{prefix}{}", style.dim("── completed")),
            "step_failed" => println!(
                "{prefix}{}",
                style.bad(&format!("── failed: {}", text("error")))
            ),
            "step_retry_scheduled" => println!(
                "{prefix}{}",
                style.warn(&format!(
                    "── attempt {} failed: {}; next attempt at {}",
                    event.data["attempt"],
                    text("error"),
                    text("next_attempt_at")
                ))
            ),
            "step_interrupted" | "step_cancelled" => println!(
                "{prefix}{}",
                style.warn(&format!("── {}: {}", text("status"), text("note")))
            ),
            "step_skipped" => println!(
                "{prefix}{}",
                style.dim(&format!("── skipped: {}", text("reason")))
            ),
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wfhost plugins`.
pub fn plugins(args: PluginsArgs) -> Result<ExitCode> {
    let runtime = crate::runtime::Runtime::new(None)?;
    let tokio = super::tokio_runtime()?;
    let mut infos = Vec::new();
    for builtin in crate::runtime::builtin::BUILTINS {
        let info = tokio.block_on(runtime.describe(builtin.name))?;
        infos.push(json!({
            "name": builtin.name,
            "version": info.version,
            "description": info.description,
            "config_schema": serde_json::from_str::<Value>(&info.config_schema).unwrap_or(Value::Null),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        for info in &infos {
            println!(
                "{:<12} {:<8} {}",
                info["name"].as_str().unwrap_or_default(),
                info["version"].as_str().unwrap_or_default(),
                info["description"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
