//! Placing step attempts on workers, through the store's queue
//! ([`StepQueue`], PostgreSQL).
//!
//! A run is coordinated by one driver at a time (it holds the run's lease:
//! it renders templates, records every transition and decides what comes
//! next), but with placement its steps run wherever a worker with the
//! step's labels is free: the driver queues each attempt and waits for its
//! outcome ([`Placement::executor_for`]); a worker claims it under a lease
//! of its own, resolves the step's grants on its machine, runs it
//! ([`run_task`]) and records the outcome, fenced by its claim's token.
//!
//! A worker that dies mid-attempt stops renewing its claim; once the claim
//! runs out, its driver queues the attempt again when the step is
//! idempotent, and otherwise blocks the run (the same rule as for a driver
//! that died: [`FailureKind::Interrupted`]). A driver that dies leaves its
//! run to another worker, which resumes it by the usual rules.
//!
//! Agent steps (their session lives in the driver) and steps that keep
//! `artifacts:` (collected from the driver's disk) run in the driver.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

use super::ceiling::Ceiling;
use super::grants::{self, HostState};
use super::step_types;
use crate::step::executor::{
    BoxFuture, FailureKind, LeaseCheck, LogLevel, StepExecutor, StepFailure, StepInvocation,
    StepObserver,
};
use crate::step::stop::StopTrigger;
use crate::store::tasks::{ClaimedTask, NewTask, TaskState};
use crate::store::EngineStore;
use crate::workflow::model::Step;
use crate::workflow::LoadedWorkflow;
use crate::workflow::{step_kind, StepKind};

/// How long a worker's claim on a task lasts without renewal.
pub const TASK_LEASE: Duration = Duration::from_secs(15);
/// How often a worker renews its claims.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a waiting driver looks at its tasks without being woken.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Whether `step` may run on another worker: not an agent step (its
/// session is the driver's), keeping no `artifacts:` (collected from the
/// driver's disk).
pub fn placeable(step: &Step) -> bool {
    step.artifacts.is_empty() && !matches!(step_kind(step), StepKind::Agent)
}

/// The driver's side: queues attempts and waits for their outcomes.
#[derive(Clone)]
pub struct Placement {
    store: Arc<dyn EngineStore>,
    woken: Arc<Outcomes>,
}

impl Placement {
    /// Placement through `store`'s queue; `None` when it has none
    /// (SQLite: steps run in the driver's process).
    pub fn new(store: Arc<dyn EngineStore>) -> Option<Placement> {
        store.step_queue()?;
        Some(Placement {
            store,
            woken: Arc::new(Outcomes::default()),
        })
    }

    /// The executor for `step`'s attempts: each is queued for a worker with
    /// the step's labels.
    pub fn executor_for(&self, step: &Step) -> Arc<dyn StepExecutor> {
        Arc::new(Placed {
            placement: self.clone(),
            labels: step.runs_on.clone(),
            idempotent: step.idempotent,
        })
    }
}

/// Wakes a driver's waiting attempts when their tasks finish: one thread
/// per process listens ([`crate::store::StepQueue::wait_for_outcomes`])
/// and wakes the attempt waiting for each finished task.
#[derive(Default)]
struct Outcomes {
    waiting: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Notify>>>>,
    listening: OnceLock<()>,
}

