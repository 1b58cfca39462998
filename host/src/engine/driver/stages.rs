//! Stage loops and going back: decide what follows a stage's last step,
//! reset steps to run them again, rebuild the ready queue.

use anyhow::Result;
use serde_json::{json, Value};

use super::state::RunState;
use super::Driver;
use crate::engine::scheduler::Scheduler;
use crate::step::executor::StepFailure;
use crate::store::{Change, StepStatus};
use crate::workflow::template::evaluate_condition;
use crate::workflow::{LoadedWorkflow, Templates};

/// Iterations of a stage loop when `max_iterations` is not given.
const DEFAULT_MAX_ITERATIONS: u32 = 10;

impl Driver {
    /// Decide what follows a completed step of a stage loop and record the
    /// completion together with the decision, in one transaction: the
    /// stage is over, or it goes back (its steps are reset), or it failed
    /// to converge (then the completion is not recorded, the failure is).
    /// Returns whether the completion was recorded.
    pub(super) fn close_stage(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        templates: &Templates,
        state: &mut RunState,
        (index, attempt): (usize, u32),
        completion: Change<'_>,
    ) -> Result<bool> {
        let step = &workflow.def.steps[index];
        let Some(stage) = &step.stage_loop else {
            self.store.apply(run_id, &[completion])?;
            return Ok(true);
        };
        let max = stage
            .max_iterations
            .unwrap_or(DEFAULT_MAX_ITERATIONS)
            .max(1);
        let failure = match evaluate_condition(templates, &stage.until, &state.context) {
            Ok(true) => {
                self.store.apply(run_id, &[completion])?;
                return Ok(true);
            }
            Ok(false) => {
                let used = self.store.loops(run_id, &step.id)?;
                if used + 1 < max {
                    let data = json!({ "until": stage.until, "iteration": used + 2, "max_iterations": max });
                    let mut targets: Vec<usize> = stage
                        .steps
                        .iter()
                        .filter_map(|id| workflow.graph.index_of(id))
                        .collect();
                    targets.push(index);
                    self.go_back(
                        run_id,
                        workflow,
                        state,
                        &targets,
                        &format!("loop of '{}': iteration {}", step.id, used + 2),
                        &[
                            completion,
                            Change::Event {
                                step: &step.id,
                                kind: "step_loop",
                                data: &data,
                            },
                        ],
                    )?;
                    return Ok(true);
                }
                if let Some(fallback) = &stage.fallback {
                    self.fall_back(run_id, workflow, state, index, fallback, completion, max)?;
                    return Ok(true);
                }
                format!(
                    "loop: `until` ({}) still false after {max} iteration(s)",
                    stage.until.trim()
                )
            }
            Err(error) => format!("loop: `until` ({}): {error}", stage.until.trim()),
        };
        // The last iteration completed but the stage did not converge.
        state.scheduler.settle(index);
        state.outputs.remove(&step.id);
        self.record_failure(
            run_id,
            workflow,
            state,
            index,
            attempt,
            &StepFailure::permanent(failure),
        )?;
        Ok(false)
    }

    /// A stage loop ran out of iterations and names where to go instead of
    /// failing (`loop.fallback`): the step completes, the steps that need
    /// it are skipped except the fallback, which runs.
    #[allow(clippy::too_many_arguments)]
    fn fall_back(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        state: &mut RunState,
        index: usize,
        fallback: &str,
        completion: Change<'_>,
        max: u32,
    ) -> Result<()> {
        let step = &workflow.def.steps[index];
        let data = json!({
            "until": step.stage_loop.as_ref().map(|s| s.until.as_str()),
            "iterations": max,
            "fallback": fallback,
        });
        self.store.apply(
            run_id,
            &[
                completion,
                Change::Event {
                    step: &step.id,
                    kind: "loop_fallback",
                    data: &data,
                },
            ],
        )?;
        let target = workflow.graph.index_of(fallback);
        let reason = format!(
            "the loop of '{}' ran out of iterations ({max}) and went on to '{fallback}'",
            step.id
        );
        let others: Vec<usize> = workflow
            .graph
            .dependents(index)
            .iter()
            .copied()
            .filter(|&d| Some(d) != target && !workflow.def.steps[d].finally)
            .collect();
        for dependent in others {
            self.skip_with_dependents(run_id, &workflow.def, state, dependent, &reason)?;
        }
        Ok(())
    }

    /// Run `targets` and everything downstream of them again (steps still
    /// running elsewhere are left alone), then rebuild the ready queue.
    /// `decision` (what made the run go back) is written in the same
    /// transaction as the resets.
    pub(super) fn go_back(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        state: &mut RunState,
        targets: &[usize],
        reason: &str,
        decision: &[Change<'_>],
    ) -> Result<()> {
        let mut reset: std::collections::BTreeSet<usize> = targets.iter().copied().collect();
        for &target in targets {
            reset.extend(workflow.graph.descendants(target));
        }
        reset.retain(|index| !state.running.contains(index) && !workflow.def.steps[*index].finally);
        let mut changes = decision.to_vec();
        changes.extend(reset.iter().map(|&index| Change::ResetStep {
            step: &workflow.def.steps[index].id,
            reason,
        }));
        self.store.apply(run_id, &changes)?;
        for index in reset {
            state.board.reset(index);
        }
        self.rebuild(run_id, workflow, state)
    }

    /// Rebuild the scheduler and template context from the store, keeping
    /// steps that are live in this process (running, or waiting to retry).
    fn rebuild(&self, run_id: &str, workflow: &LoadedWorkflow, state: &mut RunState) -> Result<()> {
        let def = &workflow.def;
        let records = self.store.steps(run_id)?;
        state.scheduler = Scheduler::new(
            def.steps
                .iter()
                .map(|s| (s.id.as_str(), s.needs.as_slice())),
        );
        state.context["steps"] = json!({});
        state.outputs.clear();
        for (index, step) in def.steps.iter().enumerate() {
            if step.finally {
                state.scheduler.hold(index);
            }
        }
        let records = super::state::records_by_id(&records);
        for index in workflow.graph.topo_order() {
            let step = &def.steps[index];
            let Some(record) = records.get(step.id.as_str()) else {
                continue;
            };
            let tolerated = step.optional || step.continue_on_error;
            if state.running.contains(&index) || state.waiting.contains(&index) {
                state.scheduler.settle(index);
                continue;
            }
            match record.status {
                StepStatus::Completed => {
                    state.scheduler.settle(index);
                    state.complete(index, record.output.clone().unwrap_or(Value::Null));
                }
                StepStatus::Failed if tolerated => {
                    state.scheduler.settle(index);
                    state.record_status(index, "failed");
                    state.scheduler.complete(index);
                }
                StepStatus::Failed | StepStatus::Cancelled => {
                    state.scheduler.settle(index);
                    state.record_status(index, record.status.as_str());
                    state.scheduler.fail(index);
                }
                StepStatus::Skipped => {
                    state.scheduler.settle(index);
                    state.record_status(index, "skipped");
                    state.scheduler.skip(index);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
