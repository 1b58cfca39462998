//! Drives one run: records it, starts steps from the ready queue up to the
//! parallelism limit, renders their templates, persists every transition
//! before acting on it, and decides the run's final status.
//!
//! Split by job: `run_loop` is the loop of one drive (dispatch, `for_each`
//! items, joined steps, the control tick, finishing); `setup` resolves what
//! a run needs first; `restore` brings a resumed run in line with the
//! store; `failure` handles failed steps (`retry_step`, escalation);
//! `control` cancels; `stages` closes stage loops and goes back;
//! `invocation` prepares what a step is given; `step_log` writes a
//! step's log lines; `state` and `lease` are the run's
//! memory and its lease.

mod control;
mod failure;
mod invocation;
pub(crate) use invocation::working_directory;
pub(super) mod lease;
mod restore;
mod run_loop;
mod scratch;
mod setup;
mod stages;
mod state;
mod step_log;
pub(crate) use step_log::StepLog;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::agents::AgentSessions;
use super::ceiling::Ceiling;
use crate::step::executor::{LogLevel, StepExecutor};
use crate::store::{EngineStore, NewRun, RunStatus};
use crate::workflow::LoadedWorkflow;

/// Steps running at once when the workflow does not say.
pub const DEFAULT_PARALLELISM: usize = 4;
/// Per-attempt timeout when neither the step nor `config.timeout` says.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Something that happened in a run, for live display.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run is about to start its first step.
    Started {
        /// Run id.
        run_id: String,
        /// Number of steps.
        steps: usize,
    },
    /// An attempt started.
    StepStarted {
        /// Step id.
        step: String,
        /// Attempt number.
        attempt: u32,
    },
    /// A step completed.
    StepCompleted {
        /// Step id.
        step: String,
        /// How long the attempt took.
        elapsed: Duration,
    },
    /// A step failed.
    StepFailed {
        /// Step id.
        step: String,
        /// Why.
        error: String,
    },
    /// An attempt failed and another is scheduled.
    StepRetrying {
        /// Step id.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
        /// Wait before the next attempt.
        delay: Duration,
        /// Why the attempt failed.
        error: String,
    },
    /// A pause was requested: running steps finish, no new step starts.
    Pausing,
    /// A cancel was requested: running steps are stopped; cleanup steps run.
    Cancelling,
    /// A step was skipped.
    StepSkipped {
        /// Step id.
        step: String,
        /// Why.
        reason: String,
    },
    /// A step logged a line.
    Log {
        /// Step id.
        step: String,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// The run ended.
    Finished {
        /// Final status.
        status: RunStatus,
    },
}

/// Receives [`RunEvent`]s as they happen (the CLI prints them).
pub trait RunListener: Send + Sync {
    /// Called for every event, from the driving task.
    fn on_event(&self, event: &RunEvent);
}

/// A listener that ignores everything.
pub struct Silent;

impl RunListener for Silent {
    fn on_event(&self, _: &RunEvent) {}
}

/// How a run ended (or stopped: paused, blocked).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run id.
    pub run_id: String,
    /// Status the run was left in.
    pub status: RunStatus,
    /// Why it failed or blocked, when it did.
    pub message: Option<String>,
}

/// Runs workflows against a store and an executor.
pub struct Driver {
    store: Arc<dyn EngineStore>,
    executor: Arc<dyn StepExecutor>,
    listener: Arc<dyn RunListener>,
    ceiling: Option<Ceiling>,
    agents: Option<Arc<dyn AgentSessions>>,
    placement: Option<super::placement::Placement>,
}

impl Driver {
    /// A driver recording into `store`, executing with `executor`.
    pub fn new(
        store: Arc<dyn EngineStore>,
        executor: Arc<dyn StepExecutor>,
        listener: Arc<dyn RunListener>,
    ) -> Driver {
        Driver {
            store,
            executor,
            listener,
            ceiling: None,
            agents: None,
            placement: None,
        }
    }

    /// Queue the attempts of steps that may run anywhere for workers
    /// (see [`super::placement`]) instead of running them here.
    pub fn with_placement(mut self, placement: Option<super::placement::Placement>) -> Driver {
        self.placement = placement;
        self
    }

    /// The executor of `step`'s attempts: a worker's, when this driver
    /// places steps and the step may run elsewhere; else this process's.
    fn executor_for(&self, step: &crate::workflow::model::Step) -> Arc<dyn StepExecutor> {
        match &self.placement {
            Some(placement) if super::placement::placeable(step) => placement.executor_for(step),
            _ => self.executor.clone(),
        }
    }

