//! Exporting a run: its whole folder written from the store.
//!
//! While a run goes, its folder holds only `progress.md` and the run's
//! `events.jsonl` (see [`crate::store::RunFolders`]); the per-step files
//! are written here, on demand (`wfhost export`):
//!
//! ```text
//! <dir>/run.json                    the run record (status, args, times, error)
//! <dir>/definition.<yaml|json>      the definition the run is pinned to
//! <dir>/events.jsonl                every event of the run
//! <dir>/steps/<step>/input.json     rendered config, inputs, args of the latest attempt
//! <dir>/steps/<step>/output.json    output of the completed step
//! <dir>/steps/<step>/events.jsonl   the step's events (logs included)
//! <dir>/steps/<step>/summary.md     status, timings, error, output (agents: calls and tools)
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::engine::step_types::{self, StepType};
use crate::store::{EngineStore, EventRecord, StepRecord};
use crate::workflow::LoadedWorkflow;

/// What [`export_run`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Step folders written.
    pub steps: usize,
    /// Events written to the run's journal.
    pub events: usize,
}

/// Write run `run_id` into `dir`, creating it. `workflow` is the run's
/// pinned definition, if it still loads (it gives each step's kind, for the
/// kind's section of `summary.md`). Files already in `dir` with the same
/// names are replaced; the caller decides whether `dir` may hold anything.
pub fn export_run(
    store: &dyn EngineStore,
    workflow: Option<&LoadedWorkflow>,
    run_id: &str,
    dir: &Path,
) -> Result<Exported> {
    let run = store.run(run_id)?;
    let steps = store.steps(run_id)?;
    let inputs = store.latest_inputs(run_id)?;
    let events = store.events(run_id, None)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    write(&dir.join("run.json"), &pretty(&serde_json::to_value(&run)?))?;
    let extension = match Path::new(&run.workflow_path).extension() {
        Some(ext) if ext == "json" => "json",
        _ => "yaml",
    };
    write(
        &dir.join(format!("definition.{extension}")),
        &run.definition,
    )?;
    write(&dir.join("events.jsonl"), &journal(events.iter()))?;

    let mut by_step: HashMap<&str, Vec<&EventRecord>> = HashMap::new();
    for event in &events {
        if let Some(step) = &event.step {
            by_step.entry(step).or_default().push(event);
        }
    }
    for record in &steps {
        let step_dir = dir.join("steps").join(&record.id);
        fs::create_dir_all(&step_dir)
            .with_context(|| format!("cannot create {}", step_dir.display()))?;
        if let Some(input) = inputs.get(&record.id) {
            write(&step_dir.join("input.json"), &pretty(input))?;
        }
        if let Some(output) = &record.output {
            write(&step_dir.join("output.json"), &pretty(output))?;
        }
        let own = by_step.get(record.id.as_str()).map(Vec::as_slice);
        write(
            &step_dir.join("events.jsonl"),
            &journal(own.unwrap_or_default().iter().copied()),
        )?;
        let kind = workflow
            .and_then(|workflow| workflow.step(&record.id))
            .map(step_types::of);
        let text = summary(store, run_id, record, kind.as_deref());
        write(&step_dir.join("summary.md"), &text)?;
    }
    Ok(Exported {
        steps: steps.len(),
        events: events.len(),
    })
}

/// A step's `summary.md`: status, timings, error, the kind's own section
/// (an agent's model and tool calls), output.
fn summary(
    store: &dyn EngineStore,
    run_id: &str,
    record: &StepRecord,
    kind: Option<&dyn StepType>,
) -> String {
    let mut text = format!("# Step `{}`\n\n", record.id);
    let _ = writeln!(text, "- status: **{}**", record.status.as_str());
    let _ = writeln!(text, "- run: `{run_id}`");
    let _ = writeln!(text, "- attempts: {}", record.attempts);
    if let (Some(start), Some(end)) = (&record.started_at, &record.finished_at) {
        if let Some(duration) = duration_between(start, end) {
            let _ = writeln!(text, "- duration: {duration}");
        }
    }
    if let Some(error) = &record.error {
        let _ = write!(text, "\n## Error\n\n```\n{error}\n```\n");
    }
    if let Some(section) = kind.and_then(|kind| kind.summary(store, run_id, &record.id)) {
        text.push_str(&section);
    }
    if let Some(output) = &record.output {
        let _ = write!(text, "\n## Output\n\n```json\n{}```\n", pretty(output));
    }
    text
}

/// Events as JSON lines, as the run folder's journal writes them.
fn journal<'a>(events: impl Iterator<Item = &'a EventRecord>) -> String {
    let mut text = String::new();
    for event in events {
        let line = serde_json::json!({
            "seq": event.seq, "at": event.at, "step": event.step,
            "kind": event.kind, "data": event.data,
        });
        let _ = writeln!(text, "{line}");
    }
    text
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()) + "\n"
}

fn duration_between(start: &str, end: &str) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    let elapsed = (end - start).to_std().ok()?;
    Some(crate::step::units::humanize(elapsed))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
