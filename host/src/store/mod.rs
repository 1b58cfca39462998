//! Durable state in SQLite (WAL mode), plus a human-readable folder per run.
//!
//! Every state transition is written in one transaction together with its
//! event row before the engine takes the next action. The `runs/<id>/`
//! folder mirrors the journal for people: see [`files::RunFiles`].

mod agent;
pub mod files;
mod lease;
mod records;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use lease::LEASE_LOST;

pub use agent::{
    call_hash, AgentRecord, ApprovalRecord, ApprovalStatus, NewAgentRecord, NewApproval,
};
pub use files::RunFiles;
pub use records::{
    driver_alive, is_stale, EventRecord, RunRecord, RunStatus, StepRecord, StepStatus,
};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// This handle drove the run, but another process has since claimed
    /// it (this one was stopped or hung past its lease): nothing more is
    /// written, and the driver must stop.
    #[error(
        "this process lost its lease on the run: another process took it over while this one \
         was stopped or unresponsive; it stopped driving the run"
    )]
    LeaseLost,
    /// Reading or writing the run folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No run matches the given id or prefix.
    #[error("no run matches '{0}' (see `wfhost runs`)")]
    UnknownRun(String),
    /// A prefix matches more than one run.
    #[error("run id prefix '{prefix}' is ambiguous: matches {}", candidates.join(", "))]
    AmbiguousRun {
        /// The prefix given.
        prefix: String,
        /// Some of the runs it matches.
        candidates: Vec<String>,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        match &error {
            rusqlite::Error::SqliteFailure(_, Some(message)) if message == LEASE_LOST => {
                StoreError::LeaseLost
            }
            _ => StoreError::Sqlite(error),
        }
    }
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A new run, as handed to [`Store::create_run`].
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Fresh run id.
    pub id: &'a str,
    /// The workflow's `name`.
    pub workflow_name: &'a str,
    /// The workflow file as given on the command line.
    pub workflow_path: &'a str,
    /// Absolute directory of the workflow file.
    pub workflow_dir: &'a str,
    /// The workflow file's text: the pinned definition.
    pub definition: &'a str,
    /// The run's arguments, defaults applied.
    pub args: &'a Value,
    /// Step ids in file order.
    pub steps: &'a [&'a str],
}

/// How hard a committed transition is pushed to disk (`[store] durability`
/// in `config.toml`): SQLite's `synchronous` setting in WAL mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a crash of the process (even
    /// `kill -9`); after a power loss or kernel crash the last commits
    /// before it may be rolled back, but the database stays consistent.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk (fsync of the WAL)
    /// before the engine acts on it; it also survives a power loss.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// Handle on the SQLite database and run folders under one home directory.
///
/// Every write is an `IMMEDIATE` transaction: in WAL mode a deferred
/// transaction that reads and then writes fails with `SQLITE_BUSY_SNAPSHOT`
/// when another process wrote in between, which no busy timeout can wait out.
pub struct Store {
    home: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Open (creating if needed) the store under `home` (e.g. `.wfhost/`),
    /// with the default [`Durability`].
    pub fn open(home: &Path) -> Result<Store> {
        Store::open_with(home, Durability::default())
    }

