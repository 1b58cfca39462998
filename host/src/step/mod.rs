//! The bottom layer: the contract the engine, the runtime and the agent
//! share, importing nothing above it.
//!
//! - [`executor`]: the executor port ([`executor::StepExecutor`]) the engine
//!   drives and the runtime implements.
//! - [`grants`]: a step's grants as capability units, one file per kind:
//!   how each is resolved, capped by the ceiling, given to the WASI
//!   context and to the OS sandbox of started programs, and checked by the
//!   agent tools.
//! - [`session`]: the agent-session handle the engine attaches to agent steps.
//! - [`stop`]: asking running steps to stop.
//! - [`bindings`]: the host side of the WIT contract with plugins.
//! - [`builtin`]: the components compiled into the binary.
//! - [`units`]: durations and sizes.

pub mod bindings;
pub mod builtin;
pub mod executor;
pub mod grants;
pub mod session;
pub mod stop;
pub mod units;
