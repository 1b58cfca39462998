//! Runs (creating them, their status, control requests, upgrades, pruning
//! and listing) and their lease (claiming it, the heartbeat).

use std::path::Path;

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::events::insert_event;
use super::rows::FromRow;
use super::{lease, offload, SqliteStore};
use crate::store::{
    definition_hash, driver_alive, is_stale, now, Committed, EventLog, LeaseStore, NewRun, Result,
    RunRecord, RunStatus, RunStore, StepStatus, StoreError,
};

impl RunStore for SqliteStore {
    fn home(&self) -> &Path {
        &self.home
    }

    fn flush_observers(&self) {
        for observer in &self.observers {
            observer.flush();
        }
    }

    fn create_run(&self, run: &NewRun<'_>) -> Result<()> {
        offload(|| {
            let now = now();
            let hash = definition_hash(run.definition);
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO runs (id, workflow_name, workflow_path, workflow_dir, definition,
                               definition_hash, args, status, created_at, triggered_by, priority)
             VALUES (?1, ?2, ?3, ?4, '', ?5, '', ?6, ?7, ?8, ?9)",
                params![
                    run.id,
                    run.workflow_name,
                    run.workflow_path,
                    run.workflow_dir,
                    hash,
                    RunStatus::Pending.as_str(),
                    now,
                    run.triggered_by,
                    run.priority
                ],
            )?;
            tx.execute(
                "INSERT INTO run_texts (run_id, definition, args) VALUES (?1, ?2, ?3)",
                params![run.id, run.definition, run.args.to_string()],
            )?;
            // One statement prepared for every step (a wide run has
            // thousands).
            let mut insert_step = tx.prepare(
                "INSERT INTO steps (run_id, step_id, position, status) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (position, step) in run.steps.iter().enumerate() {
                insert_step.execute(params![
                    run.id,
                    step,
                    position as i64,
                    StepStatus::Pending.as_str()
                ])?;
            }
            drop(insert_step);
            let data = serde_json::json!({
                "workflow": run.workflow_name,
                "definition_hash": hash,
                "triggered_by": run.triggered_by,
                "priority": run.priority,
            });
            insert_event(&tx, run.id, None, &now, "run_created", &data)?;
            tx.commit()?;
            drop(conn);
            self.notify(&Committed::RunCreated { run_id: run.id })?;
            self.committed_event(run.id, None, &now, "run_created", &data)
        })
    }

    fn set_run_status(&self, run_id: &str, status: RunStatus, error: Option<&str>) -> Result<()> {
        offload(|| {
            let now = now();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match status {
            RunStatus::Running => tx.execute(
                "UPDATE runs SET status = ?2, started_at = COALESCE(started_at, ?3) WHERE id = ?1",
                params![run_id, status.as_str(), now],
            )?,
            _ if status.is_final() => tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                params![run_id, status.as_str(), error, now],
            )?,
            _ => tx.execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1",
                params![run_id, status.as_str()],
            )?,
        };
            let data = serde_json::json!({ "status": status.as_str(), "error": error });
            insert_event(&tx, run_id, None, &now, "run_status", &data)?;
            tx.commit()?;
            drop(conn);
            self.committed_event(run_id, None, &now, "run_status", &data)
        })
    }

    fn set_request(&self, run_id: &str, request: Option<&str>) -> Result<()> {
        offload(|| {
            self.conn().execute(
                "UPDATE runs SET request = ?2 WHERE id = ?1",
                params![run_id, request],
            )?;
            if let Some(request) = request {
                let data = serde_json::json!({ "request": request });
                self.append_event(run_id, None, "run_requested", &data)?;
            }
            Ok(())
        })
    }

    fn request(&self, run_id: &str) -> Result<Option<String>> {
        offload(|| {
            Ok(self.conn().query_row(
                "SELECT request FROM runs WHERE id = ?1",
                [run_id],
                |row| row.get(0),
            )?)
        })
    }

    fn upgrade_definition(
        &self,
        run_id: &str,
        definition: &str,
        steps: &[&str],
        summary: &Value,
    ) -> Result<()> {
        offload(|| {
            let now = now();
            let hash = definition_hash(definition);
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE runs SET definition_hash = ?2 WHERE id = ?1",
                params![run_id, hash],
            )?;
            tx.execute(
                "UPDATE run_texts SET definition = ?2 WHERE run_id = ?1",
                params![run_id, definition],
            )?;
            let existing: Vec<String> = {
                let mut stmt = tx.prepare("SELECT step_id FROM steps WHERE run_id = ?1")?;
                let ids = stmt
                    .query_map([run_id], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                ids
            };
            // Sets, and statements prepared once: a wide run has thousands
            // of steps.
            let wanted: std::collections::HashSet<&str> = steps.iter().copied().collect();
            let existing: std::collections::HashSet<&str> =
                existing.iter().map(String::as_str).collect();
            for id in &existing {
                if !wanted.contains(id) {
                    tx.prepare_cached("DELETE FROM steps WHERE run_id = ?1 AND step_id = ?2")?
                        .execute(params![run_id, id])?;
                }
            }
            for (position, id) in steps.iter().enumerate() {
                let sql = if existing.contains(id) {
                    "UPDATE steps SET position = ?3 WHERE run_id = ?1 AND step_id = ?2"
                } else {
                    "INSERT INTO steps (run_id, step_id, position, status)
                     VALUES (?1, ?2, ?3, 'pending')"
                };
                tx.prepare_cached(sql)?
                    .execute(params![run_id, id, position as i64])?;
            }
            let data = serde_json::json!({ "definition_hash": hash, "changes": summary });
            insert_event(&tx, run_id, None, &now, "run_upgraded", &data)?;
            tx.commit()?;
            drop(conn);
            self.committed_event(run_id, None, &now, "run_upgraded", &data)
        })
    }

    fn prune(&self, cutoff: &str) -> Result<Vec<String>> {
        offload(|| {
            let ids: Vec<String> = {
                let conn = self.conn();
                let mut stmt = conn.prepare(
                    "SELECT id FROM runs WHERE created_at < ?1
                 AND status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')",
                )?;
                let ids = stmt
                    .query_map([cutoff], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                ids
            };
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for id in &ids {
                for table in [
                    "agent_records",
                    "approvals",
                    "events",
                    "step_attempts",
                    "steps",
                    "run_texts",
                    "runs",
                ] {
                    let column = if table == "runs" { "id" } else { "run_id" };
                    tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [id])?;
                }
            }
            tx.commit()?;
            drop(conn);
            if !ids.is_empty() {
                // Give the deleted rows' space back to the file system (and
                // empty the WAL the copy went through). The runs are gone
                // either way; a database too busy to compact stays as big.
                let compacted = self
                    .conn()
                    .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
                if let Err(error) = compacted {
                    tracing::warn!("pruned, but could not compact the database: {error}");
                }
            }
            for id in &ids {
                self.notify(&Committed::RunRemoved { run_id: id })?;
            }
            Ok(ids)
        })
    }

    fn resolve_run_id(&self, prefix: &str) -> Result<String> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
            "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY created_at DESC LIMIT 6",
        )?;
            let ids: Vec<String> = stmt
                .query_map([prefix], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            match ids.as_slice() {
                [] => Err(StoreError::UnknownRun(prefix.to_string())),
                [only] => Ok(only.clone()),
                _ if ids.iter().any(|id| id == prefix) => Ok(prefix.to_string()),
                _ => Err(StoreError::AmbiguousRun {
                    prefix: prefix.to_string(),
                    candidates: ids,
                }),
            }
        })
    }

    fn run(&self, run_id: &str) -> Result<RunRecord> {
        offload(|| {
            let conn = self.conn();
            conn.query_row(
                &format!("SELECT {} FROM runs WHERE id = ?1", RunRecord::COLUMNS),
                [run_id],
                RunRecord::from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_string()))
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {} FROM runs ORDER BY created_at DESC, id",
                RunRecord::COLUMNS
            ))?;
            let runs = stmt
                .query_map([], RunRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(runs)
        })
    }
}

