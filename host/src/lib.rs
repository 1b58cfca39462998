//! wfhost: a local workflow host whose steps run as sandboxed WebAssembly
//! components, with every transition persisted in SQLite.
//!
//! Data flows one way: a file is read by [`workflow`], driven by [`engine`],
//! whose steps execute in [`runtime`], while [`store`] records what happened.
//! [`cli`] is a thin layer on top.

pub mod agent;
pub mod app;
pub mod cli;
pub mod engine;
pub mod runtime;
pub mod step;
pub mod store;
pub mod workflow;
