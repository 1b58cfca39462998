//! Per-step store data: WASI context, resource table, limits, and the
//! step's context for host capabilities.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::engine::executor::{StepInvocation, StepObserver};

/// What host capabilities know about the step they serve.
pub struct StepContext {
    /// The invocation (ids, grants, workdir, deadline).
    pub invocation: StepInvocation,
    /// Where logs and progress go.
    pub observer: Arc<dyn StepObserver>,
    /// When the attempt must end.
    pub deadline: tokio::time::Instant,
    /// For agent steps: the session serving `model` and `tools`.
    pub agent: Option<std::sync::Arc<dyn crate::agent::AgentSession>>,
}

/// The data of one step's wasmtime `Store`.
pub struct StepState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: super::limits::StepLimits,
    pub(crate) step: Arc<StepContext>,
    /// What the step's sockets and name lookups may do.
    pub(crate) network: super::network::NetworkPolicy,
    /// Progress reports the step may still make.
    pub(crate) progress: super::host_api::ProgressBudget,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
