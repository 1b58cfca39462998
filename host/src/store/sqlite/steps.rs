//! Steps and their attempts: starting attempts, finishing `for_each`
//! items, retries, attempt limits, and listing a run's steps. Finishing,
//! skipping and resetting steps are [`Change`](crate::store::Change)s (see
//! `changes`).

use std::collections::HashMap;

use rusqlite::{params, TransactionBehavior};
use serde_json::Value;

use super::changes::finish_attempt_row;
use super::events::insert_event;
use super::rows::FromRow;
use super::{offload, SqliteStore};
use crate::store::{now, Change, CheckpointStore, Result, StepRecord, StepStatus, StepStore};

impl StepStore for SqliteStore {
    fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        input: &Value,
    ) -> Result<()> {
        let start = Change::StartAttempt {
            step: step_id,
            attempt,
            input,
        };
        self.apply(run_id, &[start])
    }

    fn finish_item(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        index: usize,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()> {
        offload(|| {
            let now = now();
            let (status, output, error) = match outcome {
                Ok(output) => (StepStatus::Completed, Some(output.to_string()), None),
                Err(message) => (StepStatus::Failed, None, Some(message.to_string())),
            };
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            finish_attempt_row(
                &tx,
                (run_id, step_id, attempt),
                status,
                &now,
                output.as_deref(),
                error.as_deref(),
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
            self.committed_event(run_id, Some(step_id), &now, kind, &data)
        })
    }

    fn schedule_retry(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        next_at: &str,
    ) -> Result<()> {
        offload(|| {
            let now = now();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "UPDATE step_attempts SET status = ?4, finished_at = ?5, error = ?6
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )?
            .execute(params![
                run_id,
                step_id,
                attempt,
                StepStatus::Failed.as_str(),
                now,
                error
            ])?;
            tx.prepare_cached("UPDATE steps SET status = ?3, error = ?4, next_attempt_at = ?5 WHERE run_id = ?1 AND step_id = ?2")?.execute(params![run_id, step_id, StepStatus::Retrying.as_str(), error, next_at],
        )?;
            let data = serde_json::json!({ "attempt": attempt, "error": error, "next_attempt_at": next_at });
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
            self.committed_event(run_id, Some(step_id), &now, "step_retry_scheduled", &data)
        })
    }

    fn set_max_attempts(&self, run_id: &str, limits: &[(&str, u32)]) -> Result<()> {
        offload(|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (step, max) in limits {
                tx.prepare_cached(
                    "UPDATE steps SET max_attempts = ?3
                     WHERE run_id = ?1 AND step_id = ?2 AND max_attempts <> ?3",
                )?
                .execute(params![run_id, step, max])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn loops(&self, run_id: &str, step_id: &str) -> Result<u32> {
        offload(|| {
            Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND step_id = ?2 AND kind = 'step_loop'",
            params![run_id, step_id],
            |row| row.get(0),
        )?)
        })
    }

    fn last_completed_attempt(&self, run_id: &str, step_id: &str) -> Result<u32> {
        offload(|| {
            Ok(self.conn().query_row(
                "SELECT COALESCE(MAX(attempt), 0) FROM step_attempts
             WHERE run_id = ?1 AND step_id = ?2 AND status = 'completed'",
                params![run_id, step_id],
                |row| row.get(0),
            )?)
        })
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {} FROM steps WHERE run_id = ?1 ORDER BY position",
                StepRecord::COLUMNS
            ))?;
            let steps = stmt
                .query_map([run_id], StepRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(steps)
        })
    }

    fn latest_inputs(&self, run_id: &str) -> Result<HashMap<String, Value>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT step_id, input FROM step_attempts a WHERE run_id = ?1 AND attempt =
                   (SELECT MAX(attempt) FROM step_attempts b
                    WHERE b.run_id = a.run_id AND b.step_id = a.step_id)",
            )?;
            let rows = stmt.query_map([run_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut inputs = HashMap::new();
            for row in rows {
                let (step, input) = row?;
                // Written by `start_attempt` from a `Value`; unreadable only
                // if someone edited the database.
                let input = serde_json::from_str(&input).unwrap_or(Value::String(input));
                inputs.insert(step, input);
            }
            Ok(inputs)
        })
    }
}
