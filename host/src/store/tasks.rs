//! Step attempts queued for workers (see [`super::StepQueue`]): what goes in
//! the queue, what a claim hands out, and where a task stands.

use serde_json::Value;

/// An attempt to queue.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Its run.
    pub run_id: &'a str,
    /// Its step.
    pub step_id: &'a str,
    /// The attempt's number.
    pub attempt: u32,
    /// Labels a worker must all have to take it (`runs_on:`).
    pub labels: &'a [String],
    /// What the worker needs to run it (see the engine's placement).
    pub payload: &'a Value,
}

/// A task a worker claimed.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// The task's id.
    pub id: i64,
    /// This claim's fencing token: renewals and the outcome must carry it.
    pub token: i64,
    /// Its run.
    pub run_id: String,
    /// Its step.
    pub step_id: String,
    /// The attempt's number.
    pub attempt: u32,
    /// What the driver queued.
    pub payload: Value,
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// Claimed by `worker` under `token`; `expired`: its lease ran out (the
    /// worker stopped renewing: it died or lost the database).
    Running {
        /// Who claimed it (`host:pid`).
        worker: String,
        /// The claim's token.
        token: i64,
        /// Whether the claim's lease ran out.
        expired: bool,
    },
    /// Finished with this outcome (as the worker recorded it).
    Done(Value),
    /// Given up on (see [`super::StepQueue::cancel_task`]).
    Cancelled,
    /// No such task (its run was pruned).
    Missing,
}

/// A finished task's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedTask {
    /// The task's id.
    pub id: i64,
    /// Its step.
    pub step_id: String,
    /// The attempt's number.
    pub attempt: u32,
    /// What the worker recorded.
    pub outcome: Value,
}
