//! wfhost: a local workflow host whose steps run as sandboxed WebAssembly
//! components, with every transition persisted in SQLite.
//!
//! # Layers
//!
//! The modules form layers, bottom to top:
//!
//! [`step`] < [`workflow`] < [`store`] < [`engine`] < [`runtime`] <
//! [`agent`] < [`app`] < [`cli`]
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
//! [`agent`]. [`app`] wires them together; [`cli`] is a thin layer on top.
//! `tests/layers.rs` checks the rule.

pub mod agent;
pub mod app;
pub mod cli;
pub mod engine;
pub mod runtime;
pub mod step;
pub mod store;
pub mod workflow;