impl Outcomes {
    /// Be woken when task `id` finishes (until [`Outcomes::forget`]).
    fn wake_for(&self, store: &Arc<dyn EngineStore>, id: i64) -> Arc<tokio::sync::Notify> {
        self.listening.get_or_init(|| {
            let waiting = self.waiting.clone();
            let store = store.clone();
            // Lives as long as the driver's process: attempts come and go.
            std::thread::spawn(move || loop {
                let Some(queue) = store.step_queue() else {
                    return;
                };
                for id in queue.wait_for_outcomes(Duration::from_secs(1)) {
                    let waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(notify) = waiting.get(&id) {
                        notify.notify_one();
                    }
                }
            });
        });
        let notify = Arc::new(tokio::sync::Notify::new());
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, notify.clone());
        notify
    }

    fn forget(&self, id: i64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// A step's attempts, placed on workers.
struct Placed {
    placement: Placement,
    labels: Vec<String>,
    idempotent: bool,
}

impl StepExecutor for Placed {
    fn execute(
        &self,
        invocation: StepInvocation,
        observer: Arc<dyn StepObserver>,
    ) -> BoxFuture<Result<Value, StepFailure>> {
        let store = self.placement.store.clone();
        let outcomes = self.placement.woken.clone();
        let labels = self.labels.clone();
        let idempotent = self.idempotent;
        Box::pin(async move {
            let mut waiting = Waiting {
                store,
                invocation,
                observer,
                idempotent,
                outcomes,
            };
            waiting.run(&labels).await
        })
    }
}

/// One placed attempt, from queueing to its outcome.
struct Waiting {
    store: Arc<dyn EngineStore>,
    invocation: StepInvocation,
    observer: Arc<dyn StepObserver>,
    idempotent: bool,
    outcomes: Arc<Outcomes>,
}

impl Waiting {
    fn queue(&self) -> &dyn crate::store::StepQueue {
        self.store
            .step_queue()
            .expect("placement is made only for a store with a queue")
    }

    async fn run(&mut self, labels: &[String]) -> Result<Value, StepFailure> {
        let invocation = &self.invocation;
        let payload = json!({
            "component": invocation.component,
            "function": invocation.function,
            "config": invocation.config,
            "inputs": invocation.inputs,
            "args": invocation.args,
            "idempotency_key": invocation.idempotency_key,
            "timeout_ms": invocation.timeout.as_millis() as u64,
        });
        let task = NewTask {
            run_id: &invocation.run_id,
            step_id: &invocation.step_id,
            attempt: invocation.attempt,
            labels,
            payload: &payload,
        };
        let id = self.queue().enqueue_task(&task).map_err(store_failure)?;
        let woken = self.outcomes.wake_for(&self.store, id);
        let result = self.wait(id, labels, &woken).await;
        self.outcomes.forget(id);
        result
    }

    /// Wait for task `id`'s outcome (woken by `woken`, and looking now and
    /// then anyway), handling a lost worker and a cancelled run.
    async fn wait(
        &mut self,
        id: i64,
        labels: &[String],
        woken: &tokio::sync::Notify,
    ) -> Result<Value, StepFailure> {
        if !labels.is_empty() {
            self.observer.log(
                LogLevel::Debug,
                &format!("queued for a worker with labels {}", labels.join(", ")),
            );
        }
        let mut cancel = self.invocation.cancel.clone();
        let mut seen_worker: Option<String> = None;
        loop {
            if self.invocation.cancel.is_set() {
                self.queue().cancel_task(id).map_err(store_failure)?;
                return Err(StepFailure::permanent("cancelled"));
            }
            if !self.invocation.lease.holds() {
                return Err(StepFailure::permanent(crate::step::executor::lease_lost(
                    "its outcome is left to the new driver",
                )));
            }
            let state = match self.queue().task_state(id) {
                Ok(state) => state,
                // The database is out of reach for a moment: the attempt
                // goes on (or not) on its worker; look again. Whether this
                // driver may go on is its lease's to say.
                Err(error) => {
                    tracing::warn!("looking at task {id}: {error}");
                    tokio::time::sleep(LOOK_EVERY).await;
                    continue;
                }
            };
            match state {
                TaskState::Queued => {}
                TaskState::Running {
                    worker,
                    token,
                    expired,
                } => {
                    if expired {
                        if let Some(failure) = self.worker_lost(id, token, &worker)? {
                            return Err(failure);
                        }
                    } else if seen_worker.as_deref() != Some(worker.as_str()) {
                        self.placed_on(id, &worker);
                        seen_worker = Some(worker);
                    }
                }
                TaskState::Done(outcome) => {
                    let worker = outcome.get("worker").and_then(Value::as_str).unwrap_or("");
                    if seen_worker.as_deref() != Some(worker) {
                        self.placed_on(id, worker);
                    }
                    return self.outcome(outcome);
                }
                TaskState::Cancelled => {
                    return Err(StepFailure::permanent(
                        "its queued attempt was cancelled by another driver of the run",
                    ))
                }
                TaskState::Missing => {
                    return Err(StepFailure::permanent("its queued attempt is gone"))
                }
            }
            tokio::select! {
                _ = woken.notified() => {}
                _ = cancel.wait() => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// Record which worker took the attempt (the journal's
    /// `step_placed`).
    fn placed_on(&self, id: i64, worker: &str) {
        let invocation = &self.invocation;
        let data = json!({ "task": id, "attempt": invocation.attempt, "worker": worker });
        if let Err(error) = self.store.append_event(
            &invocation.run_id,
            Some(&invocation.step_id),
            "step_placed",
            &data,
        ) {
            tracing::warn!(
                "recording where step '{}' runs: {error}",
                invocation.step_id
            );
        }
    }

    /// The worker holding task `id` stopped renewing its claim: queue the
    /// attempt again when the step is idempotent (`None`), else the failure
    /// that blocks the run.
    fn worker_lost(
        &self,
        id: i64,
        token: i64,
        worker: &str,
    ) -> Result<Option<StepFailure>, StepFailure> {
        if self.idempotent {
            if self
                .queue()
                .requeue_task(id, token)
                .map_err(store_failure)?
            {
                self.observer.log(
                    LogLevel::Warn,
                    &format!(
                        "worker {worker} was lost while running this attempt; it is queued again \
                         (the step is idempotent)"
                    ),
                );
            }
            return Ok(None);
        }
        self.queue().cancel_task(id).map_err(store_failure)?;
        Ok(Some(StepFailure {
            kind: FailureKind::Interrupted,
            message: format!(
                "worker {worker} was lost while running it, and it is not marked idempotent"
            ),
        }))
    }

    /// The outcome a worker recorded: its output or failure (its log lines
    /// are in the journal already).
    fn outcome(&self, outcome: Value) -> Result<Value, StepFailure> {
        if let Some(output) = outcome.get("output") {
            return Ok(output.clone());
        }
        let error = outcome.get("error");
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the worker recorded no outcome")
            .to_string();
        let kind = match error.and_then(|e| e.get("kind")).and_then(Value::as_str) {
            Some("transient") => FailureKind::Transient,
            Some("timeout") => FailureKind::Timeout,
            _ => FailureKind::Permanent,
        };
        Err(StepFailure { kind, message })
    }
}

fn store_failure(error: crate::store::StoreError) -> StepFailure {
    StepFailure::transient(format!("store: {error}"))
}

/// What a worker needs to run claimed tasks on its machine.
pub struct WorkerSide<'a> {
    /// The store (its queue holds the claims).
    pub store: &'a Arc<dyn EngineStore>,
    /// This machine's executor.
    pub executor: &'a Arc<dyn StepExecutor>,
    /// This machine's operator ceiling.
    pub ceiling: Option<&'a Ceiling>,
    /// This machine's wfhost home.
    pub home: &'a Path,
    /// This worker's name (`host:pid`).
    pub worker: &'a str,
}

/// Run a claimed task of `workflow` (the run's pinned definition) here:
/// resolve the step's grants on this machine, run the attempt while
/// renewing the claim, and record the outcome (only while the claim is
/// still this worker's). Returns whether the outcome was recorded.
pub async fn run_task(side: &WorkerSide<'_>, workflow: &LoadedWorkflow, task: ClaimedTask) -> bool {
    let queue = side
        .store
        .step_queue()
        .expect("tasks are claimed only from a store with a queue");
    let held = Arc::new(AtomicBool::new(true));
    let stop = StopTrigger::new();
    let outcome = match invocation(side, workflow, &task, &held, &stop) {
        Err(failure) => failure_outcome(&failure),
        Ok(invocation) => {
            // Log lines go to the run's journal as they come, as the
            // driver's own steps' do, while the claim is this worker's.
            let observer: Arc<dyn StepObserver> = Arc::new(WhileHeld {
                log: super::driver::StepLog::new(
                    side.store.clone(),
                    Arc::new(super::driver::Silent),
                    &task.run_id,
                    &task.step_id,
                    invocation.grants.max_output,
                ),
                held: held.clone(),
            });
            let attempt = side.executor.execute(invocation, observer);
            let renewing = renew(side.store.clone(), &task, held.clone(), &stop);
            tokio::pin!(attempt);
            tokio::pin!(renewing);
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    _ = &mut renewing => {}
                }
            };
            match result {
                Ok(output) => json!({ "output": output }),
                Err(failure) => failure_outcome(&failure),
            }
        }
    };
    let mut outcome = outcome;
    outcome["worker"] = json!(side.worker);
    if !held.load(Ordering::Relaxed) {
        return false;
    }
    match queue.finish_task(task.id, task.token, &outcome) {
        Ok(recorded) => recorded,
        Err(error) => {
            tracing::warn!("recording the outcome of task {}: {error}", task.id);
            false
        }
    }
}

/// Record that a claimed task cannot run on this worker, and why (its
/// run's definition no longer loads here).
pub fn refuse_task(side: &WorkerSide<'_>, task: &ClaimedTask, why: &str) {
    let mut outcome = failure_outcome(&StepFailure::permanent(format!(
        "worker {}: {why}",
        side.worker
    )));
    outcome["worker"] = json!(side.worker);
    if let Some(queue) = side.store.step_queue() {
        if let Err(error) = queue.finish_task(task.id, task.token, &outcome) {
            tracing::warn!("recording the outcome of task {}: {error}", task.id);
        }
    }
}

/// Renew the claim on `task` until the attempt ends; when the claim is
/// lost (cancelled, or given to another worker after this one missed its
/// renewals), stop the attempt.
async fn renew(
    store: Arc<dyn EngineStore>,
    task: &ClaimedTask,
    held: Arc<AtomicBool>,
    stop: &StopTrigger,
) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(queue) = store.step_queue() else {
            return;
        };
        match queue.renew_task(task.id, task.token, TASK_LEASE) {
            Ok(true) => {}
            Ok(false) => {
                held.store(false, Ordering::Relaxed);
                stop.fire();
                std::future::pending::<()>().await;
            }
            // The database is out of reach: go on; if it stays away past
            // the lease, the driver gives the attempt up and the outcome
            // will not be recorded.
            Err(error) => tracing::warn!("renewing task {}: {error}", task.id),
        }
    }
}

