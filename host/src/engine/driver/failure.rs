//! Failure handling: `retry_step` loops back, escalation (block, skip,
//! fail), tolerated failures and skipping the steps that needed a step.

use anyhow::Result;
use serde_json::json;

use super::state::{describe_failure, RunState};
use super::{Driver, RunEvent};
use crate::step::executor::{FailureKind, StepFailure};
use crate::store::{Change, StepStatus};
use crate::workflow::model::{Escalation, Workflow};
use crate::workflow::LoadedWorkflow;

/// Loops back a `retry_step` may make when `max_loops` is not given.
const DEFAULT_MAX_LOOPS: u32 = 3;

/// Where an `on_failure.retry_step` goes back to, and how often at most.
struct LoopBack<'a> {
    target: &'a str,
    max: u32,
}

impl Driver {
    /// Record a step's failed attempt and block the run, saying `why`.
    fn block(
        &self,
        run_id: &str,
        state: &mut RunState,
        (step, attempt): (&str, u32),
        message: &str,
        why: String,
    ) -> Result<()> {
        self.store
            .finish_attempt(run_id, step, attempt, StepStatus::Failed, Err(message))?;
        self.listener.on_event(&RunEvent::StepFailed {
            step: step.to_string(),
            error: message.to_string(),
        });
        state.blocked = Some(why);
        Ok(())
    }