impl LeaseStore for SqliteStore {
    fn claim_run(&self, run_id: &str, pid: u32) -> Result<bool> {
        offload(|| {
            // A new lease: this handle's earlier one (if any) is given up
            // first, so its own fence does not stop the claim; it is kept
            // if the claim fails.
            let earlier = self.held.token(run_id);
            self.held.set(run_id, None);
            let claimed = self.claim(run_id, pid);
            if self.held.token(run_id).is_none() {
                self.held.set(run_id, earlier);
            }
            claimed
        })
    }

    fn holds_lease(&self, run_id: &str) -> Result<bool> {
        offload(|| {
            let Some(token) = self.held.token(run_id) else {
                // No lease of this handle on the run to lose.
                return Ok(true);
            };
            let owner: Option<String> = self
                .conn()
                .prepare_cached("SELECT lease_owner FROM runs WHERE id = ?1")?
                .query_row([run_id], |row| row.get(0))?;
            Ok(owner.as_deref() == Some(token.as_str()))
        })
    }

    fn heartbeat(&self, run_id: &str) -> Result<()> {
        offload(|| {
            self.conn()
                .prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1")?
                .execute(params![run_id, now()])?;
            Ok(())
        })
    }
}

impl SqliteStore {
    /// Claim `run_id` for process `pid` with a fresh lease token, which
    /// this handle holds from the commit on; false when another live driver
    /// holds the run.
    fn claim(&self, run_id: &str, pid: u32) -> Result<bool> {
        let now = now();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (status, heartbeat, owner): (String, Option<String>, Option<i64>) = tx.query_row(
            "SELECT status, heartbeat_at, driver_pid FROM runs WHERE id = ?1",
            [run_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        // A run `blocked` on an agent's approval is still driven: its
        // driver waits for the answer and keeps beating.
        let waiting_for_approval = status == RunStatus::Blocked.as_str()
            && tx.query_row(
                "SELECT COUNT(*) FROM approvals WHERE run_id = ?1 AND status = 'pending'",
                [run_id],
                |row| row.get::<_, i64>(0),
            )? > 0;
        let driven_elsewhere = (status == RunStatus::Running.as_str() || waiting_for_approval)
            && !is_stale(heartbeat.as_deref())
            && driver_alive(owner)
            && owner != Some(i64::from(pid));
        if driven_elsewhere {
            return Ok(false);
        }
        let token = lease::new_token();
        tx.execute(
            "UPDATE runs SET status = ?2, driver_pid = ?3, heartbeat_at = ?4, request = NULL,
                             started_at = COALESCE(started_at, ?4), finished_at = NULL, error = NULL,
                             lease_owner = ?5
             WHERE id = ?1",
            params![run_id, RunStatus::Running.as_str(), i64::from(pid), now, token],
        )?;
        let data = serde_json::json!({ "status": "running", "previous": status, "pid": pid });
        insert_event(&tx, run_id, None, &now, "run_claimed", &data)?;
        tx.commit()?;
        drop(conn);
        self.held.set(run_id, Some(token));
        self.committed_event(run_id, None, &now, "run_claimed", &data)?;
        Ok(true)
    }
}
