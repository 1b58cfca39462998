//! The run state machine and scheduler.
//!
//! [`driver::Driver`] records a run in the [`crate::store`], feeds ready
//! steps from the [`scheduler::Scheduler`] to a [`executor::StepExecutor`]
//! (the wasm runtime in production), and persists each transition before
//! the next action.

pub mod agents;
pub mod artifacts;
pub mod ceiling;
pub mod driver;
pub mod export;
mod fan_out;
pub mod grants;
pub mod placement;
mod progress;
pub mod retry;
pub mod scheduler;
pub mod step_types;

pub use driver::{Driver, RunEvent, RunListener, RunOutcome, Silent};
