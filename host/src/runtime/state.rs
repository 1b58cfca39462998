//! Per-step store data: WASI context, resource table, limits, and the
//! step's context for host capabilities.

use std::sync::Arc;

use tokio::sync::watch;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::step::executor::{StepInvocation, StepObserver};
use crate::step::stop::StopTrigger;

/// What host capabilities know about the step they serve.
pub struct StepContext {
    /// The invocation (ids, grants, workdir, deadline).
    pub invocation: StepInvocation,
    /// Where logs and progress go.
    pub observer: Arc<dyn StepObserver>,
    /// When the attempt must end.
    pub deadline: tokio::time::Instant,
    /// For agent steps: the session serving `model` and `tools`.
    pub agent: Option<std::sync::Arc<dyn crate::step::session::AgentSession>>,
    /// Fired when the step must end (its deadline passed or the run was
    /// cancelled): running programs get SIGTERM, then SIGKILL after the
    /// step's `kill_grace`.
    pub stop: StopTrigger,
    /// How many programs the step is running now (the host waits for this
    /// to reach zero, up to the grace, before it drops a stopped step).
    pub programs: watch::Sender<usize>,
}

impl StepContext {
    /// Count one running program until the returned guard is dropped.
    pub fn program_started(&self) -> ProgramGuard<'_> {
        self.programs.send_modify(|count| *count += 1);
        ProgramGuard(&self.programs)
    }
}

/// Counts a running program in [`StepContext::programs`] while it lives.
pub struct ProgramGuard<'a>(&'a watch::Sender<usize>);

impl Drop for ProgramGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// The data of one step's wasmtime `Store`.
pub struct StepState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: crate::step::grants::limits::StepLimits,
    pub(crate) step: Arc<StepContext>,
    /// What the step's sockets and name lookups may do.
    pub(crate) network: crate::step::grants::network::NetworkPolicy,
    /// Progress reports the step may still make.
    pub(crate) progress: super::host_api::ProgressBudget,
    /// What `host.resumed` returns: the state the attempt's previous call
    /// handed to `host.suspend`.
    pub(crate) resumed: Option<String>,
    /// Set when this call asked to be suspended.
    pub(crate) suspension: Option<super::suspend::Suspension>,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
