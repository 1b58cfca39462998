//! The step log observer: a step's log lines and progress go to the
//! store's journal and the listener, capped at the step's `max_output`
//! (bytes, and one line per [`BYTES_PER_LINE`] bytes of it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::{RunEvent, RunListener};
use crate::step::executor::{LogLevel, StepObserver};
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
        }
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

fn truncate_at(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