    /// Open (creating if needed) the store under `home` with `durability`.
    pub fn open_with(home: &Path, durability: Durability) -> Result<Store> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::Io {
            path: home.to_path_buf(),
            source,
        })?;
        // Absolute, so paths handed to child processes (which run in the
        // workflow's directory) still point here.
        let home = std::fs::canonicalize(home).map_err(|source| StoreError::Io {
            path: home.to_path_buf(),
            source,
        })?;
        let mut conn = Connection::open(home.join("wfhost.db"))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Switching a fresh database to WAL takes an exclusive lock that
        // the busy timeout does not always wait for when several processes
        // open it at once; retry that setup for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match initialise(&mut conn) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        }
        conn.pragma_update(None, "synchronous", durability.pragma())?;
        Ok(Store {
            home,
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for tests that inspect tables directly.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }

    /// The home directory this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The human-readable folder of a run.
    pub fn run_files(&self, run_id: &str) -> RunFiles {
        RunFiles::new(self.home.join("runs").join(run_id))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Record a new run (status `pending`) and its steps in one transaction.
    pub fn create_run(&self, run: &NewRun<'_>) -> Result<()> {
        let now = now();
        let hash = definition_hash(run.definition);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO runs (id, workflow_name, workflow_path, workflow_dir, definition,
                               definition_hash, args, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.id,
                run.workflow_name,
                run.workflow_path,
                run.workflow_dir,
                run.definition,
                hash,
                run.args.to_string(),
                RunStatus::Pending.as_str(),
                now
            ],
        )?;
        for (position, step) in run.steps.iter().enumerate() {
            tx.execute(
                "INSERT INTO steps (run_id, step_id, position, status) VALUES (?1, ?2, ?3, ?4)",
                params![run.id, step, position as i64, StepStatus::Pending.as_str()],
            )?;
        }
        let data = serde_json::json!({ "workflow": run.workflow_name, "definition_hash": hash });
        insert_event(&tx, run.id, None, &now, "run_created", &data)?;
        tx.commit()?;
        drop(conn);
        mirrored(run.id, self.run_files(run.id).init());
        self.mirror_event(run.id, None, &now, "run_created", &data)
    }

    /// Move a run to a new status (and stamp start/finish times).
    pub fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match status {
            RunStatus::Running => tx.execute(
                "UPDATE runs SET status = ?2, started_at = COALESCE(started_at, ?3) WHERE id = ?1",
                params![run_id, status.as_str(), now],
            )?,
            _ if status.is_final() => tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                params![run_id, status.as_str(), error, now],
            )?,
            _ => tx.execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1",
                params![run_id, status.as_str()],
            )?,
        };
        let data = serde_json::json!({ "status": status.as_str(), "error": error });
        insert_event(&tx, run_id, None, &now, "run_status", &data)?;
        tx.commit()?;
        drop(conn);
        self.mirror_event(run_id, None, &now, "run_status", &data)
    }

    /// Start attempt `attempt` of a step with the given rendered input.
    pub fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        input: &Value,
    ) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO step_attempts (run_id, step_id, attempt, status, started_at, input)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run_id,
                step_id,
                attempt,
                StepStatus::Running.as_str(),
                now,
                input.to_string()
            ],
        )?;
        tx.execute(
            "UPDATE steps SET status = ?3, attempts = MAX(attempts, ?4), started_at = COALESCE(started_at, ?5),
                              finished_at = NULL, error = NULL, next_attempt_at = NULL
             WHERE run_id = ?1 AND step_id = ?2",
            params![run_id, step_id, StepStatus::Running.as_str(), attempt, now],
        )?;
        let data = serde_json::json!({ "attempt": attempt });
        insert_event(&tx, run_id, Some(step_id), &now, "step_started", &data)?;
        tx.commit()?;
        drop(conn);
        let files = self.run_files(run_id);
        mirrored(run_id, files.write_step_json(step_id, "input.json", input));
        self.mirror_event(run_id, Some(step_id), &now, "step_started", &data)
    }

    /// Finish an attempt: `Ok(output)` completes the step, `Err(message)`
    /// fails it (the status says which kind of failure).
    pub fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        status: StepStatus,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()> {
        self.apply(
            run_id,
            &[Change::FinishAttempt {
                step: step_id,
                attempt,
                status,
                outcome,
            }],
        )
    }

    /// Finish one item of a `for_each` step (its own attempt row); the
    /// step itself stays running.
    pub fn finish_item(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        index: usize,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()> {
        let now = now();
        let (status, output, error) = match outcome {
            Ok(output) => (StepStatus::Completed, Some(output.to_string()), None),
            Err(message) => (StepStatus::Failed, None, Some(message.to_string())),
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE step_attempts SET status = ?4, finished_at = ?5, output = ?6, error = ?7
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            params![
                run_id,
                step_id,
                attempt,
                status.as_str(),
                now,
                output,
                error
            ],
        )?;
        let kind = if error.is_none() {
            "item_completed"
        } else {
            "item_failed"
        };
        let data = serde_json::json!({ "attempt": attempt, "index": index, "error": error });
        insert_event(&tx, run_id, Some(step_id), &now, kind, &data)?;
        tx.commit()?;
        drop(conn);
        self.mirror_event(run_id, Some(step_id), &now, kind, &data)
    }

    /// Complete a step whose attempts were recorded item by item.
    pub fn complete_step(&self, run_id: &str, step_id: &str, output: &Value) -> Result<()> {
        self.apply(
            run_id,
            &[Change::CompleteStep {
                step: step_id,
                output,
            }],
        )
    }

    /// How many times a step has looped back (`step_loop` events).
    pub fn loops(&self, run_id: &str, step_id: &str) -> Result<u32> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND step_id = ?2 AND kind = 'step_loop'",
            params![run_id, step_id],
            |row| row.get(0),
        )?)
    }

    /// Record that a step will not run, and why.
    pub fn skip_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        self.apply(
            run_id,
            &[Change::SkipStep {
                step: step_id,
                reason,
            }],
        )
    }

    /// Take over driving a run: allowed when nobody drives it (any status
    /// but a `running` one with a fresh heartbeat from another process).
    /// Returns false when another live process drives it.
    pub fn claim_run(&self, run_id: &str, pid: u32) -> Result<bool> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (status, heartbeat, owner): (String, Option<String>, Option<i64>) = tx.query_row(
            "SELECT status, heartbeat_at, driver_pid FROM runs WHERE id = ?1",
            [run_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        // A run `blocked` on an agent's approval is still driven: its
        // driver waits for the answer and keeps beating.
        let waiting_for_approval = status == RunStatus::Blocked.as_str()
            && tx.query_row(
                "SELECT COUNT(*) FROM approvals WHERE run_id = ?1 AND status = 'pending'",
                [run_id],
                |row| row.get::<_, i64>(0),
            )? > 0;
        let driven_elsewhere = (status == RunStatus::Running.as_str() || waiting_for_approval)
            && !records::is_stale(heartbeat.as_deref())
            && records::driver_alive(owner)
            && owner != Some(i64::from(pid));
        if driven_elsewhere {
            return Ok(false);
        }
        // A new lease: this handle's earlier one (if any) is given up
        // first, so its own fence does not stop the claim.
        let token = lease::new_token();
        tx.execute("DELETE FROM held_leases WHERE run_id = ?1", [run_id])?;
        tx.execute(
            "UPDATE runs SET status = ?2, driver_pid = ?3, heartbeat_at = ?4, request = NULL,
                             started_at = COALESCE(started_at, ?4), finished_at = NULL, error = NULL,
                             lease_owner = ?5
             WHERE id = ?1",
            params![run_id, RunStatus::Running.as_str(), i64::from(pid), now, token],
        )?;
        tx.execute(
            "INSERT INTO held_leases (run_id, token) VALUES (?1, ?2)",
            params![run_id, token],
        )?;
        let data = serde_json::json!({ "status": "running", "previous": status, "pid": pid });
        insert_event(&tx, run_id, None, &now, "run_claimed", &data)?;
        tx.commit()?;
        drop(conn);
        self.mirror_event(run_id, None, &now, "run_claimed", &data)
            .map(|_| true)
    }

    /// The driving process is alive: renews its lease. Fails with
    /// [`StoreError::LeaseLost`] once another process has claimed the run.
    pub fn heartbeat(&self, run_id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
            params![run_id, now()],
        )?;
        Ok(())
    }

    /// Ask the driving process to `pause` or `cancel` (or clear with `None`).
    pub fn set_request(&self, run_id: &str, request: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET request = ?2 WHERE id = ?1",
            params![run_id, request],
        )?;
        if let Some(request) = request {
            let data = serde_json::json!({ "request": request });
            self.append_event(run_id, None, "run_requested", &data)?;
        }
        Ok(())
    }

    /// The pending control request of a run, if any.
    pub fn request(&self, run_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT request FROM runs WHERE id = ?1", [run_id], |row| {
                row.get(0)
            })?)
    }

    /// Record how many attempts each step's retry policy allows.
    pub fn set_max_attempts(&self, run_id: &str, limits: &[(&str, u32)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (step, max) in limits {
            tx.execute(
                "UPDATE steps SET max_attempts = ?3 WHERE run_id = ?1 AND step_id = ?2",
                params![run_id, step, max],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// An attempt failed and another is due at `next_at`.
    pub fn schedule_retry(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        next_at: &str,
    ) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE step_attempts SET status = ?4, finished_at = ?5, error = ?6
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            params![
                run_id,
                step_id,
                attempt,
                StepStatus::Failed.as_str(),
                now,
                error
            ],
        )?;
        tx.execute(
            "UPDATE steps SET status = ?3, error = ?4, next_attempt_at = ?5 WHERE run_id = ?1 AND step_id = ?2",
            params![run_id, step_id, StepStatus::Retrying.as_str(), error, next_at],
        )?;
        let data =
            serde_json::json!({ "attempt": attempt, "error": error, "next_attempt_at": next_at });
        insert_event(
            &tx,
            run_id,
            Some(step_id),
            &now,
            "step_retry_scheduled",
            &data,
        )?;
        tx.commit()?;
        drop(conn);
        self.mirror_event(run_id, Some(step_id), &now, "step_retry_scheduled", &data)
    }

    /// Move a step to `status` outside the normal attempt flow (interrupted,
    /// cancelled, reset to pending for a re-run), noting why.
    pub fn set_step_status(
        &self,
        run_id: &str,
        step_id: &str,
        status: StepStatus,
        note: Option<&str>,
    ) -> Result<()> {
        self.apply(
            run_id,
            &[Change::SetStepStatus {
                step: step_id,
                status,
                note,
            }],
        )
    }

    /// Make a finished step pending again for a re-run (`wfhost retry`):
    /// its output and error are cleared, its attempt history kept.
    pub fn reset_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        self.apply(
            run_id,
            &[Change::ResetStep {
                step: step_id,
                reason,
            }],
        )
    }

    /// Make several changes to a run's steps in one transaction: a
    /// decision made of several parts (a loop going back, a failure
    /// escalated to a skip) is recorded whole or not at all.
    pub fn apply(&self, run_id: &str, changes: &[Change<'_>]) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            events.push(change.write(&tx, run_id, &now)?);
        }
        tx.commit()?;
        drop(conn);
        for (change, (step, kind, data)) in changes.iter().zip(&events) {
            if let Some(output) = change.output() {
                let written = self
                    .run_files(run_id)
                    .write_step_json(step, "output.json", output);
                mirrored(run_id, written);
            }
            self.mirror_event(run_id, Some(step), &now, kind, data)?;
        }
        Ok(())
    }

    /// Pin a new definition to a run (`wfhost resume --upgrade`): steps are
    /// mapped by id; `steps` lists the new definition's ids in order, rows
    /// of ids that are gone are removed (their attempts stay in history).
    pub fn upgrade_definition(
        &self,
        run_id: &str,
        definition: &str,
        steps: &[&str],
        summary: &Value,
    ) -> Result<()> {
        let now = now();
        let hash = definition_hash(definition);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE runs SET definition = ?2, definition_hash = ?3 WHERE id = ?1",
            params![run_id, definition, hash],
        )?;
        let existing: Vec<String> = {
            let mut stmt = tx.prepare("SELECT step_id FROM steps WHERE run_id = ?1")?;
            let ids = stmt
                .query_map([run_id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        for id in &existing {
            if !steps.contains(&id.as_str()) {
                tx.execute(
                    "DELETE FROM steps WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, id],
                )?;
            }
        }
        for (position, id) in steps.iter().enumerate() {
            if existing.iter().any(|e| e == id) {
                tx.execute(
                    "UPDATE steps SET position = ?3 WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, id, position as i64],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO steps (run_id, step_id, position, status) VALUES (?1, ?2, ?3, 'pending')",
                    params![run_id, id, position as i64],
                )?;
            }
        }
        let data = serde_json::json!({ "definition_hash": hash, "changes": summary });
        insert_event(&tx, run_id, None, &now, "run_upgraded", &data)?;
        tx.commit()?;
        drop(conn);
        self.mirror_event(run_id, None, &now, "run_upgraded", &data)
    }

    /// Events of a run after sequence number `after`, oldest first.
    pub fn events_after(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, step_id, at, kind, data FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let events = stmt
            .query_map(params![run_id, after], EventRecord::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(events)
    }

    /// Checkpoints of a run: the step transitions (completed, failed,
    /// skipped), each identified by its event sequence number.
    pub fn checkpoints(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        Ok(self
            .events(run_id, None)?
            .into_iter()
            .filter(|e| {
                matches!(
                    e.kind.as_str(),
                    "step_completed" | "step_failed" | "step_skipped"
                )
            })
            .collect())
    }

    /// The run a checkpoint (event sequence number) belongs to.
    pub fn checkpoint_run(&self, seq: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT run_id FROM events WHERE seq = ?1", [seq], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// Delete finished runs created before `cutoff` (RFC 3339), with their
    /// folders; returns the ids removed.
    pub fn prune(&self, cutoff: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id FROM runs WHERE created_at < ?1
                 AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')",
            )?;
            let ids = stmt
                .query_map([cutoff], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in &ids {
            for table in [
                "agent_records",
                "approvals",
                "events",
                "step_attempts",
                "steps",
                "runs",
            ] {
                let column = if table == "runs" { "id" } else { "run_id" };
                tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [id])?;
            }
        }
        tx.commit()?;
        drop(conn);
        for id in &ids {
            let dir = self.home.join("runs").join(id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|source| StoreError::Io { path: dir, source })?;
            }
        }
        Ok(ids)
    }

    /// Append a free-form event (log line, progress ...) to the journal.
    pub fn append_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        kind: &str,
        data: &Value,
    ) -> Result<()> {
        let now = now();
        insert_event(&self.conn(), run_id, step_id, &now, kind, data)?;
        self.mirror_event(run_id, step_id, &now, kind, data)
    }

    /// Mirror a committed event into the run folder. Never fails: the
    /// database is the truth, the folder a copy for people (see
    /// [`mirrored`]).
    fn mirror_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        at: &str,
        kind: &str,
        data: &Value,
    ) -> Result<()> {
        crash_point(kind);
        let line = serde_json::json!({ "at": at, "step": step_id, "kind": kind, "data": data });
        mirrored(run_id, self.run_files(run_id).append_event(step_id, &line));
        Ok(())
    }

    /// Resolve a full run id or a unique prefix of one.
    pub fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY created_at DESC LIMIT 6",
        )?;
        let ids: Vec<String> = stmt
            .query_map([prefix], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        match ids.as_slice() {
            [] => Err(StoreError::UnknownRun(prefix.to_string())),
            [only] => Ok(only.clone()),
            _ if ids.iter().any(|id| id == prefix) => Ok(prefix.to_string()),
            _ => Err(StoreError::AmbiguousRun {
                prefix: prefix.to_string(),
                candidates: ids,
            }),
        }
    }

    /// One run by exact id.
    pub fn run(&self, run_id: &str) -> Result<RunRecord> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {} FROM runs WHERE id = ?1", RunRecord::COLUMNS),
            [run_id],
            RunRecord::from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::UnknownRun(run_id.to_string()))
    }

    /// All runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM runs ORDER BY created_at DESC, id",
            RunRecord::COLUMNS
        ))?;
        let runs = stmt
            .query_map([], RunRecord::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(runs)
    }

    /// The steps of a run in file order, with their latest state.
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM steps WHERE run_id = ?1 ORDER BY position",
            StepRecord::COLUMNS
        ))?;
        let steps = stmt
            .query_map([run_id], StepRecord::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(steps)
    }

    /// Events of a run (optionally of one step), oldest first.
    /// The data of the run's latest event of `kind`, if any.
    pub fn latest_event(&self, run_id: &str, kind: &str) -> Result<Option<Value>> {
        let conn = self.conn();
        let data: Option<String> = conn
            .query_row(
                "SELECT data FROM events WHERE run_id = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1",
                params![run_id, kind],
                |row| row.get(0),
            )
            .optional()?;
        Ok(data.map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Every event of a run (or of one of its steps), in order.
    pub fn events(&self, run_id: &str, step_id: Option<&str>) -> Result<Vec<EventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, step_id, at, kind, data FROM events
             WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) ORDER BY seq",
        )?;
        let events = stmt
            .query_map(params![run_id, step_id], EventRecord::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(events)
    }
}