    /// Open agent steps' sessions through `agents` (without it, agent steps
    /// fail: this driver serves no agents).
    pub fn with_agents(mut self, agents: Arc<dyn AgentSessions>) -> Driver {
        self.agents = Some(agents);
        self
    }

    /// Check every step's grants against the operator's ceiling.
    pub fn with_ceiling(mut self, ceiling: Option<Ceiling>) -> Driver {
        self.ceiling = ceiling;
        self
    }

    /// Record a new run of `workflow` with resolved `args`; returns its id.
    pub fn create_run(&self, workflow: &LoadedWorkflow, args: &Value) -> Result<String> {
        self.create_run_with(workflow, args, None, 0)
    }

    /// [`Driver::create_run`], recording who started it and its priority.
    pub fn create_run_with(
        &self,
        workflow: &LoadedWorkflow,
        args: &Value,
        triggered_by: Option<&str>,
        priority: i64,
    ) -> Result<String> {
        let run_id = crate::store::new_run_id();
        let steps: Vec<&str> = workflow.def.steps.iter().map(|s| s.id.as_str()).collect();
        self.store.create_run(&NewRun {
            id: &run_id,
            workflow_name: &workflow.def.name,
            workflow_path: &workflow.file_name,
            workflow_dir: &workflow.dir.to_string_lossy(),
            definition: &workflow.source,
            args,
            steps: &steps,
            triggered_by,
            priority,
        })?;
        Ok(run_id)
    }

    /// Drive a recorded run (new or resumed) until it ends, pauses or
    /// blocks.
    pub async fn drive(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        args: &Value,
    ) -> Result<RunOutcome> {
        self.drive_with(run_id, workflow, args, &ResumeOptions::default())
            .await
    }

    /// [`Driver::drive`] with operator decisions for interrupted steps.
    pub async fn drive_with(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        args: &Value,
        options: &ResumeOptions,
    ) -> Result<RunOutcome> {
        if !self.store.claim_run(run_id, std::process::id())? {
            let run = self.store.run(run_id)?;
            anyhow::bail!(
                "run {run_id} is being driven by process {} (use `wfhost pause` or `wfhost cancel`)",
                run.driver_pid.unwrap_or_default()
            );
        }
        // The lease is renewed from its own task, so that long work of this
        // one (compiling plugins) does not let it lapse.
        let lease = lease::Heartbeat::start(self.store.clone(), run_id);
        if let Some(queue) = self.store.step_queue() {
            self.take_over_attempts(run_id, workflow, queue)?;
        }
        let def = &workflow.def;
        let setup = match self.prepare(run_id, workflow) {
            Ok(setup) => setup,
            Err(message) => {
                self.store
                    .set_run_status(run_id, RunStatus::Failed, Some(&message))?;
                anyhow::bail!(message);
            }
        };
        let limits: Vec<(&str, u32)> = def
            .steps
            .iter()
            .zip(&setup.policies)
            .map(|(step, policy)| (step.id.as_str(), policy.max_attempts))
            .collect();
        self.store.set_max_attempts(run_id, &limits)?;

        let mut state = state::RunState::new(run_id, def, &workflow.dir, args, &*self.store);
        for (index, step) in def.steps.iter().enumerate() {
            if step.finally {
                state.scheduler.hold(index);
            }
        }
        let restored = self.restore(run_id, workflow, &setup.policies, options, &mut state)?;
        if let Some(blocked) = restored {
            self.store
                .set_run_status(run_id, RunStatus::Blocked, Some(&blocked))?;
            self.listener.on_event(&RunEvent::Finished {
                status: RunStatus::Blocked,
            });
            return Ok(RunOutcome {
                run_id: run_id.to_string(),
                status: RunStatus::Blocked,
                message: Some(blocked),
            });
        }
        self.listener.on_event(&RunEvent::Started {
            run_id: run_id.to_string(),
            steps: def.steps.len(),
        });
        run_loop::RunLoop::new(self, run_id, workflow, args, &setup, state, lease)
            .run()
            .await
    }
}

/// Operator decisions for steps a crash interrupted (`wfhost resume`).
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Run these interrupted steps again.
    pub rerun: Vec<String>,
    /// Skip these interrupted steps (their dependents are skipped too).
    pub skip: Vec<String>,
}

/// How often the driver beats its heartbeat and reads control requests.
const CONTROL_TICK: Duration = Duration::from_millis(250);
