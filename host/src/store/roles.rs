//! What the rest of wfhost needs from a store, one trait per role.
//!
//! The engine holds an `Arc<dyn` [`EngineStore`]`>` (every role), agent
//! code an `Arc<dyn` [`AgentStore`]`>`, the CLI reads through the same
//! traits. Signatures use only the plain records of this module and
//! [`StoreError`](super::StoreError): a second backend implements these
//! traits next to [`super::sqlite`]. Every method is synchronous; an
//! implementation keeps its blocking I/O off the async runtime's worker
//! threads itself (see [`super::blocking::offload`]).
//!
//! Writes of a driven run are fenced by its lease ([`LeaseStore`]): once
//! another process has claimed the run, they fail with
//! [`StoreError::LeaseLost`](super::StoreError::LeaseLost) and commit
//! nothing.

use std::path::Path;

use serde_json::Value;

use super::tasks::{ClaimedTask, FinishedTask, NewTask, TaskState};
use super::{
    AgentRecord, ApprovalRecord, ArtifactRecord, Change, CommentRecord, EventRecord,
    NewAgentRecord, NewApproval, NewRun, Result, RunFiles, RunRecord, RunStatus, StepRecord,
    StepStatus,
};

/// Step attempts placed in the store for any worker to run (see
/// [`super::tasks`]): the driver of a run queues an attempt and waits for its
/// outcome; a worker claims it under a lease (its fencing token changes with
/// every claim), renews the lease while it runs, and records the outcome
/// only while the claim is still its own.
pub trait StepQueue: Send + Sync {
    /// Queue an attempt; returns the task's id. Wakes waiting workers.
    fn enqueue_task(&self, task: &NewTask<'_>) -> Result<i64>;

    /// Claim the oldest queued task whose labels this worker all has,
    /// leased for `lease` (measured by the database's clock).
    fn claim_task(
        &self,
        worker: &str,
        labels: &[String],
        lease: std::time::Duration,
    ) -> Result<Option<ClaimedTask>>;

    /// Renew a claim; `false` when it is no longer this claim (the task was
    /// cancelled or given to another worker): stop working on it.
    fn renew_task(&self, id: i64, token: i64, lease: std::time::Duration) -> Result<bool>;

    /// Record a claimed task's outcome; `false` (nothing written) when the
    /// claim was lost meanwhile. Wakes the drivers waiting for outcomes.
    fn finish_task(&self, id: i64, token: i64, outcome: &Value) -> Result<bool>;

    /// Where a task stands.
    fn task_state(&self, id: i64) -> Result<TaskState>;

    /// Put a task whose worker was lost (its lease ran out under claim
    /// `token`) back in the queue; `false` when it changed meanwhile.
    fn requeue_task(&self, id: i64, token: i64) -> Result<bool>;

    /// Give up on a task that has not finished (its run was cancelled, the
    /// driver stopped waiting): a worker running it stops at its next
    /// renewal.
    fn cancel_task(&self, id: i64) -> Result<()>;

    /// The outcomes of a run's finished tasks whose step is still recorded
    /// as running that very attempt: what a driver that died before
    /// recording them left behind.
    fn unrecorded_outcomes(&self, run_id: &str) -> Result<Vec<FinishedTask>>;

    /// How many of a run's tasks are claimed by a worker whose claim has
    /// not run out (attempts going on somewhere).
    fn live_tasks_of(&self, run_id: &str) -> Result<u64>;

    /// Cancel every unfinished task of a run: a driver taking the run
    /// over decides afresh about the attempts its predecessor placed (see
    /// the driver's restore), so none of them may still start.
    fn cancel_tasks_of(&self, run_id: &str) -> Result<u64>;

    /// Wait up to `timeout` for tasks to finish anywhere; returns the ids
    /// of those that did (possibly none: look at yours anyway now and then,
    /// a notification can be missed while the listening connection is
    /// re-opened).
    fn wait_for_outcomes(&self, timeout: std::time::Duration) -> Vec<i64>;
}

/// What woke a worker waiting for work ([`RunStore::wait_for_work`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct News {
    /// A run was queued.
    pub runs: bool,
    /// A step attempt was queued.
    pub tasks: bool,
}

/// Runs: creating them, their status, control requests, upgrades, pruning
/// and listing.
pub trait RunStore: Send + Sync {
    /// The wfhost home this store serves; run folders live in
    /// `<home>/runs/<run-id>/`.
    fn home(&self) -> &Path;

