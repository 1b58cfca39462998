//! Steps and their attempts, and whole transitions ([`Change`] sets).

use std::collections::HashMap;

use super::pool::Tx;
use serde_json::Value;

use super::rows::{small, FromRow};
use super::{insert_events, opt_text, text, Event, PgStore};
use crate::store::{now, Change, CheckpointStore, Result, StepRecord, StepStatus, StepStore};

impl StepStore for PgStore {
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
        let now = now();
        let (status, output, error) = match outcome {
            Ok(output) => (StepStatus::Completed, Some(output.to_string()), None),
            Err(message) => (StepStatus::Failed, None, Some(text(message).into_owned())),
        };
        let kind = if error.is_none() {
            "item_completed"
        } else {
            "item_failed"
        };
        let data = serde_json::json!({ "attempt": attempt, "index": index, "error": error });
        let events = [Event::new(Some(step_id), kind, data)];
        self.write(run_id, false, |tx| {
            finish_attempt_row(
                tx,
                (run_id, step_id, attempt),
                status,
                &now,
                output.as_deref(),
                error.as_deref(),
            )?;
            insert_events(tx, run_id, &now, &events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn schedule_retry(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        next_at: &str,
    ) -> Result<()> {
        let now = now();
        let error = text(error).into_owned();
        let data =
            serde_json::json!({ "attempt": attempt, "error": error, "next_attempt_at": next_at });
        let events = [Event::new(Some(step_id), "step_retry_scheduled", data)];
        self.write(run_id, false, |tx| {
            tx.execute(
                "UPDATE step_attempts SET status = $4, finished_at = $5, error = $6
                 WHERE run_id = $1 AND step_id = $2 AND attempt = $3",
                &[
                    &run_id,
                    &step_id,
                    &i64::from(attempt),
                    &StepStatus::Failed.as_str(),
                    &now,
                    &error,
                ],
            )?;
            tx.execute(
                "UPDATE steps SET status = $3, error = $4, next_attempt_at = $5
                 WHERE run_id = $1 AND step_id = $2",
                &[
                    &run_id,
                    &step_id,
                    &StepStatus::Retrying.as_str(),
                    &error,
                    &next_at,
                ],
            )?;
            insert_events(tx, run_id, &now, &events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn set_max_attempts(&self, run_id: &str, limits: &[(&str, u32)]) -> Result<()> {
        self.write(run_id, false, |tx| {
            for (step, max) in limits {
                tx.execute(
                    "UPDATE steps SET max_attempts = $3
                     WHERE run_id = $1 AND step_id = $2 AND max_attempts <> $3",
                    &[&run_id, step, &i64::from(*max)],
                )?;
            }
            Ok(())
        })
    }

    fn loops(&self, run_id: &str, step_id: &str) -> Result<u32> {
        self.with(|client| {
            let count: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM events
                     WHERE run_id = $1 AND step_id = $2 AND kind = 'step_loop'",
                    &[&run_id, &step_id],
                )?
                .get(0);
            Ok(small(count))
        })
    }

    fn last_completed_attempt(&self, run_id: &str, step_id: &str) -> Result<u32> {
        self.with(|client| {
            let attempt: i64 = client
                .query_one(
                    "SELECT COALESCE(MAX(attempt), 0) FROM step_attempts
                     WHERE run_id = $1 AND step_id = $2 AND status = 'completed'",
                    &[&run_id, &step_id],
                )?
                .get(0);
            Ok(small(attempt))
        })
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM steps WHERE run_id = $1 ORDER BY position",
                        StepRecord::COLUMNS
                    ),
                    &[&run_id],
                )?
                .iter()
                .map(StepRecord::from_row)
                .collect())
        })
    }

    fn latest_inputs(&self, run_id: &str) -> Result<HashMap<String, Value>> {
        self.with(|client| {
            let rows = client.query(
                "SELECT DISTINCT ON (step_id) step_id, input FROM step_attempts
                 WHERE run_id = $1 ORDER BY step_id, attempt DESC",
                &[&run_id],
            )?;
            Ok(rows
                .iter()
                .map(|row| {
                    let input: String = row.get(1);
                    (row.get(0), super::rows::parse_json(input))
                })
                .collect())
        })
    }
}

impl CheckpointStore for PgStore {
    fn apply(&self, run_id: &str, changes: &[Change<'_>]) -> Result<()> {
        let now = now();
        let events = self.write(run_id, false, |tx| {
            let mut events = Vec::with_capacity(changes.len());
            for change in changes {
                events.push(write(change, tx, run_id, &now)?);
            }
            insert_events(tx, run_id, &now, &events)?;
            Ok(events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn checkpoint_run(&self, seq: i64) -> Result<Option<String>> {
        self.with(|client| {
            Ok(client
                .query_opt("SELECT run_id FROM events WHERE seq = $1", &[&seq])?
                .map(|row| row.get(0)))
        })
    }
}

/// Record the end of one attempt (`status`, its output or error) in its
/// `step_attempts` row, inside `tx`.
fn finish_attempt_row(
    tx: &mut Tx<'_>,
    (run_id, step_id, attempt): (&str, &str, u32),
    status: StepStatus,
    now: &str,
    output: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE step_attempts SET status = $4, finished_at = $5, output = $6, error = $7
         WHERE run_id = $1 AND step_id = $2 AND attempt = $3",
        &[
            &run_id,
            &step_id,
            &i64::from(attempt),
            &status.as_str(),
            &now,
            &output,
            &error,
        ],
    )?;
    Ok(())
}

/// Write `change` inside `tx`; returns its event.
fn write(change: &Change<'_>, tx: &mut Tx<'_>, run_id: &str, now: &str) -> Result<Event> {
    match *change {
        Change::StartAttempt {
            step,
            attempt,
            input,
        } => {
            let attempt = i64::from(attempt);
            tx.execute(
                "INSERT INTO step_attempts (run_id, step_id, attempt, status, started_at, input)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &run_id,
                    &step,
                    &attempt,
                    &StepStatus::Running.as_str(),
                    &now,
                    &input.to_string(),
                ],
            )?;
            tx.execute(
                "UPDATE steps SET status = $3, attempts = GREATEST(attempts, $4),
                                  started_at = COALESCE(started_at, $5),
                                  finished_at = NULL, error = NULL, next_attempt_at = NULL
                 WHERE run_id = $1 AND step_id = $2",
                &[
                    &run_id,
                    &step,
                    &StepStatus::Running.as_str(),
                    &attempt,
                    &now,
                ],
            )?;
        }
        Change::FinishAttempt {
            step,
            attempt,
            status,
            outcome,
        } => {
            let (output, error) = match outcome {
                Ok(output) => (Some(output.to_string()), None),
                Err(message) => (None, Some(text(message).into_owned())),
            };
            let (output, error) = (output.as_deref(), error.as_deref());
            finish_attempt_row(tx, (run_id, step, attempt), status, now, output, error)?;
            tx.execute(
                "UPDATE steps SET status = $3, finished_at = $4, output = $5, error = $6
                 WHERE run_id = $1 AND step_id = $2",
                &[&run_id, &step, &status.as_str(), &now, &output, &error],
            )?;
        }
        Change::CompleteStep { step, output } => {
            tx.execute(
                "UPDATE steps SET status = 'completed', finished_at = $3, output = $4, error = NULL
                 WHERE run_id = $1 AND step_id = $2",
                &[&run_id, &step, &now, &output.to_string()],
            )?;
        }
        Change::SkipStep { step, reason } => {
            tx.execute(
                "UPDATE steps SET status = $3, finished_at = $4, error = $5
                 WHERE run_id = $1 AND step_id = $2",
                &[
                    &run_id,
                    &step,
                    &StepStatus::Skipped.as_str(),
                    &now,
                    &text(reason),
                ],
            )?;
        }
        Change::SetStepStatus { step, status, note } => {
            let note = opt_text(note);
            let finished =
                matches!(status, StepStatus::Cancelled | StepStatus::Skipped).then_some(now);
            tx.execute(
                "UPDATE steps SET status = $3, error = $4, finished_at = $5, next_attempt_at = NULL
                 WHERE run_id = $1 AND step_id = $2",
                &[&run_id, &step, &status.as_str(), &note, &finished],
            )?;
            if matches!(status, StepStatus::Interrupted | StepStatus::Cancelled) {
                tx.execute(
                    "UPDATE step_attempts SET status = $3, finished_at = $4, error = $5
                     WHERE run_id = $1 AND step_id = $2 AND status = 'running'",
                    &[&run_id, &step, &status.as_str(), &now, &note],
                )?;
            }
        }
        Change::ResetStep { step, .. } => {
            tx.execute(
                "UPDATE steps SET status = 'pending', started_at = NULL, finished_at = NULL,
                                  output = NULL, error = NULL, next_attempt_at = NULL
                 WHERE run_id = $1 AND step_id = $2",
                &[&run_id, &step],
            )?;
        }
        Change::Event { .. } => {}
    }
    let (step, kind, data) = change.journal_entry();
    Ok(Event::new(Some(step), &kind, data))
}
