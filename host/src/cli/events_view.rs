//! Run events for people, one line each: what `wfhost logs` prints and
//! `wfhost watch` renders, and following a run's events as they are
//! committed (`logs -f`, `watch`). What a step or a model wrote is printed
//! through [`terminal_safe`].

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::output::Style;
use super::terminal::terminal_safe;
use crate::store::{EngineStore, EventRecord, RunStatus};

/// What a line shows.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    /// Name the step (`step │`) on each line (all steps are shown).
    pub step_column: bool,
    /// Render the run's own events (created, status changes, requests);
    /// otherwise they give no line.
    pub run_events: bool,
}

/// The line for `event`, or `None` when it has none (an internal event,
/// or a run event when `show` leaves them out).
pub fn line(style: &Style, event: &EventRecord, show: Show) -> Option<String> {
    let time = style.dim(clock_time(&event.at));
    let Some(step) = &event.step else {
        return show
            .run_events
            .then(|| run_line(style, event).map(|line| format!("{time} {line}")))
            .flatten();
    };
    let prefix = if show.step_column {
        format!("{time} {} ", style.dim(&format!("{step} │")))
    } else {
        format!("{time} ")
    };
    let text = |key: &str| data_text(&event.data, key);
    let body = match event.kind.as_str() {
        "log" => {
            let message = text("message");
            match text("level").as_str() {
                "warn" | "error" => style.warn(&message),
                _ => message,
            }
        }
        "step_started" => style.dim(&format!("── started (attempt {})", event.data["attempt"])),
        "step_completed" => style.dim("── completed"),
        "step_failed" => style.bad(&format!("── failed: {}", text("error"))),
        "step_retry_scheduled" => style.warn(&format!(
            "── attempt {} failed: {}; next attempt at {}",
            event.data["attempt"],
            text("error"),
            text("next_attempt_at")
        )),
        "step_interrupted" | "step_cancelled" => {
            style.warn(&format!("── {}: {}", text("status"), text("note")))
        }
        "step_skipped" => style.dim(&format!("── skipped: {}", text("reason"))),
        "step_tolerated" => style.warn(&format!("── failed, tolerated: {}", text("reason"))),
        "step_reset" => style.dim(&format!("── reset: {}", text("reason"))),
        "step_suspended" => style.dim(&format!(
            "── waiting (host.suspend) until {}",
            clock_time(&text("wake_at"))
        )),
        "step_woken" => style.dim("── woken: called again"),
        kind => agent_event_line(style, kind, &event.data)?,
    };
    Some(format!("{prefix}{body}"))
}

/// A run event's line (without its time), `None` for internal ones.
fn run_line(style: &Style, event: &EventRecord) -> Option<String> {
    let text = |key: &str| data_text(&event.data, key);
    Some(match event.kind.as_str() {
        "run_created" => style.bold(&format!("run created ({})", text("workflow"))),
        "run_status" => {
            let status = text("status");
            let error = text("error");
            let line = if error.is_empty() {
                format!("run {status}")
            } else {
                format!("run {status}: {}", super::terminal::error_line(&error))
            };
            match status.as_str() {
                "completed" => style.ok(&line),
                "failed" | "cancelled" | "blocked" => style.bad(&line),
                _ => style.bold(&line),
            }
        }
        "run_claimed" => style.dim(&format!(
            "run driven by process {} (was {})",
            event.data["pid"],
            text("previous")
        )),
        "run_requested" => style.warn(&format!("{} requested", text("request"))),
        "run_timeout" => style.bad("run timeout passed: cancelling"),
        "run_upgraded" => style.dim("definition upgraded"),
        _ => return None,
    })
}

fn data_text(data: &Value, key: &str) -> String {
    terminal_safe(data.get(key).and_then(Value::as_str).unwrap_or_default()).into_owned()
}