    /// The human-readable folder of a run (written by the run-folder
    /// mirror, see [`super::files::RunFolders`]).
    fn run_files(&self, run_id: &str) -> RunFiles {
        RunFiles::new(self.home().join("runs").join(run_id))
    }

    /// The PostgreSQL URL of this store (`None`: SQLite under the home),
    /// for processes that must open the same store.
    fn url(&self) -> Option<String> {
        None
    }

    /// Wait up to `timeout` for news of work (a run or a step attempt was
    /// queued); returns early with the news when the store can tell
    /// (PostgreSQL's `LISTEN`), else sleeps and returns none.
    fn wait_for_work(&self, timeout: std::time::Duration) -> News {
        std::thread::sleep(timeout);
        News::default()
    }

    /// Wait until the store's observers (the run-folder mirror) have
    /// caught up with every commit so far.
    fn flush_observers(&self) {}

    /// The queue of step attempts any worker may run, when the store has
    /// one (PostgreSQL; `None`: steps run in their driver's process).
    fn step_queue(&self) -> Option<&dyn StepQueue> {
        None
    }

    /// Record a new run (status `pending`) and its steps in one transaction.
    fn create_run(&self, run: &NewRun<'_>) -> Result<()>;

    /// Move a run to a new status (and stamp start/finish times).
    fn set_run_status(&self, run_id: &str, status: RunStatus, error: Option<&str>) -> Result<()>;

    /// Ask the driving process to `pause` or `cancel` (or clear with
    /// `None`). Not fenced: anyone may ask.
    fn set_request(&self, run_id: &str, request: Option<&str>) -> Result<()>;

    /// The pending control request of a run, if any.
    fn request(&self, run_id: &str) -> Result<Option<String>>;

    /// Pin a new definition to a run (`wfhost resume --upgrade`): steps are
    /// mapped by id; `steps` lists the new definition's ids in order, rows
    /// of ids that are gone are removed (their attempts stay in history).
    fn upgrade_definition(
        &self,
        run_id: &str,
        definition: &str,
        steps: &[&str],
        summary: &Value,
    ) -> Result<()>;

    /// Delete finished runs created before `cutoff` (RFC 3339), with their
    /// folders; returns the ids removed.
    fn prune(&self, cutoff: &str) -> Result<Vec<String>>;

    /// Resolve a full run id or a unique prefix of one.
    fn resolve_run_id(&self, prefix: &str) -> Result<String>;

    /// One run by exact id.
    fn run(&self, run_id: &str) -> Result<RunRecord>;

    /// All runs, newest first.
    fn runs(&self) -> Result<Vec<RunRecord>>;

    /// The runs that are `pending` or `running` (what a worker may take),
    /// newest first.
    fn open_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = self.runs()?;
        runs.retain(|run| matches!(run.status, RunStatus::Pending | RunStatus::Running));
        Ok(runs)
    }
}

/// One driver per run: claiming a run, renewing and checking the lease.
pub trait LeaseStore: Send + Sync {
    /// Take over driving a run: allowed when nobody drives it (any status
    /// but a `running` one, or a `blocked` one waiting for an approval,
    /// with a fresh heartbeat from another live process). Returns false
    /// when another live process drives it. From then on this handle's
    /// writes to the run are fenced by the new lease.
    fn claim_run(&self, run_id: &str, pid: u32) -> Result<bool>;

    /// Whether this handle still holds the lease on `run_id` it claimed
    /// (true when it claimed none): another process has not taken the run
    /// over.
    fn holds_lease(&self, run_id: &str) -> Result<bool>;

    /// The driving process is alive: renews its lease. Fails with
    /// [`StoreError::LeaseLost`](super::StoreError::LeaseLost) once another
    /// process has claimed the run.
    fn heartbeat(&self, run_id: &str) -> Result<()>;
}

/// Steps and their attempts.
pub trait StepStore: Send + Sync {
    /// Start attempt `attempt` of a step with the given rendered input.
    fn start_attempt(&self, run_id: &str, step_id: &str, attempt: u32, input: &Value)
        -> Result<()>;

