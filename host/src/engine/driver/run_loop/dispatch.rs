//! Dispatch: start one ready step (its condition, `total_timeout`, its
//! items or its next attempt).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::joined::completion;
use super::RunLoop;
use crate::engine::driver::invocation::{prepare_invocation, AttemptPlan, RunView};
use crate::engine::driver::step_log::StepLog;
use crate::engine::driver::RunEvent;
use crate::step::executor::{FailureKind, StepFailure};
use crate::step::units::humanize;
use crate::store::Change;
use crate::workflow::parse_duration;
use crate::workflow::template::evaluate_condition;

/// The most starts recorded in one transaction: a wide fan-out starts its
/// first steps without waiting for thousands to be prepared, and holds
/// fewer prepared at once.
const START_BATCH: usize = 128;

impl RunLoop<'_> {
    /// Start ready steps while the run may and there is room. An
    /// `exclusive` step waits for the running steps to finish, and nothing
    /// starts while it runs.
    pub(super) fn dispatch_ready(&mut self) -> Result<()> {
        let steps = &self.workflow.def.steps;
        while !self.paused && self.state.blocked.is_none() && self.occupied() < self.parallelism {
            let Some(next) = self.state.scheduler.peek_ready() else {
                break;
            };
            if self.any_exclusive {
                let alone_running = self.state.running.iter().any(|&i| steps[i].exclusive);
                if alone_running || (steps[next].exclusive && self.occupied() > 0) {
                    break;
                }
            }
            let Some(index) = self.state.scheduler.next_ready() else {
                break;
            };
            self.dispatch(index)?;
            if self.any_exclusive && steps[index].exclusive {
                break;
            }
            if self.starting.len() >= START_BATCH {
                self.commit_prepared()?;
            }
        }
        self.commit_prepared()
    }

    /// Steps running or about to start.
    fn occupied(&self) -> usize {
        self.running.len() + self.starting.len()
    }

    /// Record the completions taken in and the prepared attempts' starts
    /// in one transaction, then start those attempts: every transition is
    /// committed before what follows it runs, and steps that finish or
    /// start together cost one commit.
    pub(super) fn commit_prepared(&mut self) -> Result<()> {
        if self.starting.is_empty() && self.completing.is_empty() {
            return Ok(());
        }
        let starting = std::mem::take(&mut self.starting);
        let completing = std::mem::take(&mut self.completing);
        let steps = &self.workflow.def.steps;
        let mut changes: Vec<Change<'_>> = Vec::with_capacity(completing.len() + starting.len());
        for &(index, attempt, _) in &completing {
            let output = self
                .state
                .outputs
                .get(&steps[index].id)
                .unwrap_or(&serde_json::Value::Null);
            changes.push(completion(&steps[index], attempt, output));
        }
        changes.extend(starting.iter().map(|start| Change::StartAttempt {
            step: &steps[start.index].id,
            attempt: start.attempt,
            input: &start.input,
        }));
        self.driver.store.apply(self.run_id, &changes)?;
        drop(changes);
        for (index, _, elapsed) in completing {
            self.after_completion(index, elapsed)?;
        }
        for start in starting {
            let PreparedStart {
                index,
                attempt,
                future,
                ..
            } = start;
            self.announce_start(index, attempt);
            self.running
                .start(index, attempt, true, async move { (attempt, future.await) });
        }
        Ok(())
    }

    /// Tell the board and the listener that an attempt has started.
    fn announce_start(&mut self, index: usize, attempt: u32) {
        self.state.board.started(index);
        self.driver.listener.on_event(&RunEvent::StepStarted {
            step: self.workflow.def.steps[index].id.clone(),
            attempt,
        });
    }

    /// Start one ready step: check its condition and `total_timeout`, then
    /// start its items (`for_each`) or its next attempt.
    pub(super) fn dispatch(&mut self, index: usize) -> Result<()> {
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
            self.commit_prepared()?;
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
    pub(super) fn condition_holds(&mut self, index: usize) -> Result<bool> {
        let (run_id, workflow) = (self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let Some(condition) = &step.condition else {
            return Ok(true);
        };
        match evaluate_condition(&self.templates, condition, &self.state.context) {
            Ok(true) => Ok(true),
            Ok(false) => {
                // What the condition read is committed before it is acted on.
                self.commit_prepared()?;
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
                self.commit_prepared()?;
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
    pub(super) fn dispatch_items(
        &mut self,
        index: usize,
        expression: &str,
        remaining: Option<Duration>,
    ) -> Result<()> {
        // The items start as soon as they are spawned.
        self.commit_prepared()?;
        let started = self.start_for_each(index, expression, remaining);
        match started {
            Ok(future) => {
                self.state.running.insert(index);
                let attempt = self.state.attempts[index];
                // Items run in parallel: their task is not polled by the loop.
                self.running.start(index, attempt, false, future);
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
    pub(super) fn dispatch_attempt(
        &mut self,
        index: usize,
        remaining: Option<Duration>,
    ) -> Result<()> {
        let (driver, run_id, workflow) = (self.driver, self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let attempt = self.state.attempts[index] + 1;
        self.state.attempts[index] = attempt;
        let kind = self.setup.types[index].as_ref();
        let run = RunView {
            run_id,
            workflow,
            args: self.args,
            outputs: &self.state.outputs,
            context: &self.state.context,
            templates: &self.templates,
        };
        let plan = AttemptPlan {
            step,
            kind,
            component: &self.setup.components[index],
            attempt,
            grants: self.setup.grants[index].clone(),
            scratch_dir: driver.store.run_files(run_id).scratch_dir(&step.id),
        };
        let prepared = prepare_invocation(&run, plan).and_then(|invocation| {
            kind.attach(&driver.attach_context(), workflow, step, invocation)
        });
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
        let mut invocation = match prepared {
            Ok(invocation) => invocation,
            Err(failure) => {
                self.commit_prepared()?;
                driver
                    .store
                    .start_attempt(run_id, &step.id, attempt, &input)?;
                self.announce_start(index, attempt);
                return self.record_failure(index, attempt, &failure);
            }
        };
        invocation.cancel = self.state.stop.signal();
        invocation.resume = self.state.left_waits[index].take();
        invocation.lease = self.lease.step_check(&driver.store, &invocation.run_id);
        if let Some(remaining) = remaining {
            invocation.timeout = invocation.timeout.min(remaining);
        }
        let observer = Arc::new(StepLog::new(
            driver.store.clone(),
            driver.listener.clone(),
            run_id,
            &step.id,
            invocation.grants.max_output,
        ));
        let future = driver.executor_for(step).execute(invocation, observer);
        self.state.running.insert(index);
        self.starting.push(PreparedStart {
            index,
            attempt,
            input,
            future,
        });
        Ok(())
    }
}

/// An attempt prepared to start: its start is recorded (with the others
/// dispatched at the same time) before its future runs.
pub(super) struct PreparedStart {
    index: usize,
    attempt: u32,
    /// The rendered input recorded with the start.
    input: serde_json::Value,
    future: crate::step::executor::BoxFuture<Result<serde_json::Value, StepFailure>>,
}
