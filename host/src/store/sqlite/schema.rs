//! Schema migrations, applied in order and tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema by one version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    workflow_name   TEXT NOT NULL,
    workflow_path   TEXT NOT NULL,
    workflow_dir    TEXT NOT NULL,
    definition      TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    args            TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);
CREATE INDEX runs_created ON runs(created_at);

CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    position    INTEGER NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    finished_at TEXT,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE step_attempts (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    input       TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id TEXT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_run ON events(run_id, seq);
"#,
    r#"
ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;
ALTER TABLE runs ADD COLUMN driver_pid INTEGER;
ALTER TABLE runs ADD COLUMN request TEXT;
ALTER TABLE steps ADD COLUMN next_attempt_at TEXT;
ALTER TABLE steps ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
"#,
    // Agent steps: recorded model replies and tool results (replayed after
    // a crash), and tool calls held for a person's approval.
    r#"
CREATE TABLE agent_records (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id  TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    payload  TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX agent_records_step ON agent_records(run_id, step_id, seq);
CREATE INDEX agent_records_agent ON agent_records(run_id, agent_id, seq);

CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    call_id     TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    created_at  TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX approvals_run ON approvals(run_id, status);
CREATE INDEX approvals_call ON approvals(run_id, step_id, call_id);
"#,
    // Run leases: the owner token of the driver that holds the run (see
    // store/lease.rs); its expiry is the heartbeat's freshness.
    r#"
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
"#,
    // Approvals belong to one attempt (and for_each iteration) of a step:
    // looked up by a hash of the tool and its arguments within it.
    r#"
ALTER TABLE approvals ADD COLUMN iteration INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN call_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX approvals_attempt ON approvals(run_id, step_id, attempt, iteration, call_hash);
"#,
    // A run's definition and arguments live beside its row, not in it:
    // SQLite reads a column by walking the record, overflow pages included,
    // and rewrites the whole record on every UPDATE, so a big definition in
    // `runs` made each status, request, heartbeat and lease check cost in
    // proportion to the workflow's size (quadratic in steps for big runs).
    r#"
CREATE TABLE run_texts (
    run_id     TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    definition TEXT NOT NULL,
    args       TEXT NOT NULL
);
INSERT INTO run_texts (run_id, definition, args) SELECT id, definition, args FROM runs;
UPDATE runs SET definition = '', args = '';
"#,
    // Who or what started a run (`--triggered-by`) and its priority
    // (`--priority`), recorded as the seed systems record them.
    r#"
ALTER TABLE runs ADD COLUMN triggered_by TEXT;
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
"#,
    // Bearer tokens of `wfhost serve` (their SHA-256 only).
    r#"
CREATE TABLE api_tokens (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // Files kept from steps (`artifacts:`), and comments on runs and steps.
    r#"
CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX artifacts_run ON artifacts(run_id, step_id);
CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_run ON comments(run_id);
"#,
    FENCING,
];

/// Fencing (see `lease`): a write for a run this connection's store holds
/// a lease on, after another driver took the run over, aborts. The last
/// migration, also applied after [`CURRENT`].
const FENCING: &str = r#"
CREATE TRIGGER fence_runs BEFORE UPDATE ON runs
WHEN wfhost_lease_lost(OLD.id, OLD.lease_owner)
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_steps_insert BEFORE INSERT ON steps
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_steps_update BEFORE UPDATE ON steps
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_steps_delete BEFORE DELETE ON steps
WHEN wfhost_lease_lost(OLD.run_id, (SELECT lease_owner FROM runs WHERE id = OLD.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_step_attempts_insert BEFORE INSERT ON step_attempts
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_step_attempts_update BEFORE UPDATE ON step_attempts
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_step_attempts_delete BEFORE DELETE ON step_attempts
WHEN wfhost_lease_lost(OLD.run_id, (SELECT lease_owner FROM runs WHERE id = OLD.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_events_insert BEFORE INSERT ON events
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_agent_records_insert BEFORE INSERT ON agent_records
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
CREATE TRIGGER fence_approvals_insert BEFORE INSERT ON approvals
WHEN wfhost_lease_lost(NEW.run_id, (SELECT lease_owner FROM runs WHERE id = NEW.run_id))
BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;
"#;

/// The newest schema in one piece: what [`MIGRATIONS`] make of an empty
/// database (same tables, columns in the same order, same indexes), created
/// in one batch, then [`FENCING`]. A fresh home takes this path: applying every migration in
/// turn made SQLite re-parse the whole schema after each `ALTER TABLE`
/// (~4 ms of every first run). A test checks the two agree.
const CURRENT: &str = r#"
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    workflow_name   TEXT NOT NULL,
    workflow_path   TEXT NOT NULL,
    workflow_dir    TEXT NOT NULL,
    definition      TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    args            TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    heartbeat_at    TEXT,
    driver_pid      INTEGER,
    request         TEXT,
    lease_owner     TEXT,
    triggered_by    TEXT,
    priority        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs(created_at);

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id         TEXT NOT NULL,
    position        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    started_at      TEXT,
    finished_at     TEXT,
    output          TEXT,
    error           TEXT,
    next_attempt_at TEXT,
    max_attempts    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE step_attempts (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    input       TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id TEXT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_run ON events(run_id, seq);

CREATE TABLE agent_records (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id  TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    payload  TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX agent_records_step ON agent_records(run_id, step_id, seq);
CREATE INDEX agent_records_agent ON agent_records(run_id, agent_id, seq);

CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    call_id     TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT,
    created_at  TEXT NOT NULL,
    answered_at TEXT,
    iteration   INTEGER NOT NULL DEFAULT 0,
    call_hash   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX approvals_run ON approvals(run_id, status);
CREATE INDEX approvals_call ON approvals(run_id, step_id, call_id);
CREATE INDEX approvals_attempt ON approvals(run_id, step_id, attempt, iteration, call_hash);

CREATE TABLE run_texts (
    run_id     TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    definition TEXT NOT NULL,
    args       TEXT NOT NULL
);

CREATE TABLE api_tokens (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX artifacts_run ON artifacts(run_id, step_id);
CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_run ON comments(run_id);
"#;

/// Bring the database up to the newest schema version. Safe when several
/// processes open a fresh store at once: the version is read and the
/// migrations applied under one write lock. An empty database gets
/// [`CURRENT`] in one batch.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let empty: bool = tx.query_row("SELECT count(*) = 0 FROM sqlite_schema", [], |row| {
        row.get(0)
    })?;
    if current == 0 && empty {
        tx.execute_batch(CURRENT)?;
        tx.execute_batch(FENCING)?;
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        return tx.commit();
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home made before the definitions moved out of `runs` keeps its
    /// runs' definitions and arguments.
    #[test]
    fn runs_of_an_older_schema_keep_their_definition_and_args() {
        let mut conn = Connection::open_in_memory().unwrap();
        let before = MIGRATIONS
            .iter()
            .position(|sql| sql.contains("CREATE TABLE run_texts"))
            .unwrap();
        for (index, sql) in MIGRATIONS[..before].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        conn.execute(
            "INSERT INTO runs (id, workflow_name, workflow_path, workflow_dir, definition,
                               definition_hash, args, status, created_at)
             VALUES ('r1', 'wf', 'wf.yaml', '/', 'name: wf', 'h', '{\"a\":1}', 'completed', 'now')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let moved: (String, String) = conn
            .query_row(
                "SELECT definition, args FROM run_texts WHERE run_id = 'r1'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(moved, ("name: wf".to_string(), "{\"a\":1}".to_string()));
        let left: String = conn
            .query_row("SELECT definition || args FROM runs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(left, "", "the big columns left the run's row");
    }

    /// Everything SQLite knows of a schema, one line per table, column,
    /// index, index column and foreign key, in a stable order.
    fn describe(conn: &Connection) -> Vec<String> {
        let mut lines = Vec::new();
        let objects: Vec<(String, String, String)> = conn
            .prepare("SELECT type, name, tbl_name FROM sqlite_schema ORDER BY type, name")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (kind, name, table) in objects {
            lines.push(format!("{kind} {name} on {table}"));
            let pragmas: &[&str] = match kind.as_str() {
                "table" => &["table_xinfo", "index_list", "foreign_key_list"],
                "index" => &["index_xinfo"],
                _ => &[],
            };
            for pragma in pragmas {
                let mut statement = conn
                    .prepare(&format!("SELECT * FROM pragma_{pragma}(?1)"))
                    .unwrap();
                let width = statement.column_count();
                let rows = statement
                    .query_map([&name], |row| {
                        (0..width)
                            .map(|i| row.get::<_, rusqlite::types::Value>(i))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .unwrap();
                for row in rows {
                    lines.push(format!("  {pragma} {:?}", row.unwrap()));
                }
            }
        }
        lines
    }

    /// A fresh database made in one batch has exactly the schema the
    /// migrations make, and the version that says so.
    #[test]
    fn the_current_schema_is_what_the_migrations_make() {
        let mut fresh = Connection::open_in_memory().unwrap();
        migrate(&mut fresh).unwrap();
        let migrated = Connection::open_in_memory().unwrap();
        for sql in MIGRATIONS {
            migrated.execute_batch(sql).unwrap();
        }
        let version: i64 = fresh
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let (fresh, migrated) = (describe(&fresh), describe(&migrated));
        assert!(
            fresh.len() > 100,
            "the description covers the schema: {fresh:?}"
        );
        if let Some((made, expected)) = fresh.iter().zip(&migrated).find(|(a, b)| a != b) {
            panic!("the current schema differs from the migrated one:\n  current:  {made}\n  migrated: {expected}");
        }
        assert_eq!(fresh.len(), migrated.len(), "{fresh:#?}\n{migrated:#?}");
        // Migrating again changes nothing.
        let mut again = Connection::open_in_memory().unwrap();
        migrate(&mut again).unwrap();
        migrate(&mut again).unwrap();
        assert_eq!(describe(&again), fresh);
    }
}
