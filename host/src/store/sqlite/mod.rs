//! The store in SQLite (WAL mode): [`SqliteStore`] implements every role
//! trait of [`crate::store::roles`].
//!
//! Split by role: runs (`runs`), the lease and its fencing triggers
//! (`lease`), steps and attempts (`steps`), several step changes in one
//! transaction (`changes`), the journal (`events`), agent transcripts and
//! approvals (`agent`); `rows` reads records from rows, `schema` holds the
//! migrations. No SQL here writes run folders: committed transitions are
//! handed to the store's observers (see [`crate::store::StoreObserver`]).

mod agent;
mod changes;
mod events;
mod lease;
mod notes;
mod rows;
mod runs;
mod schema;
mod steps;
mod template;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::blocking::offload;
use super::held::HeldLeases;
use super::observer::{notify, Committed, StoreObserver};
use super::{Durability, Result, StoreError};
use lease::LEASE_LOST;

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        match &error {
            rusqlite::Error::SqliteFailure(_, Some(message)) if message == LEASE_LOST => {
                StoreError::LeaseLost
            }
            // Only SQLITE_BUSY: another connection holds the lock.
            // SQLITE_LOCKED is a conflict inside one connection, which the
            // message below would wrongly blame on another process.
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                StoreError::Busy(BUSY_TIMEOUT)
            }
            _ => StoreError::Database(Box::new(error)),
        }
    }
}

/// SQLite's `synchronous` setting for a durability.
fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    }
}

/// Handle on the SQLite database (`wfhost.db`) under one home directory.
///
/// Every write is an `IMMEDIATE` transaction: in WAL mode a deferred
/// transaction that reads and then writes fails with `SQLITE_BUSY_SNAPSHOT`
/// when another process wrote in between, which no busy timeout can wait out.
pub struct SqliteStore {
    home: PathBuf,
    conn: Mutex<Connection>,
    /// The leases this handle holds, which the schema's fencing triggers
    /// check every write against (see [`lease`]).
    held: HeldLeases,
    observers: Vec<Arc<dyn StoreObserver>>,
}

impl SqliteStore {
    #[cfg(test)]
    /// Open (creating if needed) the store under `home` (e.g. `.wfhost/`),
    /// with the default [`Durability`] and no observer.
    pub fn open(home: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(home, Durability::default())
    }

    /// Open (creating if needed) the store under `home` with `durability`
    /// and no observer.
    pub fn open_with(home: &Path, durability: Durability) -> Result<SqliteStore> {
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
        let db = home.join("wfhost.db");
        // A failed copy leaves nothing: SQLite then creates the database
        // (and reports what stops it).
        let _ = template::create_if_absent(&db, durability);
        let mut conn = Connection::open(&db)?;
        // Before anything is written: the fencing triggers call it.
        let held = HeldLeases::default();
        lease::register(&conn, held.clone())?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Every statement of a step's transitions stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        // Switching a fresh database to WAL takes an exclusive lock that
        // the busy timeout does not always wait for when several processes
        // open it at once; retry that setup for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match initialise(&mut conn, durability) {
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
        Ok(SqliteStore {
            home,
            conn: Mutex::new(conn),
            held,
            observers: Vec::new(),
        })
    }

