//! The journal: appending events and reading them back.

use serde_json::Value;

use super::rows::{parse_json, FromRow};
use super::{insert_events, Event, PgStore};
use crate::store::{now, EventLog, EventRecord, Result};

impl EventLog for PgStore {
    fn append_event(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        kind: &str,
        data: &Value,
    ) -> Result<()> {
        let now = now();
        let events = [Event::new(step_id, kind, data.clone())];
        self.write(run_id, false, |tx| insert_events(tx, run_id, &now, &events))?;
        self.committed(run_id, &now, &events)
    }

    fn events(&self, run_id: &str, step_id: Option<&str>) -> Result<Vec<EventRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM events
                         WHERE run_id = $1 AND ($2::TEXT IS NULL OR step_id = $2) ORDER BY seq",
                        EventRecord::COLUMNS
                    ),
                    &[&run_id, &step_id],
                )?
                .iter()
                .map(EventRecord::from_row)
                .collect())
        })
    }

    fn events_after(&self, run_id: &str, after: i64) -> Result<Vec<EventRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                        EventRecord::COLUMNS
                    ),
                    &[&run_id, &after],
                )?
                .iter()
                .map(EventRecord::from_row)
                .collect())
        })
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<(String, EventRecord)>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {}, run_id FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                        EventRecord::COLUMNS
                    ),
                    &[&after, &limit],
                )?
                .iter()
                .map(|row| (row.get(5), EventRecord::from_row(row)))
                .collect())
        })
    }

    fn latest_seq(&self) -> Result<i64> {
        self.with(|client| {
            let seq: Option<i64> = client.query_one("SELECT MAX(seq) FROM events", &[])?.get(0);
            Ok(seq.unwrap_or(0))
        })
    }

    fn latest_event(&self, run_id: &str, kind: &str) -> Result<Option<Value>> {
        self.with(|client| {
            Ok(client
                .query_opt(
                    "SELECT data FROM events WHERE run_id = $1 AND kind = $2
                     ORDER BY seq DESC LIMIT 1",
                    &[&run_id, &kind],
                )?
                .map(|row| parse_json(row.get(0))))
        })
    }
}
