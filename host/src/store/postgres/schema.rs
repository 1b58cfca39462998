//! Schema migrations of the PostgreSQL store, applied in order and tracked
//! in `wfhost_schema`. The first version is the SQLite store's schema as it
//! stands (its nine migrations), in PostgreSQL's types.

use super::pool::Db;

use crate::store::Result;

/// Each entry upgrades the schema by one version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    workflow_name   TEXT NOT NULL,
    workflow_path   TEXT NOT NULL,
    workflow_dir    TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    heartbeat_at    TEXT,
    driver_pid      BIGINT,
    driver_host     TEXT,
    request         TEXT,
    lease_owner     TEXT,
    triggered_by    TEXT,
    priority        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs(created_at);

CREATE TABLE run_texts (
    run_id     TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    definition TEXT NOT NULL,
    args       TEXT NOT NULL
);

CREATE TABLE steps (
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id         TEXT NOT NULL,
    position        BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    started_at      TEXT,
    finished_at     TEXT,
    output          TEXT,
    error           TEXT,
    next_attempt_at TEXT,
    max_attempts    BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE step_attempts (
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    input       TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id TEXT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_run ON events(run_id, seq);
CREATE INDEX events_kind ON events(run_id, kind, seq);

CREATE TABLE agent_records (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id  TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    attempt  BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    payload  TEXT NOT NULL,
    at       TEXT NOT NULL
);
CREATE INDEX agent_records_step ON agent_records(run_id, step_id, seq);
CREATE INDEX agent_records_agent ON agent_records(run_id, agent_id, seq);

CREATE TABLE approvals (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    iteration   BIGINT NOT NULL DEFAULT 0,
    call_hash   TEXT NOT NULL DEFAULT '',
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
CREATE INDEX approvals_attempt ON approvals(run_id, step_id, attempt, iteration, call_hash);

CREATE TABLE api_tokens (
    sha256     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE artifacts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX artifacts_run ON artifacts(run_id, step_id);

CREATE TABLE comments (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id    TEXT,
    author     TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_run ON comments(run_id);
"#,
    // Artifacts' content: with workers on several machines, a file kept
    // from a step must be readable from any of them (same caps as the run
    // folder's copy: 64 MiB per file, 256 MiB per step).
    r#"
CREATE TABLE artifact_contents (
    run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sha256  TEXT NOT NULL,
    content BYTEA NOT NULL,
    PRIMARY KEY (run_id, sha256)
);
"#,
    // Step attempts queued for workers: `token` changes with every claim
    // (fencing), `lease_until` is the database's clock (machines' clocks
    // may disagree).
    r#"
CREATE TABLE step_tasks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    labels      TEXT[] NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL,
    token       BIGINT NOT NULL DEFAULT 0,
    worker      TEXT,
    lease_until TIMESTAMPTZ,
    outcome     TEXT,
    created_at  TEXT NOT NULL,
    claimed_at  TEXT,
    finished_at TEXT
);
CREATE INDEX step_tasks_queued ON step_tasks(id) WHERE state = 'queued';
CREATE INDEX step_tasks_run ON step_tasks(run_id, step_id);
"#,
];

/// The advisory lock key that serialises migrations ("wfhostmg").
const MIGRATION_LOCK: i64 = 0x7766_686f_7374_6d67;

/// Bring the database up to the newest schema version. Safe when several
/// processes (machines) open a fresh database at once: the version is read
/// and the migrations applied under one advisory lock, in one transaction.
pub(super) fn migrate(client: &mut Db) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS wfhost_schema (version BIGINT NOT NULL)")?;
    let current: i64 = tx
        .query_opt("SELECT version FROM wfhost_schema", &[])?
        .map(|row| row.get(0))
        .unwrap_or(0);
    if current as usize > MIGRATIONS.len() {
        return Err(crate::store::StoreError::Database(
            format!(
                "the database's wfhost schema is version {current}, newer than this wfhost \
                 knows ({}): upgrade wfhost",
                MIGRATIONS.len()
            )
            .into(),
        ));
    }
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.batch_execute(sql)?;
    }
    let newest = MIGRATIONS.len() as i64;
    if current == 0 {
        tx.execute(
            "INSERT INTO wfhost_schema (version) VALUES ($1)",
            &[&newest],
        )?;
    } else if current < newest {
        tx.execute("UPDATE wfhost_schema SET version = $1", &[&newest])?;
    }
    tx.commit()?;
    Ok(())
}