    /// This store, telling `observer` about every commit (after it).
    pub fn observed_by(mut self, observer: Arc<dyn StoreObserver>) -> SqliteStore {
        self.observers.push(observer);
        self
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tell the observers about a committed change.
    fn notify(&self, change: &Committed<'_>) -> Result<()> {
        notify(&self.observers, change)
    }

    /// Tell the observers about a committed event, after the crash point
    /// of the crash tests (see [`crate::store::crash_point`]).
    fn committed_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        at: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<()> {
        super::crash_point(kind);
        self.notify(&Committed::Event {
            run_id,
            step_id,
            at,
            kind,
            data,
        })
    }
}

/// WAL mode, pragmas and migrations of a freshly opened connection.
fn initialise(conn: &mut Connection, durability: Durability) -> rusqlite::Result<()> {
    // Set before anything is written. Under `normal` the set-up itself
    // (switching a fresh database to WAL, its schema, migrations) is not
    // synced: what `normal` promises is that committed transactions survive
    // a crash of the process, which unsynced writes do (they are in the
    // kernel's cache), and a fresh home lost to a power cut has no runs.
    // A fresh home so takes no fsync at all (there were five, ~1 ms here and
    // far more on a slow disk).
    let setting_up = match durability {
        Durability::Normal => "OFF",
        Durability::Full => synchronous(durability),
    };
    conn.pragma_update(None, "synchronous", setting_up)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    if durability == Durability::Normal {
        // The last connection to close would checkpoint the WAL into the
        // database and sync both (~10 ms at the end of every command);
        // the next open, or SQLite's automatic checkpoint, does it instead.
        // What `synchronous = NORMAL` promises is unchanged: committed
        // transactions survive a crash of the process.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A database file is data, not code: SQL functions with side effects
    // are not run from its schema (views, triggers), and its schema cannot
    // be corrupted through writes to it.
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    schema::migrate(conn)?;
    if durability == Durability::Normal {
        begin_new_wal(conn)?;
    }
    conn.pragma_update(None, "synchronous", synchronous(durability))
}

/// Write the header of a new, empty WAL now, while syncing is off. SQLite
/// syncs a WAL's header (and, for a WAL it just created, the directory)
/// when it writes the first frame of a log: in a fresh home that was the
/// first run's first transaction, ~1 ms. The sync keeps an unsynced header
/// from being taken with older frames left in the file (sqlite.org ticket
/// ff5be73dee); an empty file has none, so a write that changes nothing
/// (the schema version set to itself) begins it here without one. A log
/// SQLite restarts over older frames later is synced as before.
fn begin_new_wal(conn: &mut Connection) -> rusqlite::Result<()> {
    let Some(wal) = conn.path().map(|db| format!("{db}-wal")) else {
        return Ok(());
    };
    let empty = std::fs::symlink_metadata(&wal).is_ok_and(|meta| meta.is_file() && meta.len() == 0);
    if !empty {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()
}

/// For the store's tests: make a run's heartbeat old, as if its driver had
/// stopped beating.
#[cfg(test)]
pub(crate) fn age_heartbeat(db: &Path, run_id: &str) {
    let conn = Connection::open(db).unwrap();
    lease::register(&conn, HeldLeases::default()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = ?1",
        [run_id],
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::*;
    use serde_json::json;

    /// A store under a fresh directory, mirrored into run folders as the
    /// app opens it.
    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("home")).unwrap();
        let mirror = Arc::new(RunFolders::new(store.home()));
        (dir, store.observed_by(mirror))
    }

    fn create(store: &SqliteStore, id: &str) {
        try_create(store, id).unwrap();
    }

    fn try_create(store: &SqliteStore, id: &str) -> Result<()> {
        store.create_run(&NewRun {
            id,
            workflow_name: "wf",
            workflow_path: "wf.yaml",
            workflow_dir: "/tmp",
            definition: "name: wf\n",
            args: &json!({"x": 1}),
            steps: &["a", "b"],
            triggered_by: None,
            priority: 0,
        })
    }

    /// A handle that claimed nothing writes any run; one that claimed a
    /// run holds its lease until another handle claims it, and then no
    /// write of it for that run commits.
    #[test]
    fn a_handle_is_fenced_from_its_first_claim() {
        let (dir, store) = store();
        create(&store, "r1");
        assert!(
            store.holds_lease("r1").unwrap(),
            "nothing claimed, nothing lost"
        );
        assert!(store.claim_run("r1", 1).unwrap());
        assert!(store.holds_lease("r1").unwrap());
        assert!(store.claim_run("r1", 1).unwrap(), "claiming again is fine");
        store.append_event("r1", None, "log", &json!({})).unwrap();

        age_heartbeat(&dir.path().join("home/wfhost.db"), "r1");
        let other = SqliteStore::open(&dir.path().join("home")).unwrap();
        assert!(
            other.claim_run("r1", 2).unwrap(),
            "a stale lease is taken over"
        );
        assert!(!store.holds_lease("r1").unwrap());
        let lost = store
            .append_event("r1", None, "log", &json!({}))
            .unwrap_err();
        assert!(matches!(lost, StoreError::LeaseLost), "{lost}");
        other.append_event("r1", None, "log", &json!({})).unwrap();
    }

    /// Attempt limits a run already has are not written again (every
    /// run sets them as it starts, mostly to the default of 1): no page
    /// of the log grows for them; a new limit is recorded.
    #[test]
    fn unchanged_attempt_limits_write_nothing() {
        let (dir, store) = store();
        create(&store, "r1");
        let log = dir.path().join("home/wfhost.db-wal");
        let before = std::fs::metadata(&log).unwrap().len();
        store.set_max_attempts("r1", &[("a", 1), ("b", 1)]).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
        store.set_max_attempts("r1", &[("a", 1), ("b", 4)]).unwrap();
        assert!(std::fs::metadata(&log).unwrap().len() > before);
        let limits: Vec<u32> = store
            .steps("r1")
            .unwrap()
            .iter()
            .map(|s| s.max_attempts)
            .collect();
        assert_eq!(limits, [1, 4]);
    }

    /// A connection without the lease function cannot write a fenced
    /// table: it fails closed rather than unfenced.
    #[test]
    fn a_connection_without_the_lease_function_cannot_write_runs() {
        let (dir, store) = store();
        create(&store, "r1");
        let raw = Connection::open(dir.path().join("home/wfhost.db")).unwrap();
        let error = raw
            .execute("UPDATE runs SET request = 'x' WHERE id = 'r1'", [])
            .unwrap_err();
        assert!(error.to_string().contains("wfhost_lease_lost"), "{error}");
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
        store.flush_observers();
        let files = store.run_files("r1");
        let all = std::fs::read_to_string(files.dir().join("events.jsonl")).unwrap();
        assert_eq!(all.lines().count(), 4, "run_created + the step's three");
        assert!(all.contains("it broke"), "{all}");
        assert!(!files.dir().join("steps").exists(), "no per-step files");
        assert_eq!(
            store.latest_inputs("r1").unwrap()["a"],
            json!({"in": true}),
            "the input is in the store (`wfhost export` writes it)"
        );
    }

    /// Notes every commit it is told about; fails when asked to.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<String>>,
        fail: bool,
    }

    impl StoreObserver for Recorder {
        fn name(&self) -> &'static str {
            "the test recorder"
        }

        fn committed(&self, change: &Committed<'_>) -> Result<()> {
            let note = match change {
                Committed::RunCreated { run_id } => format!("created {run_id}"),
                Committed::Event { kind, .. } => format!("event {kind}"),
                Committed::RunRemoved { run_id } => format!("removed {run_id}"),
            };
            self.seen.lock().unwrap().push(note);
            if self.fail {
                return Err(StoreError::UnknownRun("observer failure".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn observers_follow_each_commit_and_sql_alone_writes_no_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let store = SqliteStore::open(dir.path())
            .unwrap()
            .observed_by(recorder.clone());
        create(&store, "r1");
        store.start_attempt("r1", "a", 1, &json!({})).unwrap();
        store
            .finish_attempt("r1", "a", 1, StepStatus::Completed, Ok(&json!(1)))
            .unwrap();
        store
            .set_run_status("r1", RunStatus::Completed, None)
            .unwrap();
        assert_eq!(store.prune("9999-01-01T00:00:00Z").unwrap(), ["r1"]);
        assert_eq!(
            *recorder.seen.lock().unwrap(),
            [
                "created r1",
                "event run_created",
                "event step_started",
                "event step_completed",
                "event run_status",
                "removed r1",
            ]
        );
        assert!(
            !dir.path().join("runs").exists(),
            "the SQL code wrote no run folder"
        );
    }

    #[test]
    fn a_failing_observer_leaves_the_commit_standing_but_fails_a_prune() {
        let dir = tempfile::tempdir().unwrap();
        let failing = Arc::new(Recorder {
            fail: true,
            ..Recorder::default()
        });
        let store = SqliteStore::open(dir.path()).unwrap().observed_by(failing);
        create(&store, "r1");
        store.start_attempt("r1", "a", 1, &json!({})).unwrap();
        assert_eq!(store.steps("r1").unwrap()[0].status, StepStatus::Running);
        store
            .set_run_status("r1", RunStatus::Failed, Some("x"))
            .unwrap();
        let error = store.prune("9999-01-01T00:00:00Z").unwrap_err();
        assert!(error.to_string().contains("observer failure"), "{error}");
        assert!(store.runs().unwrap().is_empty(), "the rows are gone");
    }

    #[test]
    fn a_write_lock_held_elsewhere_past_the_wait_is_a_busy_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .conn()
            .busy_timeout(Duration::from_millis(50))
            .unwrap();
        let holder = Connection::open(dir.path().join("wfhost.db")).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = try_create(&store, "r1").unwrap_err();
        assert!(matches!(error, StoreError::Busy(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("another process holds its write lock"),
            "{error}"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        create(&store, "r1");
    }

    #[test]
    fn durability_sets_sqlite_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::Normal, 1), (Durability::Full, 2)] {
            let store = SqliteStore::open_with(dir.path(), durability).unwrap();
            let level: i64 = store
                .conn()
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(level, expected, "{durability:?}");
        }
    }

    #[test]
    fn under_normal_a_new_wal_is_begun_at_open_and_an_older_one_left_alone() {
        let wal_size = |dir: &Path| {
            std::fs::metadata(dir.join("wfhost.db-wal"))
                .map(|meta| meta.len())
                .unwrap_or(0)
        };
        let normal = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(normal.path(), Durability::Normal).unwrap();
        let begun = wal_size(normal.path());
        // The header (32 bytes) and one frame (a 24-byte header and a page).
        assert!(begun > 32, "{begun}");
        let version = |store: &SqliteStore| -> i64 {
            store
                .conn()
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap()
        };
        let begun_at = version(&store);
        create(&store, "r1");
        drop(store);
        let grown = wal_size(normal.path());
        assert!(grown > begun);
        let store = SqliteStore::open_with(normal.path(), Durability::Normal).unwrap();
        assert_eq!(wal_size(normal.path()), grown, "nothing written at open");
        assert_eq!(store.run("r1").unwrap().workflow, "wf");

        // Under `full` the first write begins it, synced.
        let full = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(full.path(), Durability::Full).unwrap();
        assert_eq!(wal_size(full.path()), 0);
        create(&store, "r1");
        assert!(wal_size(full.path()) > 32);
        assert_eq!(begun_at, version(&store), "the schema version is unchanged");
    }

    #[test]
    fn reopening_keeps_data_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            create(&store, "keep");
        }
        let store = SqliteStore::open(dir.path()).unwrap();
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
