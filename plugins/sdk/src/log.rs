//! Lines in the step's log (`wfhost logs RUN STEP`).
//!
//! ```ignore
//! use wfhost_sdk::log;
//! log::info("starting");
//! log::warn(format!("{} files skipped", 3));
//! ```

use crate::bindings::wfhost::plugin::host::{self, LogLevel};

/// Log severity, mirroring the WIT `log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Diagnostics for plugin authors.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that did not stop the step.
    Warn,
    /// A failure.
    Error,
}

/// Append `message` to the step log at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    host::log(level, message.as_ref());
}

/// Log at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message)
}

/// Log at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

/// Log at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

/// Log at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

/// Log at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}
