//! The `host` interface: logging and progress, available to every step.

use super::bindings::host::{self, LogLevel};
use super::state::StepState;
use crate::engine::executor::LogLevel as EngineLevel;

/// Longest log line kept; longer lines are cut with a marker.
const MAX_LOG_LINE: usize = 64 * 1024;

impl host::Host for StepState {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => EngineLevel::Trace,
            LogLevel::Debug => EngineLevel::Debug,
            LogLevel::Info => EngineLevel::Info,
            LogLevel::Warn => EngineLevel::Warn,
            LogLevel::Error => EngineLevel::Error,
        };
        self.step.observer.log(level, &truncate(message));
    }

    fn progress(&mut self, message: String, fraction: Option<f32>) {
        let fraction = fraction
            .filter(|f| f.is_finite())
            .map(|f| f.clamp(0.0, 1.0));
        self.step.observer.progress(&truncate(message), fraction);
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_LOG_LINE {
        let mut cut = MAX_LOG_LINE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …[cut]");
    }
    message
}

impl super::bindings::types::Host for StepState {}