    /// Finish one item of a `for_each` step (its own attempt row); the
    /// step itself stays running.
    fn finish_item(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        index: usize,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()>;

    /// An attempt failed and another is due at `next_at`.
    fn schedule_retry(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        next_at: &str,
    ) -> Result<()>;

    /// Record how many attempts each step's retry policy allows.
    fn set_max_attempts(&self, run_id: &str, limits: &[(&str, u32)]) -> Result<()>;

    /// How many times a step has looped back (`step_loop` events).
    fn loops(&self, run_id: &str, step_id: &str) -> Result<u32>;

    /// The highest attempt of a step that completed (0 if none did).
    fn last_completed_attempt(&self, run_id: &str, step_id: &str) -> Result<u32>;

    /// The steps of a run in file order, with their latest state.
    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;

    /// The rendered input of each step's latest attempt, by step id (steps
    /// that never started are absent).
    fn latest_inputs(&self, run_id: &str) -> Result<std::collections::HashMap<String, Value>>;
}

/// The journal: appending events and reading them back.
pub trait EventLog: Send + Sync {
    /// Append a free-form event (log line, progress ...) to the journal.
    fn append_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        kind: &str,
        data: &Value,
    ) -> Result<()>;

    /// Every event of a run (or of one of its steps), in order.
    fn events(&self, run_id: &str, step_id: Option<&str>) -> Result<Vec<EventRecord>>;

    /// Events of a run after sequence number `after`, oldest first.
    fn events_after(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>>;

    /// Events of every run after sequence number `after`, oldest first, at
    /// most `limit`, each with its run id.
    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, EventRecord)>>;

    /// The sequence number of the newest event of any run (0: none).
    fn latest_seq(&self) -> Result<i64>;

    /// The data of the run's latest event of `kind`, if any.
    fn latest_event(&self, run_id: &str, kind: &str) -> Result<Option<Value>>;
}

/// Step transitions recorded whole ([`Change`] sets) and read back as
/// checkpoints.
pub trait CheckpointStore: StepStore + EventLog {
    /// Make several changes to a run's steps in one transaction: a
    /// decision made of several parts (a loop going back, a failure
    /// escalated to a skip) is recorded whole or not at all.
    fn apply(&self, run_id: &str, changes: &[Change<'_>]) -> Result<()>;

    /// Checkpoints of a run: the step transitions (completed, failed,
    /// skipped) and the checkpoints people made (`checkpoint`), each
    /// identified by its event sequence number.
    fn checkpoints(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        let events = self.events(run_id, None)?;
        // `wfhost prune --checkpoints` leaves the journal whole and records
        // from where on checkpoints are offered.
        let floor = events
            .iter()
            .filter(|e| e.kind == "checkpoints_pruned")
            .filter_map(|e| e.data.get("before").and_then(serde_json::Value::as_i64))
            .max()
            .unwrap_or(0);
        Ok(events
            .into_iter()
            .filter(|e| e.seq >= floor)
            .filter(|e| {
                matches!(
                    e.kind.as_str(),
                    "step_completed" | "step_failed" | "step_skipped" | "checkpoint"
                )
            })
            .collect())
    }

    /// The run a checkpoint (event sequence number) belongs to.
    fn checkpoint_run(&self, seq: i64) -> Result<Option<String>>;

    /// Finish an attempt: `Ok(output)` completes the step, `Err(message)`
    /// fails it (the status says which kind of failure).
    fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        status: StepStatus,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()> {
        let step = step_id;
        self.apply(
            run_id,
            &[Change::FinishAttempt {
                step,
                attempt,
                status,
                outcome,
            }],
        )
    }

    /// Record that a step will not run, and why.
    fn skip_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        let step = step_id;
        self.apply(run_id, &[Change::SkipStep { step, reason }])
    }

    /// Move a step to `status` outside the normal attempt flow
    /// (interrupted, cancelled, reset to pending for a re-run), noting why.
    fn set_step_status(
        &self,
        run_id: &str,
        step_id: &str,
        status: StepStatus,
        note: Option<&str>,
    ) -> Result<()> {
        let step = step_id;
        self.apply(run_id, &[Change::SetStepStatus { step, status, note }])
    }

    /// Make a finished step pending again for a re-run (`wfhost retry`):
    /// its output and error are cleared, its attempt history kept.
    fn reset_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        let step = step_id;
        self.apply(run_id, &[Change::ResetStep { step, reason }])
    }
}

