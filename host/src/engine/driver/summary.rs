//! Step summaries: the `summary.md` written into each step's folder.

use std::time::Duration;

use serde_json::Value;

use crate::engine::step_types::StepType;
use crate::store::EngineStore;
use crate::workflow::model::Step;

/// Write `summary.md` of a step that ended after `elapsed` with
/// `outcome` (its output, or its error).
pub(super) fn write_summary(
    store: &dyn EngineStore,
    run_id: &str,
    step: &Step,
    kind: &dyn StepType,
    elapsed: Duration,
    outcome: Result<&Value, &str>,
) {
    let (status, output, error) = match outcome {
        Ok(output) => ("completed", Some(output), None),
        Err(error) => ("failed", None, Some(error)),
    };
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
    if let Some(section) = kind.summary(store, run_id, &step.id) {
        text.push_str(&section);
    }
    if let Some(output) = output {
        let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
        text.push_str(&format!("\n## Output\n\n```json\n{pretty}\n```\n"));
    }
    if let Err(error) = store.note_step_file(run_id, &step.id, "summary.md", &text) {
        tracing::warn!("cannot write summary of step '{}': {error}", step.id);
    }
}
