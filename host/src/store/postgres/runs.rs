//! Runs (creating them, their status, control requests, upgrades, pruning
//! and listing) and their lease (claiming it, the heartbeat).

use std::path::Path;

use serde_json::Value;

use super::rows::FromRow;
use super::{
    driver_may_live, host_name, insert_events, opt_text, Event, PgStore, TASK_CHANNEL, WORK_CHANNEL,
};
use crate::store::{
    definition_hash, is_stale, now, Committed, LeaseStore, NewRun, Result, RunRecord, RunStatus,
    RunStore, StepStatus, StoreError,
};

impl RunStore for PgStore {
    fn home(&self) -> &Path {
        &self.home
    }

    fn url(&self) -> Option<String> {
        Some(self.url.clone())
    }

    fn wait_for_work(&self, timeout: std::time::Duration) -> crate::store::News {
        let channels = [WORK_CHANNEL, TASK_CHANNEL];
        match self.listen(&channels, &self.work_listener, timeout) {
            Ok(heard) => crate::store::News {
                runs: heard.iter().any(|(c, _)| c == WORK_CHANNEL),
                tasks: heard.iter().any(|(c, _)| c == TASK_CHANNEL),
            },
            Err(error) => {
                tracing::warn!("waiting for work: {error}");
                std::thread::sleep(timeout);
                crate::store::News::default()
            }
        }
    }

    fn step_queue(&self) -> Option<&dyn crate::store::StepQueue> {
        Some(self)
    }

    fn flush_observers(&self) {
        for observer in &self.observers {
            observer.flush();
        }
    }

