//! Step summaries: the `summary.md` written into each step's folder.

use std::time::Duration;

use serde_json::Value;

use crate::store::Store;
use crate::workflow::model::Step;
use crate::workflow::{step_kind, StepKind};

pub(super) fn write_summary(
    store: &Store,
    run_id: &str,
    step: &Step,
    status: &str,
    elapsed: Duration,
    error: Option<&str>,
    output: Option<&Value>,
) {
    let mut text = format!("# Step `{}`\n\n", step.id);
    if let Some(name) = &step.name {
        text.push_str(&format!("{name}\n\n"));
    }
    text.push_str(&format!(
        "- status: **{status}**\n- run: `{run_id}`\n- duration: {}\n",
        crate::step::units::humanize(elapsed)
    ));
    if let Some(error) = error {
        text.push_str(&format!("\n## Error\n\n```\n{error}\n```\n"));
    }
    if step_kind(step) == StepKind::Agent {
        text.push_str(&agent_audit(store, run_id, &step.id));
    }
    if let Some(output) = output {
        let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
        text.push_str(&format!("\n## Output\n\n```json\n{pretty}\n```\n"));
    }
    if let Err(error) = store
        .run_files(run_id)
        .write_step_file(&step.id, "summary.md", &text)
    {
        tracing::warn!("cannot write summary of step '{}': {error}", step.id);
    }
}

/// The audit section of an agent step's summary: model calls with token
/// usage, and each tool call with its decision and who made it.
fn agent_audit(store: &Store, run_id: &str, step_id: &str) -> String {
    let Ok(events) = store.events(run_id, Some(step_id)) else {
        return String::new();
    };
    let (mut calls, mut prompt, mut completion) = (0u64, 0u64, 0u64);
    let mut rows = Vec::new();
    for event in &events {
        match event.kind.as_str() {
            "model_call" => {
                calls += 1;
                prompt += event.data["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                completion += event.data["usage"]["completion_tokens"]
                    .as_u64()
                    .unwrap_or(0);
            }
            "tool_decision" => {
                let reason = event.data["reason"]
                    .as_str()
                    .or(event.data["prompt"].as_str())
                    .unwrap_or_default()
                    .replace('|', "\\|")
                    .replace('\n', " ");
                rows.push(format!(
                    "| {} | {} | {} | {} |",
                    event.data["tool"].as_str().unwrap_or_default(),
                    event.data["decision"].as_str().unwrap_or_default(),
                    event.data["decided_by"].as_str().unwrap_or_default(),
                    reason
                ));
            }
            _ => {}
        }
    }
    let mut text = format!(
        "\n## Agent audit\n\n- model calls: {calls} ({prompt} prompt + {completion} completion tokens)\n"
    );
    if !rows.is_empty() {
        text.push_str("\n| tool | decision | decided by | reason |\n|---|---|---|---|\n");
        text.push_str(&rows.join("\n"));
        text.push('\n');
    }
    text
}
