//! The run loop of one drive: dispatch ready steps up to the parallelism
//! limit, take in finished steps and due retry timers, obey the control
//! tick (lease, `run_timeout`, pause and cancel requests), then settle the
//! run's status. `dispatch` starts ready steps (`for_each` a step's
//! items); `joined` takes in finished ones.

mod dispatch;
mod for_each;
mod joined;
mod tasks;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::lease::Heartbeat;
use super::setup::Setup;
use super::state::RunState;
use super::{Driver, RunEvent, RunOutcome, CONTROL_TICK, DEFAULT_PARALLELISM};
use crate::step::executor::StepFailure;
use crate::step::units::humanize;
use crate::store::RunStatus;
use crate::workflow::{parse_duration, LoadedWorkflow, Templates};

/// What a step's task ends with: its index, the attempt, how long it took
/// and its output or failure.
type StepResult = (usize, u32, Duration, Result<Value, StepFailure>);

/// One drive of a run, from its first dispatch to its final status.
pub(super) struct RunLoop<'a> {
    driver: &'a Driver,
    run_id: &'a str,
    workflow: &'a LoadedWorkflow,
    args: &'a Value,
    setup: &'a Setup,
    state: RunState,
    lease: Heartbeat,
    templates: Templates,
    /// The attempts running.
    running: tasks::StepTasks,
    /// Attempts dispatched whose starts are not yet recorded (see
    /// `dispatch`).
    starting: Vec<dispatch::PreparedStart>,
    /// Steps completed whose completions are not yet recorded: index,
    /// attempt, how long it took (see `dispatch`).
    completing: Vec<(usize, u32, Duration)>,
    /// Retry timers: each ends with the index of the step that is due.
    timers: JoinSet<usize>,
    paused: bool,
    parallelism: usize,
    /// Whether any step is `exclusive` (runs alone).
    any_exclusive: bool,
    /// `run_timeout` and the instant it is reached.
    run_deadline: Option<(Duration, Instant)>,
    /// How long a cancel waits for running steps to stop their programs.
    stop_budget: Duration,
}