    fn create_run(&self, run: &NewRun<'_>) -> Result<()> {
        let now = now();
        let hash = definition_hash(run.definition);
        let data = serde_json::json!({
            "workflow": run.workflow_name,
            "definition_hash": hash,
            "triggered_by": run.triggered_by,
            "priority": run.priority,
        });
        let events = [Event::new(None, "run_created", data)];
        self.with(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, workflow_name, workflow_path, workflow_dir, definition_hash,
                                   status, created_at, triggered_by, priority)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &run.id,
                    &run.workflow_name,
                    &run.workflow_path,
                    &run.workflow_dir,
                    &hash,
                    &RunStatus::Pending.as_str(),
                    &now,
                    &opt_text(run.triggered_by),
                    &run.priority,
                ],
            )?;
            tx.execute(
                "INSERT INTO run_texts (run_id, definition, args) VALUES ($1, $2, $3)",
                &[&run.id, &super::text(run.definition), &run.args.to_string()],
            )?;
            // Every step in one statement (one round trip, not one per step):
            // a step's position is its place in the list, from 0.
            let steps: Vec<&str> = run.steps.to_vec();
            tx.execute(
                "INSERT INTO steps (run_id, step_id, position, status)
                 SELECT $1, step.id, step.place - 1, $3
                 FROM unnest($2::text[]) WITH ORDINALITY AS step(id, place)",
                &[&run.id, &steps, &StepStatus::Pending.as_str()],
            )?;
            insert_events(&mut tx, run.id, &now, &events)?;
            // Wakes the workers waiting in `wait_for_work` (on commit).
            tx.batch_execute(&format!("NOTIFY {WORK_CHANNEL}"))?;
            tx.commit()?;
            Ok(())
        })?;
        self.notify(&Committed::RunCreated { run_id: run.id })?;
        self.committed(run.id, &now, &events)
    }

    fn set_run_status(&self, run_id: &str, status: RunStatus, error: Option<&str>) -> Result<()> {
        let now = now();
        let error = opt_text(error);
        let data = serde_json::json!({ "status": status.as_str(), "error": error });
        let events = [Event::new(None, "run_status", data)];
        self.write(run_id, true, |tx| {
            match status {
                RunStatus::Running => tx.execute(
                    "UPDATE runs SET status = $2, started_at = COALESCE(started_at, $3) WHERE id = $1",
                    &[&run_id, &status.as_str(), &now],
                )?,
                _ if status.is_final() => tx.execute(
                    "UPDATE runs SET status = $2, error = $3, finished_at = $4 WHERE id = $1",
                    &[&run_id, &status.as_str(), &error, &now],
                )?,
                _ => tx.execute(
                    "UPDATE runs SET status = $2 WHERE id = $1",
                    &[&run_id, &status.as_str()],
                )?,
            };
            insert_events(tx, run_id, &now, &events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn set_request(&self, run_id: &str, request: Option<&str>) -> Result<()> {
        let now = now();
        let events: Vec<Event> = request
            .map(|request| {
                let data = serde_json::json!({ "request": request });
                Event::new(None, "run_requested", data)
            })
            .into_iter()
            .collect();
        let request = opt_text(request);
        self.write(run_id, true, |tx| {
            tx.execute(
                "UPDATE runs SET request = $2 WHERE id = $1",
                &[&run_id, &request],
            )?;
            insert_events(tx, run_id, &now, &events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn request(&self, run_id: &str) -> Result<Option<String>> {
        self.with(|client| {
            let row = client.query_opt("SELECT request FROM runs WHERE id = $1", &[&run_id])?;
            row.map(|row| row.get(0))
                .ok_or_else(|| StoreError::UnknownRun(run_id.to_string()))
        })
    }

    fn upgrade_definition(
        &self,
        run_id: &str,
        definition: &str,
        steps: &[&str],
        summary: &Value,
    ) -> Result<()> {
        let now = now();
        let hash = definition_hash(definition);
        let data = serde_json::json!({ "definition_hash": hash, "changes": summary });
        let events = [Event::new(None, "run_upgraded", data)];
        self.write(run_id, true, |tx| {
            tx.execute(
                "UPDATE runs SET definition_hash = $2 WHERE id = $1",
                &[&run_id, &hash],
            )?;
            tx.execute(
                "UPDATE run_texts SET definition = $2 WHERE run_id = $1",
                &[&run_id, &super::text(definition)],
            )?;
            let existing: Vec<String> = tx
                .query("SELECT step_id FROM steps WHERE run_id = $1", &[&run_id])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let wanted: std::collections::HashSet<&str> = steps.iter().copied().collect();
            let existing: std::collections::HashSet<&str> =
                existing.iter().map(String::as_str).collect();
            let removed: Vec<&str> = existing
                .iter()
                .copied()
                .filter(|id| !wanted.contains(id))
                .collect();
            // One statement each for the removed, kept and new steps (one
            // round trip each, not one per step).
            tx.execute(
                "DELETE FROM steps WHERE run_id = $1 AND step_id = ANY($2::text[])",
                &[&run_id, &removed],
            )?;
            let (kept, new): (Placed<'_>, Placed<'_>) = steps
                .iter()
                .copied()
                .enumerate()
                .partition(|(_, id)| existing.contains(id));
            for (sql, list) in [
                (
                    "UPDATE steps SET position = step.position
                     FROM unnest($2::text[], $3::bigint[]) AS step(id, position)
                     WHERE steps.run_id = $1 AND steps.step_id = step.id",
                    kept,
                ),
                (
                    "INSERT INTO steps (run_id, step_id, position, status)
                     SELECT $1, step.id, step.position, 'pending'
                     FROM unnest($2::text[], $3::bigint[]) AS step(id, position)",
                    new,
                ),
            ] {
                let ids: Vec<&str> = list.iter().map(|(_, id)| *id).collect();
                let positions: Vec<i64> = list.iter().map(|(at, _)| *at as i64).collect();
                tx.execute(sql, &[&run_id, &ids, &positions])?;
            }
            insert_events(tx, run_id, &now, &events)
        })?;
        self.committed(run_id, &now, &events)
    }

    fn prune(&self, cutoff: &str) -> Result<Vec<String>> {
        let ids: Vec<String> = self.with(|client| {
            let mut tx = client.transaction()?;
            // Every dependent row goes with its run (ON DELETE CASCADE).
            let ids = tx
                .query(
                    "DELETE FROM runs WHERE created_at < $1
                     AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
                     RETURNING id",
                    &[&cutoff],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.commit()?;
            Ok(ids)
        })?;
        for id in &ids {
            self.notify(&Committed::RunRemoved { run_id: id })?;
        }
        Ok(ids)
    }

    fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        let ids: Vec<String> = self.with(|client| {
            Ok(client
                .query(
                    "SELECT id FROM runs WHERE left(id, length($1)) = $1
                     ORDER BY created_at DESC LIMIT 6",
                    &[&prefix],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })?;
        match ids.as_slice() {
            [] => Err(StoreError::UnknownRun(prefix.to_string())),
            [only] => Ok(only.clone()),
            _ if ids.iter().any(|id| id == prefix) => Ok(prefix.to_string()),
            _ => Err(StoreError::AmbiguousRun {
                prefix: prefix.to_string(),
                candidates: ids,
            }),
        }
    }

    fn run(&self, run_id: &str) -> Result<RunRecord> {
        self.with(|client| {
            client
                .query_opt(
                    &format!("SELECT {} FROM runs WHERE id = $1", RunRecord::COLUMNS),
                    &[&run_id],
                )?
                .map(|row| RunRecord::from_row(&row))
                .ok_or_else(|| StoreError::UnknownRun(run_id.to_string()))
        })
    }

    fn open_runs(&self) -> Result<Vec<RunRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM runs WHERE status IN ('pending', 'running')
                         ORDER BY created_at DESC, id",
                        RunRecord::COLUMNS
                    ),
                    &[],
                )?
                .iter()
                .map(RunRecord::from_row)
                .collect())
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM runs ORDER BY created_at DESC, id",
                        RunRecord::COLUMNS
                    ),
                    &[],
                )?
                .iter()
                .map(RunRecord::from_row)
                .collect())
        })
    }
}