    /// Record a step's failed `attempt` and what follows from its
    /// `on_failure`: go back (`retry_step`), block the run, skip it, or fail
    /// it (tolerated when it is optional); its dependents are skipped.
    pub(super) fn record_failure(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        state: &mut RunState,
        index: usize,
        attempt: u32,
        failure: &StepFailure,
    ) -> Result<()> {
        let def = &workflow.def;
        let step = &def.steps[index];
        let mut message = describe_failure(failure);
        if failure.kind == FailureKind::Interrupted {
            // What the lost attempt did is unknown: an operator decides,
            // as after a crash of the driver (see `restore`).
            let why = format!(
                "step '{}' was {message}; check what it did, then `wfhost resume {run_id}` runs it again (or `wfhost cancel {run_id}`)",
                step.id
            );
            return self.block(run_id, state, (&step.id, attempt), &message, why);
        }
        let on_failure = step.on_failure.clone().unwrap_or_default();
        if let Some(target) = &on_failure.retry_step {
            let max = on_failure.max_loops.unwrap_or(DEFAULT_MAX_LOOPS);
            let back = LoopBack { target, max };
            match self.loop_back(run_id, workflow, state, (index, attempt), back, message)? {
                Some(gave_up) => message = gave_up,
                None => return Ok(()),
            }
        }
        match on_failure.escalate.unwrap_or_default() {
            Escalation::Block => {
                let why = format!(
                    "step '{}' failed and blocks the run (on_failure: block): {message}; fix the cause, then `wfhost resume {run_id}` runs it again",
                    step.id
                );
                return self.block(run_id, state, (&step.id, attempt), &message, why);
            }
            Escalation::Skip => {
                self.listener.on_event(&RunEvent::StepFailed {
                    step: step.id.clone(),
                    error: message.clone(),
                });
                let reason = format!("failed, then skipped (on_failure: skip): {message}");
                return self.skip_dependents(
                    run_id,
                    def,
                    state,
                    index,
                    &[
                        Change::FinishAttempt {
                            step: &step.id,
                            attempt,
                            status: StepStatus::Failed,
                            outcome: Err(&message),
                        },
                        Change::SetStepStatus {
                            step: &step.id,
                            status: StepStatus::Skipped,
                            note: Some(&reason),
                        },
                    ],
                );
            }
            Escalation::Fail => {}
        }
        self.store
            .finish_attempt(run_id, &step.id, attempt, StepStatus::Failed, Err(&message))?;
        self.listener.on_event(&RunEvent::StepFailed {
            step: step.id.clone(),
            error: message,
        });
        if step.optional || step.continue_on_error {
            // Raw outcome: failed; conclusion: tolerated, dependents run.
            self.store.append_event(
                run_id,
                Some(&step.id),
                "step_tolerated",
                &json!({ "conclusion": "tolerated", "reason": "optional step" }),
            )?;
            state.tolerated_any = true;
            state.record_status(index, "failed");
            state.scheduler.complete(index);
            return Ok(());
        }
        state.failed_any = true;
        state.record_status(index, "failed");
        for (skipped, cause) in state.scheduler.fail(index) {
            let reason = format!("needs '{}', which did not complete", def.steps[cause].id);
            self.store
                .skip_step(run_id, &def.steps[skipped].id, &reason)?;
            state.board.skipped(skipped);
            self.listener.on_event(&RunEvent::StepSkipped {
                step: def.steps[skipped].id.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// `on_failure.retry_step`: while loops are left, record the failed
    /// attempt and go back to `target` (returns `None`); after `max`
    /// loops, the failure's message saying so.
    fn loop_back(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        state: &mut RunState,
        (index, attempt): (usize, u32),
        back: LoopBack<'_>,
        message: String,
    ) -> Result<Option<String>> {
        let LoopBack { target, max } = back;
        let step = &workflow.def.steps[index];
        let used = self.store.loops(run_id, &step.id)?;
        if used < max {
            let data = json!({
                "back_to": target,
                "from": step.id,
                "loop": used + 1,
                "max_loops": max,
                "error": message,
            });
            let targets: Vec<usize> = workflow.graph.index_of(target).into_iter().collect();
            self.go_back(
                run_id,
                workflow,
                state,
                &targets,
                &format!("'{}' failed and went back to '{target}'", step.id),
                &[
                    Change::FinishAttempt {
                        step: &step.id,
                        attempt,
                        status: StepStatus::Failed,
                        outcome: Err(&message),
                    },
                    Change::Event {
                        step: &step.id,
                        kind: "step_loop",
                        data: &data,
                    },
                ],
            )?;
            state.set_retry_context(&message, used + 1, &step.id);
            self.listener.on_event(&RunEvent::StepFailed {
                step: step.id.clone(),
                error: format!(
                    "{message} → going back to '{target}' (loop {}/{max})",
                    used + 1
                ),
            });
            return Ok(None);
        }
        Ok(Some(format!(
            "{message} (gave up after {max} loop(s) back to '{target}')"
        )))
    }

    /// Skip a step whose condition is false, and the steps that need it.
    pub(super) fn skip_with_dependents(
        &self,
        run_id: &str,
        def: &Workflow,
        state: &mut RunState,
        index: usize,
        reason: &str,
    ) -> Result<()> {
        let step = &def.steps[index];
        state.board.skipped(index);
        self.listener.on_event(&RunEvent::StepSkipped {
            step: step.id.clone(),
            reason: reason.to_string(),
        });
        self.skip_dependents(
            run_id,
            def,
            state,
            index,
            &[Change::SkipStep {
                step: &step.id,
                reason,
            }],
        )
    }

    /// Mark a step skipped in the scheduler and skip the steps that need
    /// it, in one transaction with `decision` (what skipped the step).
    pub(super) fn skip_dependents(
        &self,
        run_id: &str,
        def: &Workflow,
        state: &mut RunState,
        index: usize,
        decision: &[Change<'_>],
    ) -> Result<()> {
        state.record_status(index, "skipped");
        let skipped: Vec<(usize, String)> = state
            .scheduler
            .skip(index)
            .into_iter()
            .map(|(skipped, cause)| {
                let reason = format!("needs '{}', which was skipped", def.steps[cause].id);
                (skipped, reason)
            })
            .collect();
        let mut changes = decision.to_vec();
        changes.extend(skipped.iter().map(|(skipped, reason)| Change::SkipStep {
            step: &def.steps[*skipped].id,
            reason,
        }));
        self.store.apply(run_id, &changes)?;
        for (skipped, reason) in skipped {
            state.record_status(skipped, "skipped");
            state.board.skipped(skipped);
            self.listener.on_event(&RunEvent::StepSkipped {
                step: def.steps[skipped].id.clone(),
                reason,
            });
        }
        Ok(())
    }
}
