//! The step log observer: a step's log lines and progress go to the
//! store's journal and the listener, capped at the step's `max_output`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::{RunEvent, RunListener};
use crate::step::executor::{LogLevel, StepObserver};
use crate::store::EngineStore;

/// Forwards a step's logs to the store's journal and the listener.
pub(super) struct StepLog {
    pub(super) store: Arc<dyn EngineStore>,
    pub(super) listener: Arc<dyn RunListener>,
    pub(super) run_id: String,
    pub(super) step_id: String,
    /// Log bytes the step may still write (its `max_output`).
    pub(super) budget: AtomicU64,
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
        let cut;
        let message = if size >= before {
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
