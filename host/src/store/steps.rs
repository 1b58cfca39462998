//! Steps and their attempts: starting and finishing attempts, retries,
//! skips, resets, and listing a run's steps.

use rusqlite::{params, TransactionBehavior};
use serde_json::Value;

use super::events::{insert_event, mirrored};
use super::{now, Change, Result, StepRecord, StepStatus, Store};

impl Store {
    /// Start attempt `attempt` of a step with the given rendered input.
    pub fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        input: &Value,
    ) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO step_attempts (run_id, step_id, attempt, status, started_at, input)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run_id,
                step_id,
                attempt,
                StepStatus::Running.as_str(),
                now,
                input.to_string()
            ],
        )?;
        tx.execute(
            "UPDATE steps SET status = ?3, attempts = MAX(attempts, ?4), started_at = COALESCE(started_at, ?5),
                              finished_at = NULL, error = NULL, next_attempt_at = NULL
             WHERE run_id = ?1 AND step_id = ?2",
            params![run_id, step_id, StepStatus::Running.as_str(), attempt, now],
        )?;
        let data = serde_json::json!({ "attempt": attempt });
        insert_event(&tx, run_id, Some(step_id), &now, "step_started", &data)?;
        tx.commit()?;
        drop(conn);
        let files = self.run_files(run_id);
        mirrored(run_id, files.write_step_json(step_id, "input.json", input));
        self.mirror_event(run_id, Some(step_id), &now, "step_started", &data)
    }

    /// Finish an attempt: `Ok(output)` completes the step, `Err(message)`
    /// fails it (the status says which kind of failure).
    pub fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        status: StepStatus,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<()> {
        self.apply(
            run_id,
            &[Change::FinishAttempt {
                step: step_id,
                attempt,
                status,
                outcome,
            }],
        )
    }

    /// Finish one item of a `for_each` step (its own attempt row); the
    /// step itself stays running.
    pub fn finish_item(
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
            Err(message) => (StepStatus::Failed, None, Some(message.to_string())),
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE step_attempts SET status = ?4, finished_at = ?5, output = ?6, error = ?7
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            params![
                run_id,
                step_id,
                attempt,
                status.as_str(),
                now,
                output,
                error
            ],
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
        self.mirror_event(run_id, Some(step_id), &now, kind, &data)
    }

    /// Complete a step whose attempts were recorded item by item.
    pub fn complete_step(&self, run_id: &str, step_id: &str, output: &Value) -> Result<()> {
        self.apply(
            run_id,
            &[Change::CompleteStep {
                step: step_id,
                output,
            }],
        )
    }

    /// How many times a step has looped back (`step_loop` events).
    pub fn loops(&self, run_id: &str, step_id: &str) -> Result<u32> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND step_id = ?2 AND kind = 'step_loop'",
            params![run_id, step_id],
            |row| row.get(0),
        )?)
    }

    /// Record that a step will not run, and why.
    pub fn skip_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        self.apply(
            run_id,
            &[Change::SkipStep {
                step: step_id,
                reason,
            }],
        )
    }

    /// An attempt failed and another is due at `next_at`.
    pub fn schedule_retry(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        next_at: &str,
    ) -> Result<()> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE step_attempts SET status = ?4, finished_at = ?5, error = ?6
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            params![
                run_id,
                step_id,
                attempt,
                StepStatus::Failed.as_str(),
                now,
                error
            ],
        )?;
        tx.execute(
            "UPDATE steps SET status = ?3, error = ?4, next_attempt_at = ?5 WHERE run_id = ?1 AND step_id = ?2",
            params![run_id, step_id, StepStatus::Retrying.as_str(), error, next_at],
        )?;
        let data =
            serde_json::json!({ "attempt": attempt, "error": error, "next_attempt_at": next_at });
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
        self.mirror_event(run_id, Some(step_id), &now, "step_retry_scheduled", &data)
    }

    /// Move a step to `status` outside the normal attempt flow (interrupted,
    /// cancelled, reset to pending for a re-run), noting why.
    pub fn set_step_status(
        &self,
        run_id: &str,
        step_id: &str,
        status: StepStatus,
        note: Option<&str>,
    ) -> Result<()> {
        self.apply(
            run_id,
            &[Change::SetStepStatus {
                step: step_id,
                status,
                note,
            }],
        )
    }

    /// Make a finished step pending again for a re-run (`wfhost retry`):
    /// its output and error are cleared, its attempt history kept.
    pub fn reset_step(&self, run_id: &str, step_id: &str, reason: &str) -> Result<()> {
        self.apply(
            run_id,
            &[Change::ResetStep {
                step: step_id,
                reason,
            }],
        )
    }

    /// The steps of a run in file order, with their latest state.
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM steps WHERE run_id = ?1 ORDER BY position",
            StepRecord::COLUMNS
        ))?;
        let steps = stmt
            .query_map([run_id], StepRecord::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(steps)
    }
}