/// WAL mode, pragmas and migrations of a freshly opened connection.
fn initialise(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    schema::migrate(conn)?;
    lease::install(conn)
}

/// One change to a step of a run, for [`Store::apply`].
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Finish an attempt (see [`Store::finish_attempt`]).
    FinishAttempt {
        /// Step id.
        step: &'a str,
        /// Attempt number.
        attempt: u32,
        /// Its final status.
        status: StepStatus,
        /// The output, or the error message.
        outcome: std::result::Result<&'a Value, &'a str>,
    },
    /// Complete a step recorded item by item (see [`Store::complete_step`]).
    CompleteStep {
        /// Step id.
        step: &'a str,
        /// The step's output.
        output: &'a Value,
    },
    /// Skip a step (see [`Store::skip_step`]).
    SkipStep {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// Set a step's status (see [`Store::set_step_status`]).
    SetStepStatus {
        /// Step id.
        step: &'a str,
        /// The new status.
        status: StepStatus,
        /// Why, if said.
        note: Option<&'a str>,
    },
    /// Make a step pending again (see [`Store::reset_step`]).
    ResetStep {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// An event of a step.
    Event {
        /// Step id.
        step: &'a str,
        /// Event kind.
        kind: &'a str,
        /// Event data.
        data: &'a Value,
    },
}

impl Change<'_> {
    /// The output this change records, for the run folder.
    fn output(&self) -> Option<&Value> {
        match self {
            Change::FinishAttempt {
                outcome: Ok(output),
                ..
            }
            | Change::CompleteStep { output, .. } => Some(output),
            _ => None,
        }
    }

    /// Write the change inside `tx`; returns its event (step, kind, data).
    fn write(
        &self,
        tx: &rusqlite::Transaction<'_>,
        run_id: &str,
        now: &str,
    ) -> rusqlite::Result<(String, String, Value)> {
        let (step, kind, data) = match *self {
            Change::FinishAttempt {
                step,
                attempt,
                status,
                outcome,
            } => {
                let (output, error) = match outcome {
                    Ok(output) => (Some(output.to_string()), None),
                    Err(message) => (None, Some(message.to_string())),
                };
                tx.execute(
                    "UPDATE step_attempts SET status = ?4, finished_at = ?5, output = ?6, error = ?7
                     WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
                    params![run_id, step, attempt, status.as_str(), now, output, error],
                )?;
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?4, output = ?5, error = ?6
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, status.as_str(), now, output, error],
                )?;
                let kind = if status == StepStatus::Completed {
                    "step_completed"
                } else {
                    "step_failed"
                };
                let data = serde_json::json!({ "attempt": attempt, "status": status.as_str(), "error": error });
                (step, kind.to_string(), data)
            }
            Change::CompleteStep { step, output } => {
                tx.execute(
                    "UPDATE steps SET status = 'completed', finished_at = ?3, output = ?4, error = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, now, output.to_string()],
                )?;
                let data = serde_json::json!({ "status": "completed" });
                (step, "step_completed".to_string(), data)
            }
            Change::SkipStep { step, reason } => {
                tx.execute(
                    "UPDATE steps SET status = ?3, finished_at = ?4, error = ?5 WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, StepStatus::Skipped.as_str(), now, reason],
                )?;
                let data = serde_json::json!({ "reason": reason });
                (step, "step_skipped".to_string(), data)
            }
            Change::SetStepStatus { step, status, note } => {
                let finished =
                    matches!(status, StepStatus::Cancelled | StepStatus::Skipped).then_some(now);
                tx.execute(
                    "UPDATE steps SET status = ?3, error = ?4, finished_at = ?5, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step, status.as_str(), note, finished],
                )?;
                if matches!(status, StepStatus::Interrupted | StepStatus::Cancelled) {
                    tx.execute(
                        "UPDATE step_attempts SET status = ?3, finished_at = ?4, error = ?5
                         WHERE run_id = ?1 AND step_id = ?2 AND status = 'running'",
                        params![run_id, step, status.as_str(), now, note],
                    )?;
                }
                let data = serde_json::json!({ "status": status.as_str(), "note": note });
                (step, format!("step_{}", status.as_str()), data)
            }
            Change::ResetStep { step, reason } => {
                tx.execute(
                    "UPDATE steps SET status = 'pending', started_at = NULL, finished_at = NULL, output = NULL,
                                      error = NULL, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, step],
                )?;
                let data = serde_json::json!({ "reason": reason });
                (step, "step_reset".to_string(), data)
            }
            Change::Event { step, kind, data } => (step, kind.to_string(), data.clone()),
        };
        insert_event(tx, run_id, Some(step), now, &kind, &data)?;
        Ok((step.to_string(), kind, data))
    }
}

