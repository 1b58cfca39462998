//! The step log observer: a step's log lines and progress go to the
//! store's journal and the listener, capped at the step's `max_output`
//! (bytes, and one line per [`BYTES_PER_LINE`] bytes of it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::{RunEvent, RunListener};
use crate::step::executor::{LogLevel, Resume, StepObserver};
use crate::store::EngineStore;

/// Forwards a step's logs to the store's journal and the listener.
pub(crate) struct StepLog {
    pub(super) store: Arc<dyn EngineStore>,
    pub(super) listener: Arc<dyn RunListener>,
    pub(super) run_id: String,
    pub(super) step_id: String,
    /// Log bytes the step may still write (its `max_output`).
    pub(super) budget: AtomicU64,
    /// Log lines the step may still write (see [`BYTES_PER_LINE`]).
    pub(super) lines: AtomicU64,
    /// Whether the step's latest wait in `host.suspend` was recorded (its
    /// end is then recorded too).
    pub(super) wait_recorded: AtomicBool,
    /// Whether waits are recorded at all (not for a `for_each` step, whose
    /// items share this log and are not resumed one by one).
    pub(super) records_waits: bool,
}

/// Each log line is a journal row (and a transaction): besides its bytes,
/// a step may write one line per this many bytes of its `max_output` (at
/// least [`MIN_LINES`]), so a flood of empty lines stops as a flood of long
/// ones does, not after millions of rows.
pub(super) const BYTES_PER_LINE: u64 = 128;

/// The fewest lines any step may log.
pub(super) const MIN_LINES: u64 = 1024;

impl StepLog {
    /// A step's log with the budget of its `max_output`.
    pub(crate) fn new(
        store: Arc<dyn EngineStore>,
        listener: Arc<dyn RunListener>,
        run_id: &str,
        step_id: &str,
        max_output: u64,
    ) -> StepLog {
        StepLog {
            store,
            listener,
            run_id: run_id.to_string(),
            step_id: step_id.to_string(),
            budget: AtomicU64::new(max_output),
            lines: AtomicU64::new((max_output / BYTES_PER_LINE).max(MIN_LINES)),
            wait_recorded: AtomicBool::new(false),
            records_waits: true,
        }
    }

    /// The log of a step whose waits in `host.suspend` are not recorded.
    pub(crate) fn without_waits(mut self) -> StepLog {
        self.records_waits = false;
        self
    }
}

impl StepObserver for StepLog {
    fn log(&self, level: LogLevel, message: &str) {
        let size = message.len() as u64;
        let before = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(size.max(1)))
            })
            .unwrap_or(0);
        if before == 0 {
            return;
        }
        let lines_before = self
            .lines
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(1))
            })
            .unwrap_or(0);
        if lines_before == 0 {
            return;
        }
        let last_line = lines_before == 1;
        let cut;
        let message = if size >= before || last_line {
            cut = format!(
                "{}\n[wfhost: log cut at max_output; further lines dropped]",
                truncate_at(message, before as usize)
            );
            cut.as_str()
        } else {
            message
        };
        let data = json!({ "level": level.as_str(), "message": message });
        if let Err(error) = self
            .store
            .append_event(&self.run_id, Some(&self.step_id), "log", &data)
        {
            tracing::warn!("cannot record log line of step '{}': {error}", self.step_id);
        }
        self.listener.on_event(&RunEvent::Log {
            step: self.step_id.clone(),
            level,
            message: message.to_string(),
        });
    }

    /// A wait is recorded as `step_suspended` (the attempt, when it ends,
    /// the state) and its end as `step_woken`, so that `resume` after a
    /// crash can go on with a step that was waiting ([`left_wait`]). Both
    /// come out of the step's log budget (the state's bytes and two lines);
    /// a wait past it is not recorded, and a crash during it leaves an
    /// interrupted step as any other.
    fn suspended(&self, attempt: u32, resume: &Resume) {
        let size = resume.state.len() as u64;
        let charged = self.records_waits && take(&self.budget, size.max(1)) && take(&self.lines, 2);
        self.wait_recorded.store(charged, Ordering::Relaxed);
        if !charged {
            return;
        }
        let wake_at = chrono::DateTime::<chrono::Utc>::from(resume.wake_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let data = json!({ "attempt": attempt, "wake_at": wake_at, "state": resume.state });
        self.record("step_suspended", &data);
    }

    fn woken(&self, attempt: u32) {
        if self.wait_recorded.swap(false, Ordering::Relaxed) {
            self.record("step_woken", &json!({ "attempt": attempt }));
        }
    }

    fn progress(&self, message: &str, fraction: Option<f32>) {
        let data = json!({ "message": message, "fraction": fraction });
        if let Err(error) =
            self.store
                .append_event(&self.run_id, Some(&self.step_id), "progress", &data)
        {
            tracing::warn!("cannot record progress of step '{}': {error}", self.step_id);
        }
    }
}