/// The invocation of a claimed task on this machine, or why it cannot run
/// here.
fn invocation(
    side: &WorkerSide<'_>,
    workflow: &LoadedWorkflow,
    task: &ClaimedTask,
    held: &Arc<AtomicBool>,
    stop: &StopTrigger,
) -> Result<StepInvocation, StepFailure> {
    let on = side.worker;
    let Some(step) = workflow.step(&task.step_id) else {
        return Err(StepFailure::permanent(format!(
            "worker {on}: the run's definition has no step '{}'",
            task.step_id
        )));
    };
    if !placeable(step) {
        return Err(StepFailure::permanent(format!(
            "worker {on}: step '{}' runs only in its driver",
            step.id
        )));
    }
    let host = HostState::new(side.home, side.executor.cache_dir().as_deref());
    let resolved = grants::resolve(workflow, step, side.ceiling, &host).map_err(|problems| {
        StepFailure::permanent(format!(
            "on worker {on}, the step's grants cannot be given: {}",
            problems.join("; ")
        ))
    })?;
    let component = step_types::component_of(workflow, step);
    side.executor
        .prepare(std::slice::from_ref(&component))
        .map_err(|error| {
            StepFailure::permanent(format!("worker {on}: cannot load plugin: {error}"))
        })?;
    let payload = &task.payload;
    let field = |name: &str| payload.get(name).cloned().unwrap_or(Value::Null);
    let asked = payload
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    let own = grants::step_timeout(workflow, step, &resolved);
    let held = held.clone();
    Ok(StepInvocation {
        run_id: task.run_id.clone(),
        step_id: step.id.clone(),
        component,
        function: step.function.clone(),
        attempt: task.attempt,
        idempotency_key: payload
            .get("idempotency_key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                crate::step::executor::idempotency_key(&task.run_id, &step.id, 0, task.attempt)
            }),
        config: field("config"),
        inputs: field("inputs"),
        args: field("args"),
        workdir: workflow.dir.clone(),
        cwd: super::driver::working_directory(workflow, step),
        timeout: asked.map_or(own, |asked| asked.min(own)),
        scratch_dir: side.store.run_files(&task.run_id).scratch_dir(&step.id),
        grants: resolved,
        agent: None,
        cancel: stop.signal(),
        lease: LeaseCheck::new(move || held.load(Ordering::Relaxed)),
        resume: None,
    })
}

fn failure_outcome(failure: &StepFailure) -> Value {
    let kind = match failure.kind {
        FailureKind::Transient => "transient",
        FailureKind::Timeout => "timeout",
        FailureKind::Permanent | FailureKind::Interrupted => "permanent",
    };
    json!({ "error": { "kind": kind, "message": failure.message } })
}

/// A placed attempt's log, written only while the worker's claim holds.
struct WhileHeld {
    log: super::driver::StepLog,
    held: Arc<AtomicBool>,
}

impl StepObserver for WhileHeld {
    fn log(&self, level: LogLevel, message: &str) {
        if self.held.load(Ordering::Relaxed) {
            self.log.log(level, message);
        }
    }

    fn progress(&self, message: &str, fraction: Option<f32>) {
        if self.held.load(Ordering::Relaxed) {
            self.log.progress(message, fraction);
        }
    }
}