/// What agent steps need: recordings of model replies and tool results
/// (replayed after a crash) and tool calls held for a person's approval.
/// An agent also reads its run and steps, blocks the run while a call
/// waits, and writes audit events: hence the supertraits.
pub trait AgentStore: RunStore + StepStore + EventLog {
    /// Record a model reply, a tool result ... of an agent step; returns
    /// its sequence number.
    fn append_agent_record(&self, record: &NewAgentRecord<'_>) -> Result<i64>;

    /// Recordings of a run, oldest first, optionally of one step and/or
    /// one agent.
    fn agent_records(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentRecord>>;

    /// The approval of this call (by [`super::call_hash`]) asked by this
    /// attempt and iteration of the step, whatever its state. An answer
    /// given to another attempt (before a `wfhost retry`, a crash, or in an
    /// earlier loop iteration) is not found: the call is asked again.
    fn find_approval(
        &self,
        run_id: &str,
        step_id: &str,
        attempt_and_iteration: (u32, u32),
        call_hash: &str,
    ) -> Result<Option<ApprovalRecord>>;

    /// Hold a call for a person: a pending approval and its
    /// `approval_requested` event, in one transaction. Approvals of the
    /// same step still pending from another attempt or iteration are
    /// closed as denied in the same transaction, naming the new one.
    fn create_approval(&self, new: &NewApproval<'_>) -> Result<ApprovalRecord>;

    /// One approval by id.
    fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>>;

    /// Approvals of one run (or of every run), oldest first; only pending
    /// ones unless `all`.
    fn approvals(&self, run_id: Option<&str>, all: bool) -> Result<Vec<ApprovalRecord>>;

    /// How many approvals of a run are still pending.
    fn pending_approvals(&self, run_id: &str) -> Result<u32>;

    /// Answer a pending approval of `run_id` (from any process). The outer
    /// error is the store's; the inner one a user mistake (no such
    /// approval, already answered).
    fn answer_approval(
        &self,
        run_id: &str,
        id: i64,
        approved: bool,
        note: Option<&str>,
    ) -> Result<std::result::Result<ApprovalRecord, String>>;
}

/// Bearer tokens of the API server (`wfhost token create`): only their
/// SHA-256 is kept.
pub trait TokenStore: Send + Sync {
    /// Keep the hash of a new token under a name.
    fn add_token(&self, name: &str, sha256: &str) -> Result<()>;

    /// How many tokens there are.
    fn token_count(&self) -> Result<u64>;

    /// Whether a token with this hash exists.
    fn token_known(&self, sha256: &str) -> Result<bool>;
}

/// What people and steps leave on a run besides its steps: artifacts
/// (files kept from a step) and comments.
pub trait NoteStore: Send + Sync {
    /// Record an artifact of a step (its file is already in the run
    /// folder); returns its id.
    fn add_artifact(
        &self,
        run_id: &str,
        step: &str,
        name: &str,
        size: u64,
        sha256: &str,
        media_type: &str,
    ) -> Result<i64>;

    /// Whether this store keeps artifacts' content itself (PostgreSQL,
    /// shared by every machine) rather than leaving it in the run folder
    /// of the machine that ran the step (SQLite).
    fn keeps_artifact_content(&self) -> bool {
        false
    }

    /// Keep the content of an artifact (see
    /// [`NoteStore::keeps_artifact_content`]); a no-op where the run folder
    /// keeps it.
    fn put_artifact_content(&self, _run_id: &str, _sha256: &str, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }

    /// The content of an artifact kept by the store, if it keeps it.
    fn artifact_content(&self, _run_id: &str, _sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// A run's artifacts (of one step, when given), oldest first.
    fn artifacts(&self, run_id: &str, step: Option<&str>) -> Result<Vec<ArtifactRecord>>;

    /// Add a comment to a run (or one of its steps); returns it.
    fn add_comment(
        &self,
        run_id: &str,
        step: Option<&str>,
        author: &str,
        text: &str,
    ) -> Result<CommentRecord>;

    /// A run's comments (all of them, the steps' included), oldest first.
    fn comments(&self, run_id: &str) -> Result<Vec<CommentRecord>>;
}

/// Every role: what the engine (and the CLI on top of it) holds, as
/// `Arc<dyn EngineStore>`; it hands agents the same store as
/// `Arc<dyn AgentStore>`.
pub trait EngineStore: AgentStore + LeaseStore + CheckpointStore + TokenStore + NoteStore {}

impl<T: AgentStore + LeaseStore + CheckpointStore + TokenStore + NoteStore> EngineStore for T {}

#[cfg(test)]
mod tests {
    /// The seams a second backend implements name no SQLite type: of
    /// `store/`, only `store/sqlite/` uses the SQLite crate.
    #[test]
    fn only_the_sqlite_backend_names_sqlite_types() {
        let needle = concat!("rus", "qlite");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(!text.contains(needle), "{} names {needle}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} files in {}", dir.display());
    }
}
