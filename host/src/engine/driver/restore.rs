//! Restore after a crash: bring the in-memory state of a resumed run in
//! line with the store.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::state::RunState;
use super::{Driver, ResumeOptions};
use crate::engine::retry::RetryPolicy;
use crate::store::{Change, StepStatus};
use crate::workflow::model::{Escalation, Workflow};
use crate::workflow::LoadedWorkflow;

impl Driver {
    /// Bring the in-memory state in line with the store (a resumed run).
    /// Returns a message when an interrupted step needs an operator decision.
    pub(super) fn restore(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        policies: &[RetryPolicy],
        options: &ResumeOptions,
        state: &mut RunState,
    ) -> Result<Option<String>> {
        let def = &workflow.def;
        let records = self.store.steps(run_id)?;
        for name in options.rerun.iter().chain(&options.skip) {
            if !def.steps.iter().any(|s| &s.id == name) {
                anyhow::bail!("run {run_id} has no step '{name}'");
            }
        }
        let records = super::state::records_by_id(&records);
        let mut needs_decision = Vec::new();
        for index in workflow.graph.topo_order() {
            let step = &def.steps[index];
            let Some(record) = records.get(step.id.as_str()) else {
                continue;
            };
            state.attempts[index] = record.attempts;
            match record.status {
                StepStatus::Completed => {
                    state.scheduler.settle(index);
                    let output = record.output.clone().unwrap_or(Value::Null);
                    state.note_completion(index, &output);
                    state.complete(index, output);
                    state.board.finished(index, "completed", Duration::ZERO);
                }
                StepStatus::Failed
                    if step.on_failure.as_ref().and_then(|o| o.escalate)
                        == Some(Escalation::Block) =>
                {
                    // The operator resumed a run this step blocked: try it again.
                    self.store
                        .reset_step(run_id, &step.id, "resumed after blocking the run")?;
                }
                StepStatus::Failed if step.optional || step.continue_on_error => {
                    state.scheduler.settle(index);
                    state.tolerated_any = true;
                    state.record_status(index, "failed");
                    state.scheduler.complete(index);
                }
                StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled => {
                    state.scheduler.settle(index);
                    state.record_status(index, record.status.as_str());
                    state.failed_any |= record.status == StepStatus::Failed;
                    for (skipped, _) in state.scheduler.fail(index) {
                        state.board.skipped(skipped);
                    }
                    state
                        .board
                        .finished(index, record.status.as_str(), Duration::ZERO);
                }
                StepStatus::Running | StepStatus::Interrupted
                    if !options.skip.contains(&step.id)
                        && !options.rerun.contains(&step.id)
                        && self.go_on_waiting(
                            run_id,
                            workflow,
                            state,
                            index,
                            record.attempts,
                        )? => {}
                StepStatus::Running | StepStatus::Interrupted => {
                    let retry = policies[index].max_attempts > record.attempts;
                    if self.restore_interrupted(run_id, def, options, state, index, retry)? {
                        needs_decision.push(step.id.clone());
                    }
                }
                StepStatus::Retrying => {
                    let wait = retry_wait(record.next_attempt_at.as_deref());
                    if !wait.is_zero() {
                        state.scheduler.settle(index);
                        state.scheduler.mark_waiting_retry(index);
                        state.due_later.push((index, wait));
                    }
                }
                StepStatus::Pending => {}
            }
        }
        // The latest go-back of a failed step (`retry_step`), for
        // `{{ retry.* }}`.
        if let Some(data) = self.store.latest_event(run_id, "step_loop")? {
            if let (Some(error), Some(from)) = (
                data.get("error").and_then(Value::as_str),
                data.get("from").and_then(Value::as_str),
            ) {
                let attempt = data.get("loop").and_then(Value::as_u64).unwrap_or(1) as u32;
                state.set_retry_context(error, attempt, from);
            }
        }
        if needs_decision.is_empty() {
            return Ok(None);
        }
        let list = needs_decision.join(", ");
        let first = &needs_decision[0];
        Ok(Some(format!(
            "step(s) {list} were interrupted while running and are not marked idempotent; \
             decide with `wfhost resume {run_id} --rerun {first}` or `--skip {first}`"
        )))
    }

    /// A step a crash interrupted while it waited in `host.suspend`, no
    /// code of it running: its next attempt goes on with the wait (and
    /// the state it handed over) without asking anyone (an operator's
    /// `--skip` or `--rerun` of it is obeyed instead). Returns whether the
    /// step was one (a `for_each` step's items are not followed one by one,
    /// and a step placed on workers waits there: neither ever is).
    fn go_on_waiting(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        state: &mut RunState,
        index: usize,
        attempt: u32,
    ) -> Result<bool> {
        let step = &workflow.def.steps[index];
        let placed = self.placement.is_some() && crate::engine::placement::placeable(step);
        if step.for_each.is_some() || placed {
            return Ok(false);
        }
        let events = self.store.events(run_id, Some(&step.id))?;
        let Some(wait) = super::step_log::left_wait(&events, attempt) else {
            return Ok(false);
        };
        self.store.set_step_status(
            run_id,
            &step.id,
            StepStatus::Interrupted,
            Some("interrupted while waiting in host.suspend; the wait goes on"),
        )?;
        state.left_waits[index] = Some(wait);
        Ok(true)
    }

