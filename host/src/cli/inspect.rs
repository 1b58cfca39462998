//! Read-only commands over the store: `runs`, `status`, `logs`, `plugins`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use super::events_view;
use super::output::Style;
use super::terminal::terminal_safe;
use crate::app::status::{status_json, Summary};

/// Arguments of `wfhost runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only runs in this state (`stale`: its driver died; `wfhost resume` continues it).
    #[arg(long, value_parser = [
        "pending", "running", "stale", "paused", "blocked", "completed",
        "completed_with_errors", "failed", "cancelled",
    ])]
    status: Option<String>,
    /// Only runs of the workflow with this `name`.
    #[arg(long, value_name = "NAME")]
    workflow: Option<String>,
    /// At most this many runs (the newest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
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
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Only this step.
    step: Option<String>,
    /// For an agent step: print its conversation (messages, tool calls and
    /// results) instead of its log.
    #[arg(long, requires = "step")]
    transcript: bool,
    /// One JSON event per line (as `watch --json`); with `--transcript`,
    /// the messages as one JSON array.
    #[arg(long)]
    json: bool,
    /// Keep printing new lines as they are written, until the run stops
    /// (finishes, pauses, blocks, or loses its driving process).
    #[arg(short, long, conflicts_with = "transcript")]
    follow: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
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
    if !super::store_exists(home)? {
        // Nothing ever ran here: say so, and create nothing.
        if args.json {
            println!("[]");
        } else {
            println!("{}", super::no_runs_here(home));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::open_store(home)?;
    let runs: Vec<_> = store
        .runs()?
        .into_iter()
        .filter(|run| {
            let state = if run.stale {
                "stale"
            } else {
                run.status.as_str()
            };
            args.status.as_deref().is_none_or(|wanted| wanted == state)
                && args
                    .workflow
                    .as_deref()
                    .is_none_or(|name| name == run.workflow)
        })
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        let filtered = args.status.is_some() || args.workflow.is_some() || args.limit == Some(0);
        if filtered {
            println!("no runs match in {}", home.display());
        } else {
            println!("no runs recorded in {}", home.display());
        }
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

/// `at` as people read it on a terminal: `2026-12-01T10:00:00Z (3m ago)`.
pub(super) fn when(at: &str, relative: bool) -> String {
    if !relative {
        return at.to_string();
    }
    let Ok(time) = chrono::DateTime::parse_from_rfc3339(at) else {
        return at.to_string();
    };
    let seconds = (chrono::Utc::now() - time.with_timezone(&chrono::Utc)).num_seconds();
    let ago = match seconds {
        s if s < 0 => return at.to_string(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    };
    format!("{at} ({ago})")
}

/// `wfhost status`.
pub fn status(home: &Path, args: StatusArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&*store, &run_id)?)?
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
    let relative = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let steps = store.steps(&run_id)?;
    let summary = Summary::of(&run, &steps);
    println!("workflow  {} ({})", run.workflow, run.workflow_path);
    println!("created   {}", when(&run.created_at, relative));
    if let Some(finished) = &run.finished_at {
        println!("finished  {}", when(finished, relative));
    }
    if let Some(who) = &run.triggered_by {
        println!("by        {}", terminal_safe(who));
    }
    if run.priority != 0 {
        println!("priority  {}", run.priority);
    }
    let counts = &summary.counts;
    println!(
        "steps     {}/{} completed · {} failed · {} skipped{}",
        counts["completed"],
        counts["total"],
        counts["failed"],
        counts["skipped"],
        match counts["cancelled"].as_u64() {
            Some(n) if n > 0 => format!(" · {n} cancelled"),
            _ => String::new(),
        }
    );
    if let Some(phase) = &summary.current_phase {
        println!("phase     {}", terminal_safe(phase));
    }
    if !summary.running.is_empty() {
        println!("running   {}", summary.running.join(", "));
    }
    if let Some(error) = &run.error {
        println!("error     {}", style.bad(&terminal_safe(error)));
    }
    println!("folder    {}", store.run_files(&run_id).dir().display());
    for approval in store.approvals(Some(&run_id), false)? {
        println!(
            "{}",
            style.warn(&format!(
                "waiting   approval #{} for step '{}': {} — `wfhost approve {} {}` or `wfhost deny {} {} --reason ...`",
                approval.id, terminal_safe(&approval.step_id), terminal_safe(&approval.prompt), run_id, approval.id, run_id, approval.id
            ))
        );
    }
    for comment in store.comments(&run_id)? {
        let about = comment
            .step
            .as_deref()
            .map(|s| format!(" on '{}'", terminal_safe(s)))
            .unwrap_or_default();
        println!(
            "comment   #{} {}{about}: {}",
            comment.id,
            terminal_safe(&comment.author),
            super::terminal::safe_line(&comment.text, 200)
        );
    }
    let artifacts = store.artifacts(&run_id, None)?;
    if !artifacts.is_empty() {
        println!(
            "artifacts {} (`wfhost artifacts {run_id}`)",
            artifacts.len()
        );
    }
    println!();
    for step in steps {
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
        if let Some(output) = step.output.as_ref().and_then(output_summary) {
            println!("  {:<24} {}", "", style.dim(&format!("→ {output}")));
        }
        if let Some(error) = &step.error {
            // A step's error may quote what the step or a model wrote.
            for line in terminal_safe(error).lines().take(4) {
                println!("  {:<24} {}", "", style.bad(line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The longest summary of a step's output `status` prints, in characters.
const OUTPUT_SUMMARY_CHARS: usize = 160;

/// A step's output on one line for `status`: an object as `key=value`
/// pairs (text values by their first line; empty ones left out), anything
/// else as compact JSON; cut to [`OUTPUT_SUMMARY_CHARS`] and made safe for a
/// terminal. `None` when there is nothing to show.
fn output_summary(output: &Value) -> Option<String> {
    let value_text = |value: &Value| match value {
        Value::String(text) => {
            let first = text.lines().next().unwrap_or_default();
            if text.lines().nth(1).is_some() {
                format!("{first}…")
            } else {
                first.to_string()
            }
        }
        other => other.to_string(),
    };
    let text = match output {
        Value::Null => return None,
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !matches!(v, Value::Null) && v.as_str() != Some(""))
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join("  "),
        other => value_text(other),
    };
    if text.is_empty() {
        return None;
    }
    let text = terminal_safe(&text).replace(['\n', '\t'], " ");
    Some(if text.chars().count() > OUTPUT_SUMMARY_CHARS {
        format!(
            "{}…",
            text.chars().take(OUTPUT_SUMMARY_CHARS).collect::<String>()
        )
    } else {
        text
    })
}

fn duration_between(start: &str, end: &str) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    let millis = (end - start).num_milliseconds().max(0) as u64;
    Some(crate::step::units::humanize(
        std::time::Duration::from_millis(millis),
    ))
}

/// `wfhost logs`.
pub fn logs(home: &Path, args: LogsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    if let Some(step) = &args.step {
        if !store.steps(&run_id)?.iter().any(|s| &s.id == step) {
            return Err(super::Invalid(format!("run {run_id} has no step '{step}'")).into());
        }
    }
    let style = Style::for_stdout();
    if let (true, Some(step)) = (args.transcript, &args.step) {
        let messages = crate::agent::transcript(&*store, &run_id, step);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&messages)?);
        } else if messages.is_empty() {
            println!(
                "step '{step}' of run {run_id} has no recorded conversation (is it an agent step?)"
            );
        } else {
            print_transcript(&style, &messages);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let show = events_view::Show {
        step_column: args.step.is_none(),
        run_events: false,
    };
    let mut last = 0;
    let print = |event: &crate::store::EventRecord| {
        if args.json {
            if event.step.is_some() {
                println!("{}", serde_json::to_string(event).unwrap_or_default());
            }
        } else if let Some(line) = events_view::line(&style, event, show) {
            println!("{line}");
        }
    };
    for event in store.events(&run_id, args.step.as_deref())? {
        last = event.seq;
        print(&event);
    }
    if args.follow {
        events_view::follow(&*store, &run_id, last, |event| {
            if args.step.is_none() || event.step == args.step {
                print(event);
            }
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A conversation for people: each message under a header naming its role,
/// tool calls as `→ name arguments [id]`; model-written text through
/// [`terminal_safe`].
fn print_transcript(style: &Style, messages: &[Value]) {
    for message in messages {
        let text =
            |key: &str| terminal_safe(message.get(key).and_then(Value::as_str).unwrap_or_default());
        let role = text("role");
        let header = match (
            role.as_ref(),
            message.get("tool_call_id").and_then(Value::as_str),
        ) {
            ("tool", Some(id)) => format!("── tool result [{}]", terminal_safe(id)),
            (role, _) => format!("── {role}"),
        };
        println!("{}", style.bold(&header));
        let content = text("content");
        if !content.is_empty() {
            println!("{content}");
        }
        if let Some(Value::Array(calls)) = message.get("tool_calls") {
            for call in calls {
                let field = |key: &str| {
                    terminal_safe(call.get(key).and_then(Value::as_str).unwrap_or_default())
                };
                let arguments = match call.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                println!(
                    "{} {} {}",
                    style.warn(&format!("→ {}", field("name"))),
                    terminal_safe(&arguments),
                    style.dim(&format!("[{}]", field("id")))
                );
            }
        }
        println!();
    }
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
            "world": "step",
            "version": info.version,
            "description": info.description,
            "config_schema": serde_json::from_str::<Value>(&info.config_schema).unwrap_or(Value::Null),
        }));
    }
    for policy in crate::runtime::builtin::POLICIES {
        infos.push(json!({
            "name": policy.name,
            "world": "tool-policy",
            "description": policy.description,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        for info in &infos {
            let kind = match info["world"].as_str() {
                Some("step") => info["version"].as_str().unwrap_or_default(),
                _ => "policy",
            };
            println!(
                "{:<15} {:<8} {}",
                info["name"].as_str().unwrap_or_default(),
                kind,
                info["description"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod output_summary_tests {
    use super::*;

    #[test]
    fn an_output_is_one_short_safe_line() {
        let output = serde_json::json!({
            "exit_code": 0, "stdout": "one\ntwo", "stderr": "", "n": 3, "x": null
        });
        assert_eq!(
            output_summary(&output).unwrap(),
            "exit_code=0  n=3  stdout=one…"
        );
        assert_eq!(output_summary(&Value::Null), None);
        assert_eq!(output_summary(&serde_json::json!({})), None);
        let long = serde_json::json!({ "text": "\x1b[31m".to_string() + &"y".repeat(500) });
        let line = output_summary(&long).unwrap();
        assert!(
            line.starts_with("text=yyy") && line.ends_with('…'),
            "{line}"
        );
        assert_eq!(line.chars().count(), OUTPUT_SUMMARY_CHARS + 1);
    }
}