impl LeaseStore for PgStore {
    fn claim_run(&self, run_id: &str, pid: u32) -> Result<bool> {
        let now = now();
        let token = uuid::Uuid::new_v4().to_string();
        let claimed = self.with(|client| {
            let mut tx = client.transaction()?;
            let Some(row) = tx.query_opt(
                "SELECT status, heartbeat_at, driver_pid, driver_host FROM runs
                 WHERE id = $1 FOR UPDATE",
                &[&run_id],
            )?
            else {
                return Err(StoreError::UnknownRun(run_id.to_string()));
            };
            let status: String = row.get(0);
            let heartbeat: Option<String> = row.get(1);
            let owner: Option<i64> = row.get(2);
            let owner_host: Option<String> = row.get(3);
            // A run `blocked` on an agent's approval is still driven: its
            // driver waits for the answer and keeps beating.
            let waiting_for_approval = status == RunStatus::Blocked.as_str() && {
                let pending: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM approvals WHERE run_id = $1 AND status = 'pending'",
                        &[&run_id],
                    )?
                    .get(0);
                pending > 0
            };
            let this_process =
                owner == Some(i64::from(pid)) && owner_host.as_deref() == Some(host_name());
            let driven_elsewhere = (status == RunStatus::Running.as_str() || waiting_for_approval)
                && !is_stale(heartbeat.as_deref())
                && driver_may_live(owner, owner_host.as_deref())
                && !this_process;
            if driven_elsewhere {
                return Ok(None);
            }
            tx.execute(
                "UPDATE runs SET status = $2, driver_pid = $3, driver_host = $4, heartbeat_at = $5,
                                 request = NULL, started_at = COALESCE(started_at, $5),
                                 finished_at = NULL, error = NULL, lease_owner = $6
                 WHERE id = $1",
                &[
                    &run_id,
                    &RunStatus::Running.as_str(),
                    &i64::from(pid),
                    &host_name(),
                    &now,
                    &token,
                ],
            )?;
            let data = serde_json::json!({
                "status": "running",
                "previous": status,
                "pid": pid,
                "host": host_name(),
            });
            let events = [Event::new(None, "run_claimed", data)];
            insert_events(&mut tx, run_id, &now, &events)?;
            tx.commit()?;
            Ok(Some(events))
        })?;
        let Some(events) = claimed else {
            return Ok(false);
        };
        self.set_lease_token(run_id, Some(token));
        self.committed(run_id, &now, &events)?;
        Ok(true)
    }

    fn holds_lease(&self, run_id: &str) -> Result<bool> {
        let Some(token) = self.lease_token(run_id) else {
            return Ok(true);
        };
        self.with(|client| {
            let owner: Option<String> = client
                .query_opt("SELECT lease_owner FROM runs WHERE id = $1", &[&run_id])?
                .and_then(|row| row.get(0));
            Ok(owner.as_deref() == Some(token.as_str()))
        })
    }

    fn heartbeat(&self, run_id: &str) -> Result<()> {
        let now = now();
        self.write(run_id, true, |tx| {
            tx.execute(
                "UPDATE runs SET heartbeat_at = $2 WHERE id = $1",
                &[&run_id, &now],
            )?;
            Ok(())
        })
    }
}

/// Steps with their places in a definition's list.
type Placed<'a> = Vec<(usize, &'a str)>;
