//! The port through which the engine attaches an agent session to an agent
//! step's invocation. The engine defines it; `crate::agent` implements it
//! and the wiring hands it to the [`Driver`](super::Driver).

use std::sync::Arc;

use serde_json::Value;

use crate::step::session::AgentHandle;
use crate::store::AgentStore;

/// Everything the host needs to serve one attempt of an agent step.
pub struct SessionContext {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The attempt (recorded replies and tool results are replayed across
    /// attempts of the same step after a crash).
    pub attempt: u32,
    /// The `for_each` item this attempt runs (the iteration of its
    /// idempotency key; 0 for other steps). Approvals belong to one
    /// attempt and iteration.
    pub iteration: u32,
    /// The agent's definition from the workflow.
    pub agent: crate::workflow::model::Agent,
    /// The step's effective grants (tools are confined by them).
    pub grants: crate::engine::grants::ResolvedGrants,
    /// Absolute directory of the workflow file (relative paths resolve here).
    pub workdir: std::path::PathBuf,
    /// The store, for audit events, approvals and recordings.
    pub store: Arc<dyn crate::store::AgentStore>,
}

/// Opens agent sessions for the driver.
pub trait AgentSessions: Send + Sync {
    /// What earlier steps of the run that used `agent_id` said, most recent
    /// first (for `session: reuse`).
    fn history(&self, store: &dyn AgentStore, run_id: &str, agent_id: &str) -> Vec<Value>;

    /// Open the session serving one attempt of an agent step; a one-line
    /// message for a configuration problem.
    fn open(&self, ctx: SessionContext) -> Result<AgentHandle, String>;
}
