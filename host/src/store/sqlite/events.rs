//! The journal: appending events and reading them back.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::rows::FromRow;
use super::{offload, SqliteStore};
use crate::store::{now, EventLog, EventRecord, Result};

impl EventLog for SqliteStore {
    fn append_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        kind: &str,
        data: &Value,
    ) -> Result<()> {
        offload(|| {
            let now = now();
            insert_event(&self.conn(), run_id, step_id, &now, kind, data)?;
            self.committed_event(run_id, step_id, &now, kind, data)
        })
    }

    fn events(&self, run_id: &str, step_id: Option<&str>) -> Result<Vec<EventRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT seq, step_id, at, kind, data FROM events
             WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) ORDER BY seq",
            )?;
            let events = stmt
                .query_map(params![run_id, step_id], EventRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(events)
        })
    }

    fn events_after(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
            "SELECT seq, step_id, at, kind, data FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
            let events = stmt
                .query_map(params![run_id, after], EventRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(events)
        })
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, EventRecord)>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT seq, step_id, at, kind, data, run_id FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let events = stmt
                .query_map(params![after, limit.min(i64::MAX as usize) as i64], |row| {
                    Ok((row.get::<_, String>(5)?, EventRecord::from_row(row)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(events)
        })
    }

    fn latest_seq(&self) -> Result<i64> {
        offload(|| {
            let conn = self.conn();
            let seq: Option<i64> =
                conn.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))?;
            Ok(seq.unwrap_or(0))
        })
    }

    fn latest_event(&self, run_id: &str, kind: &str) -> Result<Option<Value>> {
        offload(|| {
            let conn = self.conn();
            let data: Option<String> = conn
            .query_row(
                "SELECT data FROM events WHERE run_id = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1",
                params![run_id, kind],
                |row| row.get(0),
            )
            .optional()?;
            Ok(data.map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)))
        })
    }
}

/// Insert one event row inside the caller's transaction.
pub(super) fn insert_event(
    conn: &Connection,
    run_id: &str,
    step_id: Option<&str>,
    at: &str,
    kind: &str,
    data: &Value,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (run_id, step_id, at, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![run_id, step_id, at, kind, data.to_string()])?;
    Ok(())
}
