//! The journal: appending events, mirroring them into the run folder,
//! reading them back and the checkpoints among them.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{now, EventRecord, Result, Store};

impl Store {
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
    pub(super) fn mirror_event(
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

/// Fault injection for crash tests: with `WFHOST_TEST_CRASH_AFTER=<event
/// kind>` the process kills itself (SIGKILL, as `kill -9` would) right
/// after committing the first transaction that records such an event.
pub(super) fn crash_point(kind: &str) {
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
pub(super) fn mirrored(run_id: &str, result: Result<()>) {
    if let Err(error) = result {
        tracing::warn!("run {run_id}: the run folder could not be updated: {error}");
    }
}

pub(super) fn insert_event(
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
