//! The `host` interface: logging and progress, available to every step.
//!
//! Budgets: a log line is cut at [`MAX_LOG_LINE`] bytes (the step's total
//! log is capped by its `max_output`); a progress message is cut at
//! [`MAX_PROGRESS_MESSAGE`] bytes and at most [`MAX_PROGRESS_EVENTS`]
//! reports are kept per attempt (later ones are dropped, with one log line
//! saying so).

use super::bindings::host::{self, LogLevel};
use super::state::StepState;
use crate::step::executor::LogLevel as EngineLevel;

/// Longest log line kept; longer lines are cut with a marker.
pub const MAX_LOG_LINE: usize = 64 * 1024;
/// Longest progress message kept; longer ones are cut with a marker.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Most progress reports kept per step attempt.
pub const MAX_PROGRESS_EVENTS: u32 = 1000;

/// Progress reports one attempt may still make (carried from each call of
/// an attempt that suspends to the next).
#[derive(Debug)]
pub struct ProgressBudget {
    left: u32,
}

impl Default for ProgressBudget {
    fn default() -> Self {
        ProgressBudget {
            left: MAX_PROGRESS_EVENTS,
        }
    }
}

impl host::Host for StepState {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => EngineLevel::Trace,
            LogLevel::Debug => EngineLevel::Debug,
            LogLevel::Info => EngineLevel::Info,
            LogLevel::Warn => EngineLevel::Warn,
            LogLevel::Error => EngineLevel::Error,
        };
        self.step
            .observer
            .log(level, &truncate(message, MAX_LOG_LINE));
    }

    fn progress(&mut self, message: String, fraction: Option<f32>) {
        match self.progress.left {
            0 => return,
            1 => self.step.observer.log(
                EngineLevel::Warn,
                &format!(
                    "[wfhost: progress budget of {MAX_PROGRESS_EVENTS} reports per attempt used up; further progress reports dropped]"
                ),
            ),
            _ => {}
        }
        self.progress.left -= 1;
        let fraction = fraction
            .filter(|f| f.is_finite())
            .map(|f| f.clamp(0.0, 1.0));
        self.step
            .observer
            .progress(&truncate(message, MAX_PROGRESS_MESSAGE), fraction);
    }

    fn suspend(&mut self, ms: u64, state: String) -> wasmtime::Result<()> {
        super::suspend::suspend(self, ms, state)
    }

    fn resumed(&mut self) -> Option<String> {
        self.resumed.clone()
    }
}

/// `message` cut at `max` bytes (on a character boundary) with a marker.
pub fn truncate(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut cut = max;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …[cut]");
    }
    message
}

impl super::bindings::types::Host for StepState {}
