//! Durable state in SQLite (WAL mode), plus a human-readable folder per run.
//!
//! Every state transition is written in one transaction together with its
//! event row before the engine takes the next action. The `runs/<id>/`
//! folder mirrors the journal for people: see [`files::RunFiles`].
//!
//! `Store`'s methods are grouped by job: runs and their lease (`runs`),
//! steps and attempts (`steps`), several step changes in one transaction
//! (`changes`), the journal (`events`), agent transcripts and approvals
//! (`agent`).

mod agent;
mod changes;
mod events;
pub mod files;
mod lease;
mod records;
mod runs;
mod schema;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;

use lease::LEASE_LOST;

pub use agent::{
    call_hash, AgentRecord, ApprovalRecord, ApprovalStatus, NewAgentRecord, NewApproval,
};
pub use changes::Change;
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
}

/// WAL mode, pragmas and migrations of a freshly opened connection.
fn initialise(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    schema::migrate(conn)?;
    lease::install(conn)
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
        assert!(!first.holds_lease("run1").unwrap());
        assert!(second.holds_lease("run1").unwrap());
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
