//! [`CheckpointStore`] in SQLite: several [`Change`]s in one transaction,
//! and the run of a checkpoint.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::events::insert_event;
use super::{offload, SqliteStore};
use crate::store::{now, Change, CheckpointStore, Result, StepStatus};

impl CheckpointStore for SqliteStore {
    fn apply(&self, run_id: &str, changes: &[Change<'_>]) -> Result<()> {
        offload(|| {
            let now = now();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut events = Vec::with_capacity(changes.len());
            for change in changes {
                events.push(write(change, &tx, run_id, &now)?);
            }
            tx.commit()?;
            drop(conn);
            for (step, kind, data) in &events {
                self.committed_event(run_id, Some(step), &now, kind, data)?;
            }
            Ok(())
        })
    }

    fn checkpoint_run(&self, seq: i64) -> Result<Option<String>> {
        offload(|| {
            Ok(self
                .conn()
                .query_row("SELECT run_id FROM events WHERE seq = ?1", [seq], |row| {
                    row.get(0)
                })
                .optional()?)
        })
    }
}

/// Record the end of one attempt (`status`, its output or error) in its
/// `step_attempts` row, inside `tx`.
pub(super) fn finish_attempt_row(
    tx: &rusqlite::Transaction<'_>,
    (run_id, step_id, attempt): (&str, &str, u32),
    status: StepStatus,
    now: &str,
    output: Option<&str>,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE step_attempts SET status = ?4, finished_at = ?5, output = ?6, error = ?7
         WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
    )?
    .execute(params![
        run_id,
        step_id,
        attempt,
        status.as_str(),
        now,
        output,
        error
    ])?;
    Ok(())
}

/// Write `change` inside `tx`; returns its event (step, kind, data).
fn write(
    change: &Change<'_>,
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    now: &str,
) -> rusqlite::Result<(String, String, Value)> {
    match *change {
        Change::StartAttempt {
            step,
            attempt,
            input,
        } => {
            tx.prepare_cached(
                "INSERT INTO step_attempts (run_id, step_id, attempt, status, started_at, input)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                run_id,
                step,
                attempt,
                StepStatus::Running.as_str(),
                now,
                input.to_string()
            ])?;
            tx.prepare_cached(
                "UPDATE steps SET status = ?3, attempts = MAX(attempts, ?4),
                                  started_at = COALESCE(started_at, ?5),
                                  finished_at = NULL, error = NULL, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![
                run_id,
                step,
                StepStatus::Running.as_str(),
                attempt,
                now
            ])?;
        }
        Change::FinishAttempt {
            step,
            attempt,
            status,
            outcome,
        } => {
            let (output, error) = match outcome {
                Ok(output) => (Some(output.to_string()), None),
                Err(message) => (None, Some(message)),
            };
            let output = output.as_deref();
            finish_attempt_row(tx, (run_id, step, attempt), status, now, output, error)?;
            tx.prepare_cached(
                "UPDATE steps SET status = ?3, finished_at = ?4, output = ?5, error = ?6
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![run_id, step, status.as_str(), now, output, error])?;
        }
        Change::CompleteStep { step, output } => {
            tx.prepare_cached(
                "UPDATE steps SET status = 'completed', finished_at = ?3, output = ?4, error = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![run_id, step, now, output.to_string()])?;
        }
        Change::SkipStep { step, reason } => {
            tx.prepare_cached(
                "UPDATE steps SET status = ?3, finished_at = ?4, error = ?5
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![
                run_id,
                step,
                StepStatus::Skipped.as_str(),
                now,
                reason
            ])?;
        }
        Change::SetStepStatus { step, status, note } => {
            let finished =
                matches!(status, StepStatus::Cancelled | StepStatus::Skipped).then_some(now);
            tx.prepare_cached(
                "UPDATE steps SET status = ?3, error = ?4, finished_at = ?5, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![run_id, step, status.as_str(), note, finished])?;
            if matches!(status, StepStatus::Interrupted | StepStatus::Cancelled) {
                tx.prepare_cached(
                    "UPDATE step_attempts SET status = ?3, finished_at = ?4, error = ?5
                         WHERE run_id = ?1 AND step_id = ?2 AND status = 'running'",
                )?
                .execute(params![run_id, step, status.as_str(), now, note])?;
            }
        }
        Change::ResetStep { step, .. } => {
            tx.prepare_cached(
                "UPDATE steps SET status = 'pending', started_at = NULL, finished_at = NULL,
                                  output = NULL, error = NULL, next_attempt_at = NULL
                     WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![run_id, step])?;
        }
        Change::Event { .. } => {}
    }
    let (step, kind, data) = change.journal_entry();
    insert_event(tx, run_id, Some(step), now, &kind, &data)?;
    Ok((step.to_string(), kind, data))
}