/// Hand each event committed after `after` to `each` as it comes (polling
/// the store), until the run stops moving (finished, paused, blocked, or
/// stale: no process drives it) and every event is handed over.
pub fn follow(
    store: &dyn EngineStore,
    run_id: &str,
    mut after: i64,
    mut each: impl FnMut(&EventRecord),
) -> Result<()> {
    loop {
        for event in store.events_after(run_id, after)? {
            after = event.seq;
            each(&event);
        }
        let run = store.run(run_id)?;
        let moving = run.status == RunStatus::Running && !run.stale;
        if !moving && store.events_after(run_id, after)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line for an agent step's audit event (see `agent::record`).
/// What a model wrote is printed through [`terminal_safe`].
pub(super) fn agent_event_line(style: &Style, kind: &str, data: &Value) -> Option<String> {
    let text = |key: &str| terminal_safe(data.get(key).and_then(Value::as_str).unwrap_or_default());
    let short = |value: &str| {
        let value = terminal_safe(value);
        let line = value.lines().next().unwrap_or_default();
        if line.chars().count() > 120 || value.lines().count() > 1 {
            format!("{}…", line.chars().take(120).collect::<String>())
        } else {
            line.to_string()
        }
    };
    Some(match kind {
        "model_call" => {
            let calls: Vec<std::borrow::Cow<'_, str>> = data["tool_calls"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|c| c["name"].as_str().map(terminal_safe))
                        .collect()
                })
                .unwrap_or_default();
            let mut line = format!(
                "model turn {}: {}+{} tokens, {}",
                data["turn"],
                data["usage"]["prompt_tokens"],
                data["usage"]["completion_tokens"],
                text("finish_reason")
            );
            if !calls.is_empty() {
                line.push_str(&format!(" ({})", calls.join(", ")));
            }
            if data["replayed"] == true {
                line.push_str(", replayed");
            }
            style.dim(&line)
        }
        "model_error" => style.warn(&format!(
            "model error ({}): {}",
            text("kind"),
            text("message")
        )),
        "tool_call" => format!(
            "→ {} {} {}",
            text("tool"),
            short(&data["arguments"].to_string()),
            style.dim(&format!("[{}]", text("call_id")))
        ),
        "tool_decision" => {
            let decision = text("decision");
            let detail = [text("reason"), text("prompt"), text("note")]
                .into_iter()
                .find(|t| !t.is_empty())
                .map(|t| format!(": {}", short(&t)))
                .unwrap_or_default();
            let line = format!("  {decision} by {}{detail}", text("decided_by"));
            match decision.as_ref() {
                "deny" => style.bad(&line),
                "ask" => style.warn(&line),
                _ => style.dim(&line),
            }
        }
        "tool_result" => {
            let mut line = format!("  ← {} ({} bytes)", text("status"), data["bytes"]);
            if data["replayed"] == true {
                line.push_str(", replayed");
            }
            if text("status") != "ok" {
                line.push_str(&format!(": {}", short(&text("text"))));
            }
            style.dim(&line)
        }
        "agent_replay" => style.dim(&format!(
            "── replaying {} recorded model replies (and the tool results of their calls)",
            data["recorded_replies"]
        )),
        "replay_diverged" => style.warn(&format!(
            "── turn {}: the conversation differs from the recording; the model is called from here on",
            data["turn"]
        )),
        "approval_requested" => style.warn(&format!(
            "  waiting for approval #{}: {}",
            data["approval"],
            short(&text("prompt"))
        )),
        "approval_answered" => {
            let note = text("note");
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            };
            style.warn(&format!(
                "  approval #{} {}{note}",
                data["approval"],
                text("status")
            ))
        }
        _ => return None,
    })
}

/// The time of day of a stored timestamp (`2026-11-30T17:03:04.123Z` →
/// `17:03:04.123`, UTC as stored); anything else as it is.
pub(super) fn clock_time(at: &str) -> &str {
    match (at.find('T'), at.strip_suffix('Z')) {
        (Some(t), Some(without_zone)) => &without_zone[t + 1..],
        _ => at,
    }
}