/// Fault injection for crash tests: with `WFHOST_TEST_CRASH_AFTER=<event
/// kind>` the process kills itself (SIGKILL, as `kill -9` would) right
/// after committing the first transaction that records such an event.
fn crash_point(kind: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("WFHOST_TEST_CRASH_AFTER").ok());
    if point.as_deref() == Some(kind) {
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Report a failed write of the run folder without failing the caller:
/// it happens after the transition was committed, and a full disk or a
/// removed folder must not stop the run (the store is the truth).
fn mirrored(run_id: &str, result: Result<()>) {
    if let Err(error) = result {
        tracing::warn!("run {run_id}: the run folder could not be updated: {error}");
    }
}

fn insert_event(
    conn: &Connection,
    run_id: &str,
    step_id: Option<&str>,
    at: &str,
    kind: &str,
    data: &Value,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO events (run_id, step_id, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![run_id, step_id, at, kind, data.to_string()],
    )?;
    Ok(())
}

/// The current time as stored: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// SHA-256 of a definition snapshot, hex encoded.
pub fn definition_hash(definition: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(definition.as_bytes()))
}

/// A fresh run id: 12 lowercase hex characters, random.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("home")).unwrap();
        (dir, store)
    }

    fn create(store: &Store, id: &str) {
        store
            .create_run(&NewRun {
                id,
                workflow_name: "wf",
                workflow_path: "wf.yaml",
                workflow_dir: "/tmp",
                definition: "name: wf\n",
                args: &json!({"x": 1}),
                steps: &["a", "b"],
            })
            .unwrap();
    }

    #[test]
    fn a_driver_that_lost_its_lease_can_write_nothing_more() {
        let (dir, first) = store();
        create(&first, "run1");
        assert!(first.claim_run("run1", 1).unwrap());
        first.start_attempt("run1", "a", 1, &json!({})).unwrap();
        first.heartbeat("run1").unwrap();
        let second = Store::open(&dir.path().join("home")).unwrap();
        // pid 1 is alive and the heartbeat fresh: the run is held.
        assert!(!second.claim_run("run1", 2).unwrap());
        // The holder stops beating (SIGSTOP): its lease runs out.
        second
            .conn()
            .execute(
                "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = 'run1'",
                [],
            )
            .unwrap();
        assert!(second.claim_run("run1", 2).unwrap());
        second.start_attempt("run1", "a", 2, &json!({})).unwrap();

        // Every write of the old holder fails, and none is committed.
        let lost = |result: Result<()>| {
            assert!(matches!(result, Err(StoreError::LeaseLost)), "{result:?}")
        };
        lost(first.heartbeat("run1"));
        lost(first.start_attempt("run1", "b", 1, &json!({})));
        lost(first.finish_attempt(
            "run1",
            "a",
            1,
            StepStatus::Completed,
            Ok(&json!({"late": true})),
        ));
        lost(first.set_run_status("run1", RunStatus::Failed, Some("late")));
        lost(first.append_event("run1", None, "log", &json!({})));
        let steps = second.steps("run1").unwrap();
        assert_eq!(steps[0].status, StepStatus::Running);
        assert_eq!(steps[0].attempts, 2);
        assert_eq!(steps[1].status, StepStatus::Pending);
        assert_eq!(second.run("run1").unwrap().status, RunStatus::Running);
        // The new holder goes on; other runs of the old handle are unaffected.
        second
            .finish_attempt("run1", "a", 2, StepStatus::Completed, Ok(&json!({})))
            .unwrap();
        create(&first, "run2");
        first.start_attempt("run2", "a", 1, &json!({})).unwrap();
        // Someone without a lease (a `wfhost pause` from another terminal)
        // may still ask the holder to stop.
        let third = Store::open(&dir.path().join("home")).unwrap();
        third.set_request("run1", Some("pause")).unwrap();
    }

    #[test]
    fn a_run_and_its_attempts_round_trip() {
        let (_dir, store) = store();
        create(&store, "abc123");
        let run = store.run("abc123").unwrap();
        assert_eq!(run.status, RunStatus::Pending);
        assert_eq!(run.definition, "name: wf\n");
        assert_eq!(run.definition_hash, definition_hash("name: wf\n"));
        assert_eq!(run.args, json!({"x": 1}));

        store
            .set_run_status("abc123", RunStatus::Running, None)
            .unwrap();
        store
            .start_attempt("abc123", "a", 1, &json!({"config": {}}))
            .unwrap();
        let steps = store.steps("abc123").unwrap();
        assert_eq!(steps[0].status, StepStatus::Running);
        assert_eq!(steps[0].attempts, 1);
        store
            .finish_attempt(
                "abc123",
                "a",
                1,
                StepStatus::Completed,
                Ok(&json!({"n": 5})),
            )
            .unwrap();
        store.skip_step("abc123", "b", "because").unwrap();
        store
            .set_run_status("abc123", RunStatus::Completed, None)
            .unwrap();

        let steps = store.steps("abc123").unwrap();
        assert_eq!(steps[0].output, Some(json!({"n": 5})));
        assert!(steps[0].started_at.is_some() && steps[0].finished_at.is_some());
        assert_eq!(steps[1].status, StepStatus::Skipped);
        assert_eq!(steps[1].error.as_deref(), Some("because"));
        let run = store.run("abc123").unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        assert!(run.finished_at.is_some());

        let kinds: Vec<String> = store
            .events("abc123", None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "run_created",
                "run_status",
                "step_started",
                "step_completed",
                "step_skipped",
                "run_status"
            ]
        );
        assert_eq!(store.events("abc123", Some("a")).unwrap().len(), 2);
    }

    #[test]
    fn the_run_folder_mirrors_the_journal() {
        let (_dir, store) = store();
        create(&store, "r1");
        store
            .start_attempt("r1", "a", 1, &json!({"in": true}))
            .unwrap();
        store
            .append_event("r1", Some("a"), "log", &json!({"message": "hi"}))
            .unwrap();
        store
            .finish_attempt("r1", "a", 1, StepStatus::Failed, Err("it broke"))
            .unwrap();
        let files = store.run_files("r1");
        let input = std::fs::read_to_string(files.step_dir("a").join("input.json")).unwrap();
        assert!(input.contains("\"in\": true"));
        let events = std::fs::read_to_string(files.step_dir("a").join("events.jsonl")).unwrap();
        assert_eq!(events.lines().count(), 3);
        assert!(events.contains("it broke"));
        assert!(
            !files.step_dir("a").join("output.json").exists(),
            "no output for a failure"
        );
        let all = std::fs::read_to_string(files.dir().join("events.jsonl")).unwrap();
        assert_eq!(all.lines().count(), 4, "run_created + the step's three");
    }

    #[test]
    fn run_ids_resolve_by_unique_prefix() {
        let (_dir, store) = store();
        create(&store, "aa11");
        create(&store, "aa22");
        create(&store, "bb33");
        assert_eq!(store.resolve_run_id("b").unwrap(), "bb33");
        assert_eq!(store.resolve_run_id("aa2").unwrap(), "aa22");
        let ambiguous = store.resolve_run_id("aa").unwrap_err().to_string();
        assert!(
            ambiguous.contains("ambiguous")
                && ambiguous.contains("aa11")
                && ambiguous.contains("aa22")
        );
        let unknown = store.resolve_run_id("zz").unwrap_err().to_string();
        assert_eq!(unknown, "no run matches 'zz' (see `wfhost runs`)");
        assert_eq!(store.runs().unwrap().len(), 3);
    }

    #[test]
    fn durability_sets_sqlite_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let store = Store::open_with(dir.path(), durability).unwrap();
            let level: i64 = store
                .conn()
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(level, expected, "{durability:?}");
        }
    }

    #[test]
    fn reopening_keeps_data_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            create(&store, "keep");
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.run("keep").unwrap().workflow, "wf");
        let mode: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn run_ids_are_fresh() {
        let a = new_run_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, new_run_id());
    }
}