impl<'a> RunLoop<'a> {
    /// A loop over `state` (restored, when the run is resumed); retries a
    /// crash left waiting get their timers now.
    pub(super) fn new(
        driver: &'a Driver,
        run_id: &'a str,
        workflow: &'a LoadedWorkflow,
        args: &'a Value,
        setup: &'a Setup,
        mut state: RunState,
        lease: Heartbeat,
    ) -> RunLoop<'a> {
        let def = &workflow.def;
        if driver.placement.is_none() {
            super::scratch::make_ahead(&driver.store.run_files(run_id), &def.steps, &setup.grants);
        }
        let mut timers = JoinSet::new();
        for (index, delay) in std::mem::take(&mut state.due_later) {
            timers.spawn(async move {
                tokio::time::sleep(delay).await;
                index
            });
        }
        let run_deadline = def
            .config
            .run_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(|t| (t, Instant::now() + t));
        let stop_budget = setup
            .grants
            .iter()
            .map(|grants| grants.kill_grace)
            .max()
            .unwrap_or_default()
            + crate::step::stop::STOP_MARGIN;
        RunLoop {
            driver,
            run_id,
            workflow,
            args,
            setup,
            state,
            lease,
            templates: Templates::new(),
            running: tasks::StepTasks::new(),
            starting: Vec::new(),
            completing: Vec::new(),
            timers,
            paused: false,
            parallelism: def.config.parallelism.unwrap_or(DEFAULT_PARALLELISM).max(1),
            any_exclusive: def.steps.iter().any(|s| s.exclusive),
            run_deadline,
            stop_budget,
        }
    }

    /// Drive until the run ends, pauses or blocks.
    pub(super) async fn run(mut self) -> Result<RunOutcome> {
        let mut tick = tokio::time::interval(CONTROL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dispatch_ready()?;
            // What changed since the last turn reaches `progress.md` (at
            // most every so often: see the board).
            self.state.board.flush(false);
            let stopping = self.paused || self.state.blocked.is_some();
            if self.running.is_empty() && (stopping || self.timers.is_empty()) {
                // Everything else is over: the cleanup steps' turn.
                if !stopping && self.state.scheduler.release_held() {
                    continue;
                }
                break;
            }
            tokio::select! {
                finished = self.running.next_finished(), if !self.running.is_empty() => {
                    // Steps that finished together are recorded together.
                    self.on_finished(finished?)?;
                }
                Some(due) = self.timers.join_next(), if !self.timers.is_empty() && !self.paused => {
                    if let Ok(index) = due {
                        self.state.waiting.remove(&index);
                        self.state.scheduler.requeue(index);
                    }
                }
                _ = tick.tick() => self.control_tick().await?,
            }
        }
        self.finish()
    }

    /// The control tick: check the lease, enforce `run_timeout`, and obey
    /// pause and cancel requests.
    async fn control_tick(&mut self) -> Result<()> {
        self.lease.check()?;
        let (driver, run_id) = (self.driver, self.run_id);
        if let Some((limit, deadline)) = self.run_deadline.filter(|_| !self.state.cancelled) {
            if Instant::now() >= deadline {
                driver.store.append_event(
                    run_id,
                    None,
                    "run_timeout",
                    &json!({ "run_timeout": humanize(limit) }),
                )?;
                self.state.cancel_reason = format!("run_timeout of {} reached", humanize(limit));
                return self.cancel().await;
            }
        }
        match driver.store.request(run_id)?.as_deref() {
            Some("pause") if !self.paused => {
                self.paused = true;
                driver.listener.on_event(&RunEvent::Pausing);
            }
            Some("cancel") if !self.state.cancelled => self.cancel().await?,
            _ => {}
        }
        Ok(())
    }

    /// Stop running steps and retry timers, and cancel what has not
    /// finished; `finally` steps run next.
    async fn cancel(&mut self) -> Result<()> {
        self.running
            .stop(&mut self.state.stop, self.stop_budget)
            .await;
        self.timers.abort_all();
        let def = &self.workflow.def;
        self.driver.cancel(self.run_id, def, &mut self.state)?;
        self.paused = false;
        Ok(())
    }

    /// Record the status the loop left the run in: blocked, paused, or its
    /// final status.
    fn finish(mut self) -> Result<RunOutcome> {
        if let Some(message) = self.state.blocked.clone() {
            return self.end(RunStatus::Blocked, Some(message));
        }
        if self.paused {
            self.driver.store.set_request(self.run_id, None)?;
            return self.end(RunStatus::Paused, None);
        }
        let state = &self.state;
        let failed = state.failed_any || !state.scheduler.is_finished();
        let (status, error) = if state.cancelled {
            (RunStatus::Cancelled, Some(state.cancel_reason.clone()))
        } else if failed {
            (
                RunStatus::Failed,
                Some("one or more steps failed".to_string()),
            )
        } else if state.tolerated_any {
            (
                RunStatus::CompletedWithErrors,
                Some("optional steps failed".to_string()),
            )
        } else {
            (RunStatus::Completed, None)
        };
        self.end(status, error)
    }

    /// Leave the run in `status` with `message`, and tell the board and
    /// the listener.
    fn end(&mut self, status: RunStatus, message: Option<String>) -> Result<RunOutcome> {
        self.driver
            .store
            .set_run_status(self.run_id, status, message.as_deref())?;
        self.state.board.set_status(status);
        self.state.board.flush(true);
        // The run folder is complete when the run ends.
        self.driver.store.flush_observers();
        self.driver
            .listener
            .on_event(&RunEvent::Finished { status });
        Ok(RunOutcome {
            run_id: self.run_id.to_string(),
            status,
            message,
        })
    }

    /// [`Driver::record_failure`] for this run.
    pub(super) fn record_failure(
        &mut self,
        index: usize,
        attempt: u32,
        failure: &StepFailure,
    ) -> Result<()> {
        let (run_id, workflow) = (self.run_id, self.workflow);
        self.driver
            .record_failure(run_id, workflow, &mut self.state, index, attempt, failure)
    }
}
