//! wfhost: a local workflow host whose steps run as sandboxed WebAssembly
//! components, with every transition persisted in SQLite.
//!
//! # Layers
//!
//! The modules form layers, bottom to top:
//!
//! [`step`] < [`workflow`] < [`store`] < [`engine`] < [`runtime`] <
//! [`agent`] < [`app`] < [`server`] < [`cli`]
//!
//! The rule: a module may refer (by a `crate::` or `super::` path) only to
//! itself and to modules below it. [`step`] is the contract everything
//! shares (the executor port, the grants as capability units in
//! [`step::grants`], the agent-session handle, the stop signal, WIT
//! bindings, units) and refers to nothing above it;
//! [`workflow`] is pure; [`engine`] drives runs and defines the ports
//! ([`step::executor::StepExecutor`], [`engine::agents::AgentSessions`])
//! that [`runtime`] and [`agent`] implement. [`runtime`] and [`agent`] are
//! siblings that allow one direction only: [`agent`] may use [`runtime`]
//! (its sandboxed programs and host files), [`runtime`] never uses
//! [`agent`]. [`app`] wires them together; [`server`] (HTTP) and [`cli`]
//! are thin front ends on top.
//! `tests/layers.rs` checks the rule.
//!
//! # Visibility
//!
//! Modules are `pub(crate)`: the crate's one public item is [`main`], the
//! `wfhost` command line (the binary is its only user; tests drive the
//! binary). Inside the crate, `pub` marks what other modules use.

#![deny(missing_docs)]

pub(crate) mod agent;
pub(crate) mod app;
pub(crate) mod cli;
pub(crate) mod engine;
pub(crate) mod runtime;
pub(crate) mod server;
pub(crate) mod step;
pub(crate) mod store;
pub(crate) mod workflow;

pub use cli::main;