    /// A step a crash interrupted: skip it (and its dependents) or run it
    /// again as the operator decided, or again by itself when it is
    /// idempotent or has attempts left (`retry`). Returns whether it needs
    /// an operator decision.
    fn restore_interrupted(
        &self,
        run_id: &str,
        def: &Workflow,
        options: &ResumeOptions,
        state: &mut RunState,
        index: usize,
        retry: bool,
    ) -> Result<bool> {
        let step = &def.steps[index];
        if options.skip.contains(&step.id) {
            self.store.set_step_status(
                run_id,
                &step.id,
                StepStatus::Skipped,
                Some("skipped by the operator after an interruption"),
            )?;
            state.scheduler.settle(index);
            for (skipped, _) in state.scheduler.fail(index) {
                let reason = format!("needs '{}', which was skipped", step.id);
                self.store
                    .skip_step(run_id, &def.steps[skipped].id, &reason)?;
                state.board.skipped(skipped);
            }
        } else if options.rerun.contains(&step.id) || step.idempotent || retry {
            self.store.set_step_status(
                run_id,
                &step.id,
                StepStatus::Interrupted,
                Some("interrupted; running it again"),
            )?;
        } else {
            self.store.set_step_status(
                run_id,
                &step.id,
                StepStatus::Interrupted,
                Some("interrupted while running; not marked idempotent"),
            )?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// How long a driver taking a run over waits at most for one look at the
/// attempts its predecessor left running on workers.
const LOOK_AT_LEFT_ATTEMPTS: Duration = Duration::from_millis(500);

impl Driver {
    /// The attempts an earlier driver of the run placed on workers: wait
    /// for those still running on live workers (their claims renewed) and
    /// record every one that completed (see [`Driver::adopt_outcomes`]);
    /// then cancel what is left (queued, or claimed by a worker that is
    /// gone), which restore decides about as about any interrupted step.
    /// A cancel or pause asked meanwhile stops the wait.
    pub(super) fn take_over_attempts(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        queue: &dyn crate::store::StepQueue,
    ) -> Result<()> {
        let mut told = false;
        loop {
            // Counted before adopting: an attempt that ends between the two
            // is then adopted now, not taken for interrupted once the count
            // says nothing is left running.
            let live = queue.live_tasks_of(run_id)?;
            self.adopt_outcomes(run_id, workflow, queue)?;
            if live == 0 || self.store.request(run_id)?.is_some() {
                break;
            }
            if !told {
                self.listener.on_event(&super::RunEvent::Log {
                    step: "wfhost".to_string(),
                    level: crate::step::executor::LogLevel::Info,
                    message: format!(
                        "waiting for {live} step attempt(s) an earlier driver placed, still running on workers"
                    ),
                });
                told = true;
            }
            queue.wait_for_outcomes(LOOK_AT_LEFT_ATTEMPTS);
        }
        queue.cancel_tasks_of(run_id)?;
        Ok(())
    }

    /// Record the completions a driver that died left unrecorded: attempts
    /// it placed that completed on a worker (each exactly once: the step is
    /// still recorded as running that attempt). A step with `for_each` or
    /// closing a stage loop is left to restore (its completion is more
    /// than its attempt's).
    fn adopt_outcomes(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        queue: &dyn crate::store::StepQueue,
    ) -> Result<()> {
        for finished in queue.unrecorded_outcomes(run_id)? {
            let Some(step) = workflow.step(&finished.step_id) else {
                continue;
            };
            if step.for_each.is_some() || step.stage_loop.is_some() {
                continue;
            }
            let Some(output) = finished.outcome.get("output") else {
                continue;
            };
            let worker = finished
                .outcome
                .get("worker")
                .and_then(Value::as_str)
                .unwrap_or("a worker");
            self.store.append_event(
                run_id,
                Some(&step.id),
                "step_adopted",
                &serde_json::json!({
                    "task": finished.id,
                    "attempt": finished.attempt,
                    "worker": worker,
                }),
            )?;
            self.store.apply(
                run_id,
                &[Change::FinishAttempt {
                    step: &step.id,
                    attempt: finished.attempt,
                    status: StepStatus::Completed,
                    outcome: Ok(output),
                }],
            )?;
        }
        Ok(())
    }
}

/// How long until a retry recorded as due at `due` (RFC 3339); zero when
/// it is due already or the time cannot be read.
fn retry_wait(due: Option<&str>) -> Duration {
    due.and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}
