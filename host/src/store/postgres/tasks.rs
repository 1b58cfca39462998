//! The queue of step attempts for workers ([`StepQueue`]): claims with
//! `FOR UPDATE SKIP LOCKED` (two workers never take one task, and neither
//! waits for the other), leases on the database's clock, a fencing token
//! per claim, and `NOTIFY` both ways (a task queued, a task finished).

use std::time::Duration;

use serde_json::Value;

use super::{text, PgStore, OUTCOME_CHANNEL, TASK_CHANNEL};
use crate::store::tasks::{ClaimedTask, FinishedTask, NewTask, TaskState};
use crate::store::{now, Result, StepQueue};

/// A lease as PostgreSQL's `interval` arithmetic wants it: milliseconds.
fn millis(lease: Duration) -> f64 {
    lease.as_millis() as f64
}

impl StepQueue for PgStore {
    fn enqueue_task(&self, task: &NewTask<'_>) -> Result<i64> {
        let payload = text(&task.payload.to_string()).into_owned();
        let attempt = i64::from(task.attempt);
        self.with(|client| {
            let mut tx = client.transaction()?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO step_tasks (run_id, step_id, attempt, labels, payload, state, created_at)
                     VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
                    &[&task.run_id, &task.step_id, &attempt, &task.labels, &payload, &now()],
                )?
                .get(0);
            tx.batch_execute(&format!("NOTIFY {TASK_CHANNEL}"))?;
            tx.commit()?;
            Ok(id)
        })
    }

    fn claim_task(
        &self,
        worker: &str,
        labels: &[String],
        lease: Duration,
    ) -> Result<Option<ClaimedTask>> {
        let labels = labels.to_vec();
        self.with(|client| {
            let row = client.query_opt(
                "UPDATE step_tasks SET state = 'running', token = token + 1, worker = $1,
                        lease_until = now() + $2 * interval '1 millisecond', claimed_at = $4
                 WHERE id = (SELECT id FROM step_tasks
                             WHERE state = 'queued' AND labels <@ $3::TEXT[]
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, token, run_id, step_id, attempt, payload",
                &[&worker, &millis(lease), &labels, &now()],
            )?;
            Ok(row.map(|row| {
                let payload: String = row.get(5);
                ClaimedTask {
                    id: row.get(0),
                    token: row.get(1),
                    run_id: row.get(2),
                    step_id: row.get(3),
                    attempt: u32::try_from(row.get::<_, i64>(4)).unwrap_or(u32::MAX),
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                }
            }))
        })
    }

    fn renew_task(&self, id: i64, token: i64, lease: Duration) -> Result<bool> {
        self.with(|client| {
            let renewed = client.execute(
                "UPDATE step_tasks SET lease_until = now() + $3 * interval '1 millisecond'
                 WHERE id = $1 AND token = $2 AND state = 'running'",
                &[&id, &token, &millis(lease)],
            )?;
            Ok(renewed == 1)
        })
    }

    fn finish_task(&self, id: i64, token: i64, outcome: &Value) -> Result<bool> {
        let outcome = text(&outcome.to_string()).into_owned();
        self.with(|client| {
            let mut tx = client.transaction()?;
            let finished = tx.execute(
                "UPDATE step_tasks SET state = 'done', outcome = $3, finished_at = $4,
                        lease_until = NULL
                 WHERE id = $1 AND token = $2 AND state = 'running'",
                &[&id, &token, &outcome, &now()],
            )?;
            if finished == 1 {
                // The payload wakes only the driver waiting for this task.
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&OUTCOME_CHANNEL, &id.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(finished == 1)
        })
    }

    fn task_state(&self, id: i64) -> Result<TaskState> {
        self.with(|client| {
            let Some(row) = client.query_opt(
                "SELECT state, worker, token, COALESCE(lease_until < now(), false), outcome
                 FROM step_tasks WHERE id = $1",
                &[&id],
            )?
            else {
                return Ok(TaskState::Missing);
            };
            let state: String = row.get(0);
            Ok(match state.as_str() {
                "queued" => TaskState::Queued,
                "running" => TaskState::Running {
                    worker: row.get::<_, Option<String>>(1).unwrap_or_default(),
                    token: row.get(2),
                    expired: row.get(3),
                },
                "done" => {
                    let outcome: Option<String> = row.get(4);
                    TaskState::Done(
                        outcome
                            .and_then(|text| serde_json::from_str(&text).ok())
                            .unwrap_or(Value::Null),
                    )
                }
                _ => TaskState::Cancelled,
            })
        })
    }

    fn requeue_task(&self, id: i64, token: i64) -> Result<bool> {
        self.with(|client| {
            let mut tx = client.transaction()?;
            let requeued = tx.execute(
                "UPDATE step_tasks SET state = 'queued', worker = NULL, lease_until = NULL
                 WHERE id = $1 AND token = $2 AND state = 'running'",
                &[&id, &token],
            )?;
            if requeued == 1 {
                tx.batch_execute(&format!("NOTIFY {TASK_CHANNEL}"))?;
            }
            tx.commit()?;
            Ok(requeued == 1)
        })
    }

    fn cancel_task(&self, id: i64) -> Result<()> {
        self.with(|client| {
            client.execute(
                "UPDATE step_tasks SET state = 'cancelled', lease_until = NULL, finished_at = $2
                 WHERE id = $1 AND state IN ('queued', 'running')",
                &[&id, &now()],
            )?;
            Ok(())
        })
    }

    fn unrecorded_outcomes(&self, run_id: &str) -> Result<Vec<FinishedTask>> {
        self.with(|client| {
            Ok(client
                .query(
                    "SELECT t.id, t.step_id, t.attempt, t.outcome FROM step_tasks t
                     JOIN steps s ON s.run_id = t.run_id AND s.step_id = t.step_id
                     WHERE t.run_id = $1 AND t.state = 'done' AND s.status = 'running'
                       AND s.attempts = t.attempt
                     ORDER BY t.id",
                    &[&run_id],
                )?
                .iter()
                .map(|row| {
                    let outcome: Option<String> = row.get(3);
                    FinishedTask {
                        id: row.get(0),
                        step_id: row.get(1),
                        attempt: u32::try_from(row.get::<_, i64>(2)).unwrap_or(u32::MAX),
                        outcome: outcome
                            .and_then(|text| serde_json::from_str(&text).ok())
                            .unwrap_or(Value::Null),
                    }
                })
                .collect())
        })
    }

    fn live_tasks_of(&self, run_id: &str) -> Result<u64> {
        self.with(|client| {
            let live: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM step_tasks
                     WHERE run_id = $1 AND state = 'running' AND lease_until >= now()",
                    &[&run_id],
                )?
                .get(0);
            Ok(u64::try_from(live).unwrap_or(0))
        })
    }

    fn cancel_tasks_of(&self, run_id: &str) -> Result<u64> {
        self.with(|client| {
            Ok(client.execute(
                "UPDATE step_tasks SET state = 'cancelled', lease_until = NULL, finished_at = $2
                 WHERE run_id = $1 AND state IN ('queued', 'running')",
                &[&run_id, &now()],
            )?)
        })
    }

    fn wait_for_outcomes(&self, timeout: Duration) -> Vec<i64> {
        match self.listen(&[OUTCOME_CHANNEL], &self.outcome_listener, timeout) {
            Ok(heard) => heard
                .iter()
                .filter_map(|(_, payload)| payload.parse().ok())
                .collect(),
            Err(error) => {
                tracing::warn!("waiting for step outcomes: {error}");
                std::thread::sleep(timeout);
                Vec::new()
            }
        }
    }
}