impl StepLog {
    /// Append an event of the step to the store's journal.
    fn record(&self, kind: &str, data: &serde_json::Value) {
        if let Err(error) = self
            .store
            .append_event(&self.run_id, Some(&self.step_id), kind, data)
        {
            tracing::warn!("cannot record {kind} of step '{}': {error}", self.step_id);
        }
    }
}

/// Take `amount` from `left` if it holds that much.
fn take(left: &AtomicU64, amount: u64) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        left.checked_sub(amount)
    })
    .is_ok()
}

/// The wait a step's attempt `attempt` was in when its process ended, from
/// its journal `events` (oldest first): its last `step_suspended` of that
/// attempt, when no `step_woken` came after it (the step's next call had
/// not started, so nothing of it ran).
pub(crate) fn left_wait(events: &[crate::store::EventRecord], attempt: u32) -> Option<Resume> {
    let last = events
        .iter()
        .rev()
        .find(|event| matches!(event.kind.as_str(), "step_suspended" | "step_woken"))?;
    if last.kind != "step_suspended" || last.data["attempt"].as_u64() != Some(attempt.into()) {
        return None;
    }
    let wake_at = chrono::DateTime::parse_from_rfc3339(last.data["wake_at"].as_str()?).ok()?;
    Some(Resume {
        wake_at: wake_at.with_timezone(&chrono::Utc).into(),
        state: last.data["state"].as_str()?.to_string(),
    })
}

fn truncate_at(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventRecord;

    fn event(kind: &str, data: serde_json::Value) -> EventRecord {
        EventRecord {
            seq: 0,
            step: Some("s".into()),
            at: String::new(),
            kind: kind.into(),
            data,
        }
    }

    /// Only a wait of the attempt asked about, with no wake after it, is
    /// gone on with; a malformed record is not.
    #[test]
    fn a_left_wait_is_the_last_unwoken_one_of_the_attempt() {
        let suspended = |attempt: u32| {
            event(
                "step_suspended",
                json!({ "attempt": attempt, "wake_at": "2026-12-03T12:00:00.000Z", "state": "s1" }),
            )
        };
        let log = event("log", json!({ "message": "x" }));
        let woken = event("step_woken", json!({ "attempt": 1 }));
        let wait = left_wait(&[suspended(1), log.clone()], 1).unwrap();
        assert_eq!(wait.state, "s1");
        let at: chrono::DateTime<chrono::Utc> = wait.wake_at.into();
        assert_eq!(at.to_rfc3339(), "2026-12-03T12:00:00+00:00");
        assert!(left_wait(&[suspended(1), woken.clone()], 1).is_none());
        assert!(left_wait(&[suspended(1)], 2).is_none());
        assert!(left_wait(&[woken, suspended(1), log], 1).is_some());
        assert!(left_wait(&[], 1).is_none());
        let bad = event(
            "step_suspended",
            json!({ "attempt": 1, "wake_at": "soon", "state": "s" }),
        );
        assert!(left_wait(&[bad], 1).is_none());
    }
}
