//! Cancelling a run: stopping running steps and closing what is left.

use std::time::Duration;

use anyhow::Result;

use super::state::RunState;
use super::{Driver, RunEvent};
use crate::store::StepStatus;
use crate::workflow::model::Workflow;

impl Driver {
    /// Cancel what has not finished (running steps were aborted by the
    /// caller, which kills their programs); `finally` steps still run.
    pub(super) fn cancel(&self, run_id: &str, def: &Workflow, state: &mut RunState) -> Result<()> {
        state.cancelled = true;
        self.store.set_request(run_id, None)?;
        self.listener.on_event(&RunEvent::Cancelling);
        for index in state.scheduler.close_open() {
            let note = if state.running.remove(&index) {
                "cancelled while running; its programs were killed"
            } else {
                "cancelled before it started"
            };
            self.store.set_step_status(
                run_id,
                &def.steps[index].id,
                StepStatus::Cancelled,
                Some(note),
            )?;
            // `finally` steps see it: `{{ steps.<id>.status }}` is "cancelled".
            state.record_status(index, "cancelled");
            state.board.finished(index, "cancelled", Duration::ZERO);
        }
        Ok(())
    }
}
