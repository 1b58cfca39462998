//! Drives one run: records it, starts steps from the ready queue up to the
//! parallelism limit, renders their templates, persists every transition
//! before acting on it, and decides the run's final status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use super::agents::AgentSessions;
use super::ceiling::Ceiling;
use super::grants;
use super::progress::ProgressBoard;
use super::retry::RetryPolicy;
use super::scheduler::Scheduler;
use crate::step::executor::{
    FailureKind, LogLevel, ResolvedGrants, StepExecutor, StepFailure, StepInvocation, StepObserver,
};
use crate::step::stop::StopTrigger;
use crate::store::{Change, NewRun, RunStatus, StepStatus, Store};
use crate::workflow::model::{Escalation, SessionMode, StageLoop, Step, Workflow};
use crate::workflow::template::evaluate_condition;
use crate::workflow::{parse_duration, step_kind, LoadedWorkflow, StepKind, Templates};

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
    store: Arc<Store>,
    executor: Arc<dyn StepExecutor>,
    listener: Arc<dyn RunListener>,
    ceiling: Option<Ceiling>,
    agents: Option<Arc<dyn AgentSessions>>,
}

impl Driver {
    /// A driver recording into `store`, executing with `executor`.
    pub fn new(
        store: Arc<Store>,
        executor: Arc<dyn StepExecutor>,
        listener: Arc<dyn RunListener>,
    ) -> Driver {
        Driver {
            store,
            executor,
            listener,
            ceiling: None,
            agents: None,
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
        let lease = Heartbeat::start(self.store.clone(), run_id);
        let def = &workflow.def;
        let setup = self.prepare(run_id, workflow);
        let (all_grants, policies, components) = match setup {
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
            .zip(&policies)
            .map(|(step, policy)| (step.id.as_str(), policy.max_attempts))
            .collect();
        self.store.set_max_attempts(run_id, &limits)?;

        let mut state = RunState::new(run_id, def, args, &self.store);
        for (index, step) in def.steps.iter().enumerate() {
            if step.finally {
                state.scheduler.hold(index);
            }
        }
        if let Some(blocked) = self.restore(run_id, workflow, &policies, options, &mut state)? {
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

        let parallelism = def.config.parallelism.unwrap_or(DEFAULT_PARALLELISM).max(1);
        let templates = Templates::new();
        let mut running: JoinSet<(usize, u32, Duration, Result<Value, StepFailure>)> =
            JoinSet::new();
        let mut timers: JoinSet<usize> = JoinSet::new();
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
        // How long a cancel waits for running steps to stop their programs.
        let stop_budget = all_grants
            .iter()
            .map(|grants| grants.kill_grace)
            .max()
            .unwrap_or_default()
            + crate::step::stop::STOP_MARGIN;
        let mut tick = tokio::time::interval(CONTROL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paused = false;

        loop {
            while !paused && state.blocked.is_none() && running.len() < parallelism {
                let Some(index) = state.scheduler.next_ready() else {
                    break;
                };
                let step = &def.steps[index];
                if let Some(condition) = &step.condition {
                    match evaluate_condition(&templates, condition, &state.context) {
                        Ok(true) => {}
                        Ok(false) => {
                            let reason = format!("condition is false: {}", condition.trim());
                            self.skip_with_dependents(run_id, def, &mut state, index, &reason)?;
                            continue;
                        }
                        Err(error) => {
                            let failure = StepFailure::permanent(format!(
                                "condition `{}`: {error}",
                                condition.trim()
                            ));
                            let attempt = state.attempts[index] + 1;
                            state.attempts[index] = attempt;
                            self.store.start_attempt(
                                run_id,
                                &step.id,
                                attempt,
                                &json!({ "if": condition }),
                            )?;
                            self.record_failure(
                                run_id, workflow, &mut state, index, attempt, &failure,
                            )?;
                            continue;
                        }
                    }
                }
                let total = step
                    .total_timeout
                    .as_deref()
                    .and_then(|t| parse_duration(t).ok());
                let first = *state.first_started[index].get_or_insert_with(Instant::now);
                let remaining = total.map(|t| t.saturating_sub(first.elapsed()));
                if let (Some(total), Some(Duration::ZERO)) = (total, remaining) {
                    let failure = StepFailure {
                        kind: FailureKind::Timeout,
                        message: format!(
                            "total_timeout of {} reached after {} attempt(s)",
                            crate::step::units::humanize(total),
                            state.attempts[index]
                        ),
                    };
                    let attempt = state.attempts[index];
                    self.record_failure(run_id, workflow, &mut state, index, attempt, &failure)?;
                    continue;
                }
                if let Some(expression) = &step.for_each {
                    let started = self.start_for_each(
                        run_id,
                        workflow,
                        index,
                        expression,
                        &components[index],
                        args,
                        &templates,
                        &all_grants[index],
                        &policies[index],
                        remaining,
                        &mut state,
                    );
                    match started {
                        Ok(future) => {
                            state.running.insert(index);
                            let task = running.spawn(async move {
                                let started = Instant::now();
                                let (attempt, result) = future.await;
                                (index, attempt, started.elapsed(), result)
                            });
                            state
                                .tasks
                                .insert(task.id(), (index, state.attempts[index]));
                        }
                        Err(failure) => {
                            let attempt = state.attempts[index];
                            self.record_failure(
                                run_id, workflow, &mut state, index, attempt, &failure,
                            )?;
                        }
                    }
                    continue;
                }
                let attempt = state.attempts[index] + 1;
                state.attempts[index] = attempt;
                let prepared = prepare_invocation(
                    workflow,
                    step,
                    &components[index],
                    run_id,
                    attempt,
                    args,
                    &state.outputs,
                    &state.context,
                    &templates,
                    all_grants[index].clone(),
                    self.store.run_files(run_id).step_dir(&step.id),
                )
                .and_then(|invocation| self.attach_agent(workflow, step, invocation));
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
                self.store
                    .start_attempt(run_id, &step.id, attempt, &input)?;
                state.board.started(index);
                self.listener.on_event(&RunEvent::StepStarted {
                    step: step.id.clone(),
                    attempt,
                });
                match prepared {
                    Ok(mut invocation) => {
                        invocation.cancel = state.stop.signal();
                        if let Some(remaining) = remaining {
                            invocation.timeout = invocation.timeout.min(remaining);
                        }
                        let observer = Arc::new(StepLog {
                            store: self.store.clone(),
                            listener: self.listener.clone(),
                            run_id: run_id.to_string(),
                            step_id: step.id.clone(),
                            budget: AtomicU64::new(invocation.grants.max_output),
                        });
                        let future = self.executor.execute(invocation, observer);
                        state.running.insert(index);
                        let task = running.spawn(async move {
                            let started = Instant::now();
                            let result = future.await;
                            (index, attempt, started.elapsed(), result)
                        });
                        state.tasks.insert(task.id(), (index, attempt));
                    }
                    Err(failure) => {
                        self.record_failure(
                            run_id, workflow, &mut state, index, attempt, &failure,
                        )?;
                    }
                }
            }
            let stopping = paused || state.blocked.is_some();
            if running.is_empty() && (stopping || timers.is_empty()) {
                // Everything else is over: the cleanup steps' turn.
                if !stopping && state.scheduler.release_held() {
                    continue;
                }
                break;
            }
            tokio::select! {
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let (index, attempt, elapsed, result) = match joined {
                        Ok((task, done)) => {
                            state.tasks.remove(&task);
                            done
                        }
                        Err(error) => {
                            // A step whose task panicked fails with the
                            // reason; the run goes on.
                            let (index, attempt) = state.tasks.remove(&error.id())
                                .context("a step task failed and its step is unknown")?;
                            let reason = if error.is_panic() {
                                format!("the step's task panicked: {}", super::fan_out::panic_text(error))
                            } else {
                                "the step's task was stopped".to_string()
                            };
                            (index, attempt, Duration::ZERO, Err(StepFailure::permanent(reason)))
                        }
                    };
                    state.running.remove(&index);
                    if let Some(counter) = state.item_attempts.remove(&index) {
                        let used = counter.load(std::sync::atomic::Ordering::SeqCst);
                        state.attempts[index] = state.attempts[index].max(used);
                    }
                    let step = &def.steps[index];
                    match result {
                        Ok(output) => {
                            let completion = if step.for_each.is_some() {
                                Change::CompleteStep { step: &step.id, output: &output }
                            } else {
                                Change::FinishAttempt { step: &step.id, attempt, status: StepStatus::Completed, outcome: Ok(&output) }
                            };
                            let completed = match &step.stage_loop {
                                Some(stage) => {
                                    state.complete(index, output.clone());
                                    self.close_stage(run_id, workflow, &templates, &mut state, index, attempt, stage, completion)?
                                }
                                None => {
                                    self.store.apply(run_id, &[completion])?;
                                    state.complete(index, output.clone());
                                    true
                                }
                            };
                            if completed {
                                write_summary(&self.store, run_id, step, "completed", elapsed, None, Some(&output));
                                state.board.finished(index, "completed", elapsed);
                                self.listener.on_event(&RunEvent::StepCompleted { step: step.id.clone(), elapsed });
                            }
                        }
                        Err(failure) if step.for_each.is_none()
                            && policies[index].should_retry(&failure.kind, attempt)
                            && within_total(step, &state, index, policies[index].delay(attempt, 0.0)) => {
                            let delay = policies[index].delay(attempt, rand::random::<f64>());
                            let due = chrono::Utc::now()
                                + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::zero());
                            let due = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                            let message = describe_failure(&failure);
                            self.store.schedule_retry(run_id, &step.id, attempt, &message, &due)?;
                            state.board.retrying(index);
                            self.listener.on_event(&RunEvent::StepRetrying {
                                step: step.id.clone(),
                                attempt,
                                max_attempts: policies[index].max_attempts,
                                delay,
                                error: message,
                            });
                            state.waiting.insert(index);
                            timers.spawn(async move {
                                tokio::time::sleep(delay).await;
                                index
                            });
                        }
                        Err(failure) => {
                            write_summary(&self.store, run_id, step, "failed", elapsed, Some(&failure.message), None);
                            state.board.finished(index, "failed", elapsed);
                            self.record_failure(run_id, workflow, &mut state, index, attempt, &failure)?;
                        }
                    }
                    state.board.flush(false);
                }
                Some(due) = timers.join_next(), if !timers.is_empty() && !paused => {
                    if let Ok(index) = due {
                        state.waiting.remove(&index);
                        state.scheduler.requeue(index);
                    }
                }
                _ = tick.tick() => {
                    lease.check()?;
                    if let Some((limit, deadline)) = run_deadline.filter(|_| !state.cancelled) {
                        if Instant::now() >= deadline {
                            self.store.append_event(
                                run_id,
                                None,
                                "run_timeout",
                                &json!({ "run_timeout": crate::step::units::humanize(limit) }),
                            )?;
                            stop_running(&mut running, &mut state.stop, stop_budget).await;
                            timers.abort_all();
                            state.cancel_reason = format!("run_timeout of {} reached", crate::step::units::humanize(limit));
                            self.cancel(run_id, def, &mut state)?;
                            paused = false;
                            continue;
                        }
                    }
                    match self.store.request(run_id)?.as_deref() {
                        Some("pause") if !paused => {
                            paused = true;
                            self.listener.on_event(&RunEvent::Pausing);
                        }
                        Some("cancel") if !state.cancelled => {
                            stop_running(&mut running, &mut state.stop, stop_budget).await;
                            timers.abort_all();
                            self.cancel(run_id, def, &mut state)?;
                            paused = false;
                        }
                        _ => {}
                    }
                }
            }
        }

        if let Some(message) = state.blocked.clone() {
            self.store
                .set_run_status(run_id, RunStatus::Blocked, Some(&message))?;
            state.board.set_status(RunStatus::Blocked);
            state.board.flush(true);
            self.listener.on_event(&RunEvent::Finished {
                status: RunStatus::Blocked,
            });
            return Ok(RunOutcome {
                run_id: run_id.to_string(),
                status: RunStatus::Blocked,
                message: Some(message),
            });
        }
        if paused {
            self.store.set_request(run_id, None)?;
            self.store.set_run_status(run_id, RunStatus::Paused, None)?;
            state.board.set_status(RunStatus::Paused);
            state.board.flush(true);
            self.listener.on_event(&RunEvent::Finished {
                status: RunStatus::Paused,
            });
            return Ok(RunOutcome {
                run_id: run_id.to_string(),
                status: RunStatus::Paused,
                message: None,
            });
        }
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
        self.store
            .set_run_status(run_id, status, error.as_deref())?;
        state.board.set_status(status);
        state.board.flush(true);
        self.listener.on_event(&RunEvent::Finished { status });
        Ok(RunOutcome {
            run_id: run_id.to_string(),
            status,
            message: error,
        })
    }

    /// Resolve grants and retry policies and load every component; any
    /// problem is one message.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
    ) -> std::result::Result<(Vec<ResolvedGrants>, Vec<RetryPolicy>, Vec<String>), String> {
        let host = grants::HostState::new(self.store.home(), self.executor.cache_dir().as_deref());
        let all_grants = grants::resolve_all(workflow, self.ceiling.as_ref(), &host)
            .map_err(|d| format!("grants: {d}"))?;
        self.pin_grant_paths(run_id, workflow, &all_grants)?;
        let policies = super::retry::resolve_all(workflow).map_err(|d| format!("retry: {d}"))?;
        let components: Vec<String> = workflow
            .def
            .steps
            .iter()
            .map(|step| component_of(workflow, step))
            .collect();
        let mut unique = components.clone();
        unique.sort();
        unique.dedup();
        self.executor
            .prepare(&unique)
            .map_err(|error| format!("cannot load plugins: {error}"))?;
        Ok((all_grants, policies, components))
    }

    /// Bring the in-memory state in line with the store (a resumed run).
    /// Returns a message when an interrupted step needs an operator decision.
    fn restore(
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
        let mut needs_decision = Vec::new();
        for index in workflow.graph.topo_order() {
            let step = &def.steps[index];
            let Some(record) = records.iter().find(|r| r.id == step.id) else {
                continue;
            };
            state.attempts[index] = record.attempts;
            match record.status {
                StepStatus::Completed => {
                    state.scheduler.settle(index);
                    state.complete(index, record.output.clone().unwrap_or(Value::Null));
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
                StepStatus::Running | StepStatus::Interrupted => {
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
                    } else if options.rerun.contains(&step.id)
                        || step.idempotent
                        || policies[index].max_attempts > record.attempts
                    {
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
                        needs_decision.push(step.id.clone());
                    }
                }
                StepStatus::Retrying => {
                    let wait = record
                        .next_attempt_at
                        .as_deref()
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                        .and_then(|at| {
                            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                                .to_std()
                                .ok()
                        })
                        .unwrap_or_default();
                    if !wait.is_zero() {
                        state.scheduler.settle(index);
                        state.scheduler.mark_waiting_retry(index);
                        state.due_later.push((index, wait));
                    }
                }
                StepStatus::Pending => {}
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

    /// Cancel what has not finished (running steps were aborted by the
    /// caller, which kills their programs); `finally` steps still run.
    fn cancel(&self, run_id: &str, def: &Workflow, state: &mut RunState) -> Result<()> {
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
            state.board.finished(index, "cancelled", Duration::ZERO);
        }
        Ok(())
    }

    /// Skip a step whose condition is false, and the steps that need it.
    fn skip_with_dependents(
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
    fn skip_dependents(
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

    /// For an agent step: the earlier conversation (`session: reuse`) and
    /// the session serving its `model` and `tools` imports.
    fn attach_agent(
        &self,
        workflow: &LoadedWorkflow,
        step: &Step,
        mut invocation: StepInvocation,
    ) -> std::result::Result<StepInvocation, StepFailure> {
        if step_kind(step) != StepKind::Agent {
            return Ok(invocation);
        }
        let name = step.agent.as_deref().unwrap_or_default();
        let agent = workflow
            .def
            .agents
            .iter()
            .find(|a| a.id == name)
            .ok_or_else(|| StepFailure::permanent(format!("unknown agent '{name}'")))?;
        let agents = self.agents.as_ref().ok_or_else(|| {
            StepFailure::permanent(format!(
                "agent '{name}': this host was not set up to serve agent steps"
            ))
        })?;
        if step.session == Some(SessionMode::Reuse) {
            let history = agents.history(&self.store, &invocation.run_id, name);
            invocation.config["history"] = Value::Array(history);
        }
        let session = agents
            .open(super::agents::SessionContext {
                run_id: invocation.run_id.clone(),
                step_id: invocation.step_id.clone(),
                attempt: invocation.attempt,
                // `run:step:iteration:attempt`.
                iteration: invocation
                    .idempotency_key
                    .rsplit(':')
                    .nth(1)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0),
                agent: agent.clone(),
                grants: invocation.grants.clone(),
                workdir: invocation.workdir.clone(),
                store: self.store.clone(),
            })
            .map_err(|e| StepFailure::permanent(format!("agent '{name}': {e}")))?;
        invocation.agent = Some(session);
        Ok(invocation)
    }

    /// Render a `for_each` step's list and start its items; returns the
    /// future that runs them all.
    #[allow(clippy::too_many_arguments)]
    fn start_for_each(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        index: usize,
        expression: &str,
        component: &str,
        args: &Value,
        templates: &Templates,
        grants: &ResolvedGrants,
        retry: &RetryPolicy,
        remaining: Option<Duration>,
        state: &mut RunState,
    ) -> std::result::Result<ItemsFuture, StepFailure> {
        let step = &workflow.def.steps[index];
        let inner = expression.trim();
        let inner = inner
            .strip_prefix("{{")
            .and_then(|rest| rest.strip_suffix("}}"))
            .unwrap_or(inner)
            .trim();
        let list = templates
            .render_value(&Value::String(format!("{{{{ {inner} }}}}")), &state.context)
            .map_err(|e| StepFailure::permanent(format!("for_each `{inner}`: {e}")))?;
        let Value::Array(list) = list else {
            return Err(StepFailure::permanent(format!(
                "for_each `{inner}` must give a list, not {list}"
            )));
        };
        let mut invocations = Vec::new();
        let mut inputs = Vec::new();
        for (position, item) in list.into_iter().enumerate() {
            let mut context = state.context.clone();
            context["item"] = item.clone();
            context["index"] = json!(position);
            let attempt = state.attempts[index] + 1;
            state.attempts[index] = attempt;
            let mut invocation = prepare_invocation(
                workflow,
                step,
                component,
                run_id,
                attempt,
                args,
                &state.outputs,
                &context,
                templates,
                grants.clone(),
                self.store.run_files(run_id).step_dir(&step.id),
            )
            .map_err(|f| StepFailure::permanent(format!("item {position}: {}", f.message)))?;
            invocation.idempotency_key =
                crate::step::executor::idempotency_key(run_id, &step.id, position, attempt);
            invocation.cancel = state.stop.signal();
            if let Some(remaining) = remaining {
                invocation.timeout = invocation.timeout.min(remaining);
            }
            inputs.push(json!({
                "item": item,
                "index": position,
                "config": invocation.config,
                "attempt": attempt,
                "idempotency_key": invocation.idempotency_key,
            }));
            invocations.push(invocation);
        }
        state.board.started(index);
        self.listener.on_event(&RunEvent::StepStarted {
            step: step.id.clone(),
            attempt: state.attempts[index],
        });
        if invocations.is_empty() {
            return Ok(Box::pin(async { (0, Ok(Value::Array(Vec::new()))) }));
        }
        let observer = Arc::new(StepLog {
            store: self.store.clone(),
            listener: self.listener.clone(),
            run_id: run_id.to_string(),
            step_id: step.id.clone(),
            budget: AtomicU64::new(grants.max_output),
        });
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(state.attempts[index]));
        state.item_attempts.insert(index, attempts.clone());
        let items = super::fan_out::Items {
            invocations,
            inputs,
            parallelism: step.parallelism.unwrap_or(DEFAULT_PARALLELISM),
            fail_fast: step.fail_fast.unwrap_or(true),
            retry: retry.clone(),
            attempts,
        };
        Ok(Box::pin(super::fan_out::run_items(
            self.store.clone(),
            self.executor.clone(),
            observer,
            items,
        )))
    }

    /// Decide what follows a completed step of a stage loop and record the
    /// completion together with the decision, in one transaction: the
    /// stage is over, or it goes back (its steps are reset), or it failed
    /// to converge (then the completion is not recorded, the failure is).
    /// Returns whether the completion was recorded.
    #[allow(clippy::too_many_arguments)]
    fn close_stage(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        templates: &Templates,
        state: &mut RunState,
        index: usize,
        attempt: u32,
        stage: &StageLoop,
        completion: Change<'_>,
    ) -> Result<bool> {
        let step = &workflow.def.steps[index];
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

    /// Check that every `files` grant resolves to the directory it resolved
    /// to when the run first started (a directory swapped for a symlink
    /// while the run was stopped must not widen a grant on resume), and
    /// record the grants seen for the first time.
    fn pin_grant_paths(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        all_grants: &[ResolvedGrants],
    ) -> std::result::Result<(), String> {
        let store_error = |e: crate::store::StoreError| format!("store: {e}");
        let mut pinned = match self
            .store
            .latest_event(run_id, "grants_pinned")
            .map_err(store_error)?
        {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut added = false;
        for (step, resolved) in workflow.def.steps.iter().zip(all_grants) {
            let written = grants::merged(workflow, step).files;
            for (file, (path, _)) in written.iter().zip(&resolved.files) {
                let key = format!("{}:{}", step.id, file.path);
                let now = path.display().to_string();
                match pinned.get(&key).and_then(Value::as_str) {
                    Some(before) if before != now => {
                        return Err(format!(
                            "step '{}': files grant '{}' now leads to '{now}', not to '{before}' as when the run started (was the directory replaced by a link?); restore it, or start a new run",
                            step.id, file.path
                        ));
                    }
                    Some(_) => {}
                    None => {
                        pinned.insert(key, Value::String(now));
                        added = true;
                    }
                }
            }
        }
        if added {
            self.store
                .append_event(run_id, None, "grants_pinned", &Value::Object(pinned))
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Run `targets` and everything downstream of them again (steps still
    /// running elsewhere are left alone), then rebuild the ready queue.
    /// `decision` (what made the run go back) is written in the same
    /// transaction as the resets.
    fn go_back(
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
        for index in workflow.graph.topo_order() {
            let step = &def.steps[index];
            let Some(record) = records.iter().find(|r| r.id == step.id) else {
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

    fn record_failure(
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
        let on_failure = step.on_failure.clone().unwrap_or_default();
        if let Some(target) = &on_failure.retry_step {
            let max = on_failure.max_loops.unwrap_or(DEFAULT_MAX_LOOPS);
            let used = self.store.loops(run_id, &step.id)?;
            if used < max {
                let data = json!({ "back_to": target, "loop": used + 1, "max_loops": max, "error": message });
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
                self.listener.on_event(&RunEvent::StepFailed {
                    step: step.id.clone(),
                    error: format!(
                        "{message} → going back to '{target}' (loop {}/{max})",
                        used + 1
                    ),
                });
                return Ok(());
            }
            message = format!("{message} (gave up after {max} loop(s) back to '{target}')");
        }
        match on_failure.escalate.unwrap_or_default() {
            Escalation::Block => {
                self.store.finish_attempt(
                    run_id,
                    &step.id,
                    attempt,
                    StepStatus::Failed,
                    Err(&message),
                )?;
                self.listener.on_event(&RunEvent::StepFailed {
                    step: step.id.clone(),
                    error: message.clone(),
                });
                state.blocked = Some(format!(
                    "step '{}' failed and blocks the run (on_failure: block): {message}; fix the cause, then `wfhost resume {run_id}` runs it again",
                    step.id
                ));
                return Ok(());
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
}

/// Renews a run's lease every [`CONTROL_TICK`] until dropped, and
/// remembers when it was lost to another process.
struct Heartbeat {
    lost: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(store: Arc<Store>, run_id: &str) -> Heartbeat {
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, run_id) = (lost.clone(), run_id.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONTROL_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.heartbeat(&run_id) {
                    Ok(()) => {}
                    Err(crate::store::StoreError::LeaseLost) => {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(error) => tracing::warn!("run {run_id}: heartbeat failed: {error}"),
                }
            }
        });
        Heartbeat { lost, task }
    }

    /// An error once another process has taken the run over.
    fn check(&self) -> std::result::Result<(), crate::store::StoreError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError::LeaseLost);
        }
        Ok(())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
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

/// The future running a `for_each` step's items: the attempt to report
/// and the list of outputs (or the first failure).
type ItemsFuture = crate::step::executor::BoxFuture<(u32, Result<Value, StepFailure>)>;

/// Loops back a `retry_step` may make when `max_loops` is not given.
const DEFAULT_MAX_LOOPS: u32 = 3;
/// Iterations of a stage loop when `max_iterations` is not given.
const DEFAULT_MAX_ITERATIONS: u32 = 10;

/// Whether a retry after `delay` still fits the step's `total_timeout`.
fn within_total(step: &Step, state: &RunState, index: usize, delay: Duration) -> bool {
    let Some(total) = step
        .total_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
    else {
        return true;
    };
    state.first_started[index].is_none_or(|first| first.elapsed() + delay < total)
}

/// How often the driver beats its heartbeat and reads control requests.
const CONTROL_TICK: Duration = Duration::from_millis(250);

/// Stop every running step: ask them (their programs get SIGTERM, then
/// SIGKILL after their `kill_grace`), wait up to `budget` for them to end,
/// then abort what is left. Their results are dropped: the run is being
/// cancelled. `stop` is renewed, so the cleanup steps that run next are not
/// stopped at once.
async fn stop_running<T: 'static>(
    running: &mut JoinSet<T>,
    stop: &mut StopTrigger,
    budget: Duration,
) {
    stop.fire();
    let _ = tokio::time::timeout(budget, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    while running.join_next().await.is_some() {}
    *stop = StopTrigger::new();
}

/// The in-memory side of a run being driven.
struct RunState {
    scheduler: Scheduler,
    outputs: BTreeMap<String, Value>,
    /// Grown as steps complete, so dispatching a step never copies the
    /// outputs of the whole run.
    context: Value,
    attempts: Vec<u32>,
    running: std::collections::HashSet<usize>,
    due_later: Vec<(usize, Duration)>,
    board: ProgressBoard,
    failed_any: bool,
    tolerated_any: bool,
    cancelled: bool,
    /// Why the run is parking as `blocked` (an `on_failure: block` step).
    blocked: Option<String>,
    /// Why the run was cancelled.
    cancel_reason: String,
    /// When each step's first attempt started (for `total_timeout`).
    first_started: Vec<Option<Instant>>,
    /// Steps waiting for a retry timer.
    waiting: std::collections::HashSet<usize>,
    /// The attempt counters of running `for_each` steps (item retries
    /// take attempt numbers as they go).
    item_attempts: std::collections::HashMap<usize, Arc<std::sync::atomic::AtomicU32>>,
    /// Which step (and attempt) each running task executes.
    tasks: std::collections::HashMap<tokio::task::Id, (usize, u32)>,
    ids: Vec<String>,
    /// Fired on cancel: running steps stop their programs gracefully.
    stop: StopTrigger,
}

impl RunState {
    fn new(run_id: &str, def: &Workflow, args: &Value, store: &Store) -> RunState {
        RunState {
            scheduler: Scheduler::new(
                def.steps
                    .iter()
                    .map(|s| (s.id.as_str(), s.needs.as_slice())),
            ),
            outputs: BTreeMap::new(),
            context: template_context(run_id, &def.name, args, &BTreeMap::new()),
            attempts: vec![0; def.steps.len()],
            item_attempts: std::collections::HashMap::new(),
            tasks: std::collections::HashMap::new(),
            running: Default::default(),
            due_later: Vec::new(),
            board: ProgressBoard::new(run_id, def, store.run_files(run_id)),
            failed_any: false,
            tolerated_any: false,
            cancelled: false,
            blocked: None,
            cancel_reason: "cancelled by request".to_string(),
            first_started: vec![None; def.steps.len()],
            waiting: Default::default(),
            ids: def.steps.iter().map(|s| s.id.clone()).collect(),
            stop: StopTrigger::new(),
        }
    }

    /// Make a step that did not complete visible to templates and
    /// conditions as `steps.<id>.status` (its output is null).
    fn record_status(&mut self, index: usize, status: &str) {
        let id = self.ids[index].clone();
        self.context["steps"][&id] = json!({ "output": null, "status": status });
    }

    fn complete(&mut self, index: usize, output: Value) {
        let id = self.ids[index].clone();
        self.context["steps"][&id] = json!({ "output": output, "status": "completed" });
        self.outputs.insert(id, output);
        self.scheduler.complete(index);
    }
}

fn describe_failure(failure: &StepFailure) -> String {
    match failure.kind {
        FailureKind::Timeout => format!("timeout: {}", failure.message),
        _ => failure.message.clone(),
    }
}

/// The component a step runs: a built-in name or an absolute `.wasm` path.
pub fn component_of(workflow: &LoadedWorkflow, step: &Step) -> String {
    match step_kind(step) {
        StepKind::Script => "script".to_string(),
        StepKind::Agent => "agent".to_string(),
        StepKind::Function { component } => {
            if crate::step::builtin::builtin(&component).is_some() {
                component
            } else {
                absolute(&workflow.dir, &component)
                    .to_string_lossy()
                    .into_owned()
            }
        }
        StepKind::Plugin { name } => {
            let path = workflow.def.plugins.get(&name).cloned().unwrap_or(name);
            absolute(&workflow.dir, &path)
                .to_string_lossy()
                .into_owned()
        }
    }
}

fn absolute(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    std::fs::canonicalize(&joined).unwrap_or(joined)
}

/// The template context: `args`, `steps.<id>.output`, `run`.
pub fn template_context(
    run_id: &str,
    workflow: &str,
    args: &Value,
    outputs: &BTreeMap<String, Value>,
) -> Value {
    let steps: Map<String, Value> = outputs
        .iter()
        .map(|(id, output)| {
            (
                id.clone(),
                json!({ "output": output, "status": "completed" }),
            )
        })
        .collect();
    json!({
        "args": args,
        "steps": steps,
        "run": { "id": run_id, "workflow": workflow },
    })
}

#[allow(clippy::too_many_arguments)]
fn prepare_invocation(
    workflow: &LoadedWorkflow,
    step: &Step,
    component: &str,
    run_id: &str,
    attempt: u32,
    args: &Value,
    outputs: &BTreeMap<String, Value>,
    context: &Value,
    templates: &Templates,
    grants: ResolvedGrants,
    scratch_dir: PathBuf,
) -> Result<StepInvocation, StepFailure> {
    let template_error =
        |what: &str, error: String| StepFailure::permanent(format!("template in {what}: {error}"));
    let mut config = match &step.with {
        Some(with) => templates
            .render_value(with, context)
            .map_err(|e| template_error("`with`", e))?,
        None => json!({}),
    };
    if step_kind(step) == StepKind::Agent {
        config = agent_config(workflow, step, run_id, context, templates)?;
    }
    if step_kind(step) == StepKind::Script {
        if let Some(script) = &step.run {
            let rendered = templates
                .render_str(script, context)
                .map_err(|e| template_error("`run`", e))?;
            if let Value::Object(map) = &mut config {
                map.insert("run".into(), Value::String(rendered));
            }
        }
    }
    let inputs: Map<String, Value> = step
        .needs
        .iter()
        .filter_map(|need| {
            outputs
                .get(need)
                .map(|output| (need.clone(), output.clone()))
        })
        .collect();
    let timeout = grants::step_timeout(workflow, step, &grants);
    Ok(StepInvocation {
        run_id: run_id.to_string(),
        step_id: step.id.clone(),
        component: component.to_string(),
        attempt,
        idempotency_key: crate::step::executor::idempotency_key(run_id, &step.id, 0, attempt),
        config,
        inputs: Value::Object(inputs),
        args: args.clone(),
        workdir: workflow.dir.clone(),
        grants,
        timeout,
        scratch_dir,
        agent: None,
        cancel: Default::default(),
    })
}

/// The config the built-in `agent` component receives: the rendered prompt
/// and system prompt, limits, the output mode and, for `session: reuse`,
/// the agent's earlier conversation in this run.
fn agent_config(
    workflow: &LoadedWorkflow,
    step: &Step,
    run_id: &str,
    context: &Value,
    templates: &Templates,
) -> Result<Value, StepFailure> {
    let template_error =
        |what: &str, error: String| StepFailure::permanent(format!("template in {what}: {error}"));
    let name = step.agent.as_deref().unwrap_or_default();
    let agent = workflow
        .def
        .agents
        .iter()
        .find(|a| a.id == name)
        .ok_or_else(|| StepFailure::permanent(format!("unknown agent '{name}'")))?;
    let prompt = templates
        .render_str(step.prompt.as_deref().unwrap_or_default(), context)
        .map_err(|e| template_error("`prompt`", e))?;
    let system = match agent.system.as_deref().or(agent.role.as_deref()) {
        Some(text) => Some(
            templates
                .render_str(text, context)
                .map_err(|e| template_error("the agent's `system`", e))?,
        ),
        None => None,
    };
    let _ = run_id;
    Ok(json!({
        "prompt": prompt,
        "system": system,
        "max_turns": step.max_turns.unwrap_or(20),
        "output": step.output.as_deref().unwrap_or("text"),
        "output_schema": step.output_schema,
        "history": [],
        "agent": { "id": agent.id, "name": agent.name, "role": agent.role },
    }))
}

fn write_summary(
    store: &Store,
    run_id: &str,
    step: &Step,
    status: &str,
    elapsed: Duration,
    error: Option<&str>,
    output: Option<&Value>,
) {
    let mut text = format!("# Step `{}`\n\n", step.id);
    if let Some(name) = &step.name {
        text.push_str(&format!("{name}\n\n"));
    }
    text.push_str(&format!(
        "- status: **{status}**\n- run: `{run_id}`\n- duration: {}\n",
        crate::step::units::humanize(elapsed)
    ));
    if let Some(error) = error {
        text.push_str(&format!("\n## Error\n\n```\n{error}\n```\n"));
    }
    if step_kind(step) == StepKind::Agent {
        text.push_str(&agent_audit(store, run_id, &step.id));
    }
    if let Some(output) = output {
        let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
        text.push_str(&format!("\n## Output\n\n```json\n{pretty}\n```\n"));
    }
    if let Err(error) = store
        .run_files(run_id)
        .write_step_file(&step.id, "summary.md", &text)
    {
        tracing::warn!("cannot write summary of step '{}': {error}", step.id);
    }
}

/// The audit section of an agent step's summary: model calls with token
/// usage, and each tool call with its decision and who made it.
fn agent_audit(store: &Store, run_id: &str, step_id: &str) -> String {
    let Ok(events) = store.events(run_id, Some(step_id)) else {
        return String::new();
    };
    let (mut calls, mut prompt, mut completion) = (0u64, 0u64, 0u64);
    let mut rows = Vec::new();
    for event in &events {
        match event.kind.as_str() {
            "model_call" => {
                calls += 1;
                prompt += event.data["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                completion += event.data["usage"]["completion_tokens"]
                    .as_u64()
                    .unwrap_or(0);
            }
            "tool_decision" => {
                let reason = event.data["reason"]
                    .as_str()
                    .or(event.data["prompt"].as_str())
                    .unwrap_or_default()
                    .replace('|', "\\|")
                    .replace('\n', " ");
                rows.push(format!(
                    "| {} | {} | {} | {} |",
                    event.data["tool"].as_str().unwrap_or_default(),
                    event.data["decision"].as_str().unwrap_or_default(),
                    event.data["decided_by"].as_str().unwrap_or_default(),
                    reason
                ));
            }
            _ => {}
        }
    }
    let mut text = format!(
        "\n## Agent audit\n\n- model calls: {calls} ({prompt} prompt + {completion} completion tokens)\n"
    );
    if !rows.is_empty() {
        text.push_str("\n| tool | decision | decided by | reason |\n|---|---|---|---|\n");
        text.push_str(&rows.join("\n"));
        text.push('\n');
    }
    text
}

/// Forwards a step's logs to the store's journal and the listener.
struct StepLog {
    store: Arc<Store>,
    listener: Arc<dyn RunListener>,
    run_id: String,
    step_id: String,
    /// Log bytes the step may still write (its `max_output`).
    budget: AtomicU64,
}

impl StepObserver for StepLog {
    fn log(&self, level: LogLevel, message: &str) {
        let size = message.len() as u64;
        let before = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(size.max(1)))
            })
            .unwrap_or(0);
        if before == 0 {
            return;
        }
        let cut;
        let message = if size >= before {
            cut = format!(
                "{}\n[wfhost: log cut at max_output; further lines dropped]",
                truncate_at(message, before as usize)
            );
            cut.as_str()
        } else {
            message
        };
        let data = json!({ "level": level.as_str(), "message": message });
        if let Err(error) = self
            .store
            .append_event(&self.run_id, Some(&self.step_id), "log", &data)
        {
            tracing::warn!("cannot record log line of step '{}': {error}", self.step_id);
        }
        self.listener.on_event(&RunEvent::Log {
            step: self.step_id.clone(),
            level,
            message: message.to_string(),
        });
    }

    fn progress(&self, message: &str, fraction: Option<f32>) {
        let data = json!({ "message": message, "fraction": fraction });
        if let Err(error) =
            self.store
                .append_event(&self.run_id, Some(&self.step_id), "progress", &data)
        {
            tracing::warn!("cannot record progress of step '{}': {error}", self.step_id);
        }
    }
}

fn truncate_at(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    //! The engine against an in-memory executor and a real SQLite store:
    //! no wasm involved.

    use super::*;
    use crate::step::executor::BoxFuture;
    use crate::workflow::{load_from_source, Format};
    use std::sync::Mutex;

    /// Echoes each step's config; fails steps whose config has `fail`.
    #[derive(Default)]
    struct FakeExecutor {
        seen: Mutex<Vec<StepInvocation>>,
    }

    impl StepExecutor for FakeExecutor {
        fn execute(
            &self,
            invocation: StepInvocation,
            observer: Arc<dyn StepObserver>,
        ) -> BoxFuture<Result<Value, StepFailure>> {
            let tries = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(invocation.clone());
                seen.iter()
                    .filter(|i| i.step_id == invocation.step_id && i.config == invocation.config)
                    .count()
            };
            Box::pin(async move {
                if invocation.config.get("panic") == Some(&Value::Bool(true)) {
                    panic!("boom in {}", invocation.step_id);
                }
                if invocation.config.get("flaky_once") == Some(&Value::Bool(true)) && tries == 1 {
                    return Err(StepFailure {
                        kind: FailureKind::Transient,
                        message: "flaky".into(),
                    });
                }
                observer.log(LogLevel::Info, &format!("running {}", invocation.step_id));
                for _ in 0..invocation
                    .config
                    .get("spam")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                {
                    observer.log(LogLevel::Info, &"x".repeat(40));
                }
                if let Some(message) = invocation.config.get("fail").and_then(Value::as_str) {
                    return Err(StepFailure::permanent(message));
                }
                Ok(invocation.config)
            })
        }
    }

    fn run(yaml: &str) -> (tempfile::TempDir, Arc<Store>, Arc<FakeExecutor>, RunOutcome) {
        let dir = tempfile::tempdir().unwrap();
        let workflow =
            load_from_source(yaml, "test.yaml", dir.path(), Format::Yaml, &["echo"]).unwrap();
        let store = Arc::new(Store::open(&dir.path().join("home")).unwrap());
        let executor = Arc::new(FakeExecutor::default());
        let driver = Driver::new(store.clone(), executor.clone(), Arc::new(Silent));
        let args = json!({});
        let run_id = driver.create_run(&workflow, &args).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime
            .block_on(driver.drive(&run_id, &workflow, &args))
            .unwrap();
        (dir, store, executor, outcome)
    }

    fn statuses(store: &Store, run_id: &str) -> Vec<(String, StepStatus)> {
        store
            .steps(run_id)
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.status))
            .collect()
    }

    #[test]
    fn a_panicking_step_or_item_fails_with_the_reason_and_the_run_goes_on() {
        let (_dir, store, _, outcome) = run(
            "name: p\nsteps:\n  - id: each\n    type: function\n    component: echo\n    for_each: '[1, 2, 3]'\n    fail_fast: false\n    with: {panic: '{{ item == 2 }}'}\n  - id: solo\n    type: function\n    component: echo\n    with: {panic: true}\n  - id: other\n    type: function\n    component: echo\n    with: {x: 1}\n",
        );
        assert_eq!(outcome.status, RunStatus::Failed);
        let steps = store.steps(&outcome.run_id).unwrap();
        let each = steps.iter().find(|s| s.id == "each").unwrap();
        assert_eq!(each.status, StepStatus::Failed);
        let error = each.error.as_deref().unwrap();
        assert!(
            error.contains("item 1: its task panicked: boom in each"),
            "{error}"
        );
        let solo = steps.iter().find(|s| s.id == "solo").unwrap();
        assert!(
            solo.error
                .as_deref()
                .unwrap()
                .contains("the step's task panicked: boom in solo"),
            "{solo:?}"
        );
        assert_eq!(
            steps.iter().find(|s| s.id == "other").unwrap().status,
            StepStatus::Completed
        );
        // No attempt row is left running.
        let open: i64 = store
            .conn_for_tests()
            .query_row(
                "SELECT COUNT(*) FROM step_attempts WHERE status = 'running'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(open, 0);
    }

    #[test]
    fn for_each_items_are_retried_by_the_retry_policy() {
        let (_dir, store, executor, outcome) = run(
            "name: r\nsteps:\n  - id: each\n    type: function\n    component: echo\n    for_each: '[1, 2, 3]'\n    retry: {max_attempts: 2, initial_interval: 10ms}\n    with: {n: '{{ item }}', flaky_once: '{{ item == 2 }}'}\n",
        );
        assert_eq!(outcome.status, RunStatus::Completed);
        assert_eq!(executor.seen.lock().unwrap().len(), 4);
        let each = &store.steps(&outcome.run_id).unwrap()[0];
        assert_eq!(each.attempts, 4);
        assert_eq!(each.output.as_ref().unwrap()[1]["n"], 2);
    }

    #[test]
    fn outputs_flow_through_templates_and_inputs() {
        let (_dir, store, executor, outcome) = run(
            "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n    with: {n: 20}\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n    with: {doubled: '{{ steps.a.output.n * 2 }}', text: 'n={{ steps.a.output.n }}'}\n",
        );
        assert_eq!(outcome.status, RunStatus::Completed);
        let b = store.steps(&outcome.run_id).unwrap().pop().unwrap();
        assert_eq!(b.output, Some(json!({"doubled": 40, "text": "n=20"})));
        let seen = executor.seen.lock().unwrap();
        let b_call = seen.iter().find(|i| i.step_id == "b").unwrap();
        assert_eq!(b_call.inputs, json!({"a": {"n": 20}}));
        assert_eq!(b_call.idempotency_key, format!("{}:b:0:1", outcome.run_id));
        let logs = store.events(&outcome.run_id, Some("b")).unwrap();
        assert!(logs
            .iter()
            .any(|e| e.kind == "log" && e.data["message"] == "running b"));
    }

    #[test]
    fn a_failure_skips_dependents_and_fails_the_run() {
        let (_dir, store, _executor, outcome) = run(
            "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n    with: {fail: nope}\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n  - id: c\n    type: function\n    component: echo\n",
        );
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(
            statuses(&store, &outcome.run_id),
            [
                ("a".to_string(), StepStatus::Failed),
                ("b".to_string(), StepStatus::Skipped),
                ("c".to_string(), StepStatus::Completed)
            ]
        );
        let a = &store.steps(&outcome.run_id).unwrap()[0];
        assert_eq!(a.error.as_deref(), Some("nope"));
    }

    #[test]
    fn a_template_error_at_run_time_fails_only_that_step_with_the_reason() {
        let (_dir, store, executor, outcome) = run(
            "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n    with: {x: '{{ steps.a.output.missing }}'}\n",
        );
        assert_eq!(outcome.status, RunStatus::Failed);
        let b = &store.steps(&outcome.run_id).unwrap()[1];
        assert_eq!(b.status, StepStatus::Failed);
        let error = b.error.as_deref().unwrap();
        assert!(
            error.contains("template in `with`") && error.contains("undefined"),
            "{error}"
        );
        assert!(
            executor
                .seen
                .lock()
                .unwrap()
                .iter()
                .all(|i| i.step_id != "b"),
            "b never executed"
        );
    }

    #[test]
    fn step_logs_are_capped_at_max_output() {
        let (_dir, store, _executor, outcome) = run(
            "name: t\nsteps:\n  - id: loud\n    type: function\n    component: echo\n    grants: {max_output: 100}\n    with: {spam: 1000}\n",
        );
        assert_eq!(outcome.status, RunStatus::Completed);
        let logs: Vec<String> = store
            .events(&outcome.run_id, Some("loud"))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "log")
            .map(|e| e.data["message"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(logs.len(), 4, "{logs:?}");
        assert!(logs[3].ends_with("[wfhost: log cut at max_output; further lines dropped]"));
        let kept: usize = logs.iter().map(|l| l.lines().next().unwrap().len()).sum();
        assert!(kept <= 100, "{kept}");
    }

    #[test]
    fn script_steps_get_their_shell_and_rendered_script() {
        let (_dir, _store, executor, outcome) =
            run("name: t\nsteps:\n  - id: s\n    run: echo {{ run.id }}\n");
        assert_eq!(outcome.status, RunStatus::Completed);
        let seen = executor.seen.lock().unwrap();
        assert_eq!(seen[0].component, "script");
        assert_eq!(seen[0].config["run"], format!("echo {}", outcome.run_id));
        assert_eq!(seen[0].grants.exec.len(), 1);
        assert_eq!(seen[0].grants.exec[0].name, "sh");
        assert!(seen[0].grants.exec[0].path.is_absolute());
    }
}
