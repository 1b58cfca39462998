//! The run loop of one drive: dispatch ready steps up to the parallelism
//! limit, take in finished steps and due retry timers, obey the control
//! tick (lease, `run_timeout`, pause and cancel requests), then settle the
//! run's status.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::task::{JoinError, JoinSet};

use super::control::stop_running;
use super::invocation::prepare_invocation;
use super::lease::Heartbeat;
use super::setup::Setup;
use super::state::{describe_failure, within_total, RunState};
use super::step_log::StepLog;
use super::summary::write_summary;
use super::{Driver, RunEvent, RunOutcome, CONTROL_TICK, DEFAULT_PARALLELISM};
use crate::step::executor::{FailureKind, StepFailure};
use crate::step::units::humanize;
use crate::store::{Change, RunStatus, StepStatus};
use crate::workflow::template::evaluate_condition;
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
    running: JoinSet<StepResult>,
    /// Retry timers: each ends with the index of the step that is due.
    timers: JoinSet<usize>,
    paused: bool,
    parallelism: usize,
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
            running: JoinSet::new(),
            timers,
            paused: false,
            parallelism: def.config.parallelism.unwrap_or(DEFAULT_PARALLELISM).max(1),
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
            let stopping = self.paused || self.state.blocked.is_some();
            if self.running.is_empty() && (stopping || self.timers.is_empty()) {
                // Everything else is over: the cleanup steps' turn.
                if !stopping && self.state.scheduler.release_held() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    let done = self.task_result(joined)?;
                    self.on_finished(done)?;
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

    /// Start ready steps while the run may and there is room.
    fn dispatch_ready(&mut self) -> Result<()> {
        while !self.paused && self.state.blocked.is_none() && self.running.len() < self.parallelism
        {
            let Some(index) = self.state.scheduler.next_ready() else {
                break;
            };
            self.dispatch(index)?;
        }
        Ok(())
    }

    /// Start one ready step: check its condition and `total_timeout`, then
    /// start its items (`for_each`) or its next attempt.
    fn dispatch(&mut self, index: usize) -> Result<()> {
        let step = &self.workflow.def.steps[index];
        if !self.condition_holds(index)? {
            return Ok(());
        }
        let total = step
            .total_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok());
        let first = *self.state.first_started[index].get_or_insert_with(Instant::now);
        let remaining = total.map(|t| t.saturating_sub(first.elapsed()));
        if let (Some(total), Some(Duration::ZERO)) = (total, remaining) {
            let failure = StepFailure {
                kind: FailureKind::Timeout,
                message: format!(
                    "total_timeout of {} reached after {} attempt(s)",
                    humanize(total),
                    self.state.attempts[index]
                ),
            };
            let attempt = self.state.attempts[index];
            return self.record_failure(index, attempt, &failure);
        }
        match &step.for_each {
            Some(expression) => self.dispatch_items(index, expression, remaining),
            None => self.dispatch_attempt(index, remaining),
        }
    }

    /// Whether a step's `if` holds; when it does not, the step is skipped
    /// (false) or failed (an error in the condition).
    fn condition_holds(&mut self, index: usize) -> Result<bool> {
        let (run_id, workflow) = (self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let Some(condition) = &step.condition else {
            return Ok(true);
        };
        match evaluate_condition(&self.templates, condition, &self.state.context) {
            Ok(true) => Ok(true),
            Ok(false) => {
                let reason = format!("condition is false: {}", condition.trim());
                self.driver.skip_with_dependents(
                    run_id,
                    &workflow.def,
                    &mut self.state,
                    index,
                    &reason,
                )?;
                Ok(false)
            }
            Err(error) => {
                let failure =
                    StepFailure::permanent(format!("condition `{}`: {error}", condition.trim()));
                let attempt = self.state.attempts[index] + 1;
                self.state.attempts[index] = attempt;
                self.driver.store.start_attempt(
                    run_id,
                    &step.id,
                    attempt,
                    &json!({ "if": condition }),
                )?;
                self.record_failure(index, attempt, &failure)?;
                Ok(false)
            }
        }
    }

    /// Start the items of a `for_each` step as one task.
    fn dispatch_items(
        &mut self,
        index: usize,
        expression: &str,
        remaining: Option<Duration>,
    ) -> Result<()> {
        let setup = self.setup;
        let started = self.driver.start_for_each(
            self.run_id,
            self.workflow,
            index,
            expression,
            &setup.components[index],
            self.args,
            &self.templates,
            &setup.grants[index],
            &setup.policies[index],
            remaining,
            &mut self.state,
        );
        match started {
            Ok(future) => {
                self.state.running.insert(index);
                let task = self.running.spawn(async move {
                    let started = Instant::now();
                    let (attempt, result) = future.await;
                    (index, attempt, started.elapsed(), result)
                });
                let attempt = self.state.attempts[index];
                self.state.tasks.insert(task.id(), (index, attempt));
                Ok(())
            }
            Err(failure) => {
                let attempt = self.state.attempts[index];
                self.record_failure(index, attempt, &failure)
            }
        }
    }

    /// Prepare and start a step's next attempt (an agent step gets its
    /// session); a step that cannot be prepared fails with the reason.
    fn dispatch_attempt(&mut self, index: usize, remaining: Option<Duration>) -> Result<()> {
        let (driver, run_id, workflow) = (self.driver, self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let attempt = self.state.attempts[index] + 1;
        self.state.attempts[index] = attempt;
        let prepared = prepare_invocation(
            workflow,
            step,
            &self.setup.components[index],
            run_id,
            attempt,
            self.args,
            &self.state.outputs,
            &self.state.context,
            &self.templates,
            self.setup.grants[index].clone(),
            driver.store.run_files(run_id).step_dir(&step.id),
        )
        .and_then(|invocation| driver.attach_agent(workflow, step, invocation));
        let input = match &prepared {
            Ok(invocation) => json!({
                "component": invocation.component,
                "config": invocation.config,
                "inputs": invocation.inputs,
                "args": invocation.args,
                "attempt": invocation.attempt,
                "idempotency_key": invocation.idempotency_key,
            }),
            Err(_) => json!({ "config": step.with, "run": step.run }),
        };
        driver
            .store
            .start_attempt(run_id, &step.id, attempt, &input)?;
        self.state.board.started(index);
        driver.listener.on_event(&RunEvent::StepStarted {
            step: step.id.clone(),
            attempt,
        });
        let mut invocation = match prepared {
            Ok(invocation) => invocation,
            Err(failure) => return self.record_failure(index, attempt, &failure),
        };
        invocation.cancel = self.state.stop.signal();
        if let Some(remaining) = remaining {
            invocation.timeout = invocation.timeout.min(remaining);
        }
        let observer = Arc::new(StepLog {
            store: driver.store.clone(),
            listener: driver.listener.clone(),
            run_id: run_id.to_string(),
            step_id: step.id.clone(),
            budget: AtomicU64::new(invocation.grants.max_output),
        });
        let future = driver.executor.execute(invocation, observer);
        self.state.running.insert(index);
        let task = self.running.spawn(async move {
            let started = Instant::now();
            let result = future.await;
            (index, attempt, started.elapsed(), result)
        });
        self.state.tasks.insert(task.id(), (index, attempt));
        Ok(())
    }

    /// What a joined task ended with; a task that panicked or was stopped
    /// fails its step with the reason, and the run goes on.
    fn task_result(
        &mut self,
        joined: Result<(tokio::task::Id, StepResult), JoinError>,
    ) -> Result<StepResult> {
        match joined {
            Ok((task, done)) => {
                self.state.tasks.remove(&task);
                Ok(done)
            }
            Err(error) => {
                let (index, attempt) = self
                    .state
                    .tasks
                    .remove(&error.id())
                    .context("a step task failed and its step is unknown")?;
                let reason = if error.is_panic() {
                    format!(
                        "the step's task panicked: {}",
                        crate::engine::fan_out::panic_text(error)
                    )
                } else {
                    "the step's task was stopped".to_string()
                };
                let failure = Err(StepFailure::permanent(reason));
                Ok((index, attempt, Duration::ZERO, failure))
            }
        }
    }

    /// Handle one joined step: record its completion, schedule its retry or
    /// record its failure.
    fn on_finished(&mut self, (index, attempt, elapsed, result): StepResult) -> Result<()> {
        self.state.running.remove(&index);
        if let Some(counter) = self.state.item_attempts.remove(&index) {
            let used = counter.load(std::sync::atomic::Ordering::SeqCst);
            self.state.attempts[index] = self.state.attempts[index].max(used);
        }
        let step = &self.workflow.def.steps[index];
        let policy = &self.setup.policies[index];
        match result {
            Ok(output) => self.on_completed(index, attempt, elapsed, output)?,
            Err(failure)
                if step.for_each.is_none()
                    && policy.should_retry(&failure.kind, attempt)
                    && within_total(step, &self.state, index, policy.delay(attempt, 0.0)) =>
            {
                self.schedule_retry(index, attempt, &failure)?;
            }
            Err(failure) => {
                let store = &self.driver.store;
                write_summary(
                    store,
                    self.run_id,
                    step,
                    "failed",
                    elapsed,
                    Some(&failure.message),
                    None,
                );
                self.state.board.finished(index, "failed", elapsed);
                self.record_failure(index, attempt, &failure)?;
            }
        }
        self.state.board.flush(false);
        Ok(())
    }

    /// Record a step's completion (for a stage's last step, with what
    /// follows it) and write its summary.
    fn on_completed(
        &mut self,
        index: usize,
        attempt: u32,
        elapsed: Duration,
        output: Value,
    ) -> Result<()> {
        let (driver, run_id, workflow) = (self.driver, self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let completion = if step.for_each.is_some() {
            Change::CompleteStep {
                step: &step.id,
                output: &output,
            }
        } else {
            Change::FinishAttempt {
                step: &step.id,
                attempt,
                status: StepStatus::Completed,
                outcome: Ok(&output),
            }
        };
        let completed = match &step.stage_loop {
            Some(stage) => {
                self.state.complete(index, output.clone());
                driver.close_stage(
                    run_id,
                    workflow,
                    &self.templates,
                    &mut self.state,
                    index,
                    attempt,
                    stage,
                    completion,
                )?
            }
            None => {
                driver.store.apply(run_id, &[completion])?;
                self.state.complete(index, output.clone());
                true
            }
        };
        if completed {
            let store = &driver.store;
            write_summary(
                store,
                run_id,
                step,
                "completed",
                elapsed,
                None,
                Some(&output),
            );
            self.state.board.finished(index, "completed", elapsed);
            driver.listener.on_event(&RunEvent::StepCompleted {
                step: step.id.clone(),
                elapsed,
            });
        }
        Ok(())
    }

    /// Record that a failed attempt will be tried again and start its timer.
    fn schedule_retry(&mut self, index: usize, attempt: u32, failure: &StepFailure) -> Result<()> {
        let step = &self.workflow.def.steps[index];
        let policy = &self.setup.policies[index];
        let delay = policy.delay(attempt, rand::random::<f64>());
        let due = chrono::Utc::now()
            + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::zero());
        let due = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let message = describe_failure(failure);
        self.driver
            .store
            .schedule_retry(self.run_id, &step.id, attempt, &message, &due)?;
        self.state.board.retrying(index);
        self.driver.listener.on_event(&RunEvent::StepRetrying {
            step: step.id.clone(),
            attempt,
            max_attempts: policy.max_attempts,
            delay,
            error: message,
        });
        self.state.waiting.insert(index);
        self.timers.spawn(async move {
            tokio::time::sleep(delay).await;
            index
        });
        Ok(())
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
        stop_running(&mut self.running, &mut self.state.stop, self.stop_budget).await;
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
    fn record_failure(&mut self, index: usize, attempt: u32, failure: &StepFailure) -> Result<()> {
        let (run_id, workflow) = (self.run_id, self.workflow);
        self.driver
            .record_failure(run_id, workflow, &mut self.state, index, attempt, failure)
    }
}
