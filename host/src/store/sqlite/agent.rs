//! Agent steps in SQLite: recordings of model replies and tool results
//! (`agent_records`, replayed when a step runs again after a crash) and
//! tool calls held for a person's approval (`approvals`).

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::events::insert_event;
use super::rows::FromRow;
use super::{offload, SqliteStore};
use crate::store::{
    now, AgentRecord, AgentStore, ApprovalRecord, ApprovalStatus, NewAgentRecord, NewApproval,
    Result,
};

impl AgentStore for SqliteStore {
    fn append_agent_record(&self, record: &NewAgentRecord<'_>) -> Result<i64> {
        offload(|| {
            let conn = self.conn();
            conn.execute(
            "INSERT INTO agent_records (run_id, step_id, agent_id, attempt, kind, key, payload, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                record.run_id,
                record.step_id,
                record.agent_id,
                record.attempt,
                record.kind,
                record.key,
                record.payload.to_string(),
                now()
            ],
        )?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn agent_records(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {} FROM agent_records
             WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) AND (?3 IS NULL OR agent_id = ?3)
             ORDER BY seq",
                AgentRecord::COLUMNS
            ))?;
            let records = stmt
                .query_map(params![run_id, step_id, agent_id], AgentRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(records)
        })
    }

    fn find_approval(
        &self,
        run_id: &str,
        step_id: &str,
        (attempt, iteration): (u32, u32),
        call_hash: &str,
    ) -> Result<Option<ApprovalRecord>> {
        offload(|| {
            Ok(self
                .conn()
                .query_row(
                    &format!(
                    "SELECT {} FROM approvals WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3
                     AND iteration = ?4 AND call_hash = ?5 ORDER BY id DESC LIMIT 1",
                    ApprovalRecord::COLUMNS
                ),
                    params![run_id, step_id, attempt, iteration, call_hash],
                    ApprovalRecord::from_row,
                )
                .optional()?)
        })
    }

    fn create_approval(&self, new: &NewApproval<'_>) -> Result<ApprovalRecord> {
        offload(|| {
            let at = now();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO approvals (run_id, step_id, agent_id, attempt, iteration, call_hash,
                                    call_id, tool, arguments, prompt, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11)",
                params![
                    new.run_id,
                    new.step_id,
                    new.agent_id,
                    new.attempt,
                    new.iteration,
                    new.call_hash,
                    new.call_id,
                    new.tool,
                    new.arguments,
                    new.prompt,
                    at
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE approvals SET status = 'denied', answered_at = ?5,
                 note = 'expired: the attempt that asked ended; asked again as approval ' || ?4
             WHERE run_id = ?1 AND step_id = ?2 AND status = 'pending' AND id != ?4
               AND NOT (attempt = ?3 AND iteration = ?6)",
                params![new.run_id, new.step_id, new.attempt, id, at, new.iteration],
            )?;
            let data = new.requested_event(id);
            insert_event(
                &tx,
                new.run_id,
                Some(new.step_id),
                &at,
                "approval_requested",
                &data,
            )?;
            let record = tx.query_row(
                &format!(
                    "SELECT {} FROM approvals WHERE id = ?1",
                    ApprovalRecord::COLUMNS
                ),
                [id],
                ApprovalRecord::from_row,
            )?;
            tx.commit()?;
            drop(conn);
            self.committed_event(
                new.run_id,
                Some(new.step_id),
                &at,
                "approval_requested",
                &data,
            )?;
            Ok(record)
        })
    }

    fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>> {
        offload(|| {
            Ok(self
                .conn()
                .query_row(
                    &format!(
                        "SELECT {} FROM approvals WHERE id = ?1",
                        ApprovalRecord::COLUMNS
                    ),
                    [id],
                    ApprovalRecord::from_row,
                )
                .optional()?)
        })
    }

    fn approvals(&self, run_id: Option<&str>, all: bool) -> Result<Vec<ApprovalRecord>> {
        offload(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {} FROM approvals WHERE (?1 IS NULL OR run_id = ?1)
             AND (?2 OR status = 'pending') ORDER BY id",
                ApprovalRecord::COLUMNS
            ))?;
            let found = stmt
                .query_map(params![run_id, all], ApprovalRecord::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(found)
        })
    }

    fn pending_approvals(&self, run_id: &str) -> Result<u32> {
        offload(|| {
            Ok(self.conn().query_row(
                "SELECT COUNT(*) FROM approvals WHERE run_id = ?1 AND status = 'pending'",
                [run_id],
                |row| row.get(0),
            )?)
        })
    }

    fn answer_approval(
        &self,
        run_id: &str,
        id: i64,
        approved: bool,
        note: Option<&str>,
    ) -> Result<std::result::Result<ApprovalRecord, String>> {
        offload(|| {
            let at = now();
            let status = if approved {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let select = format!(
                "SELECT {} FROM approvals WHERE id = ?1 AND run_id = ?2",
                ApprovalRecord::COLUMNS
            );
            let found = tx
                .query_row(&select, params![id, run_id], ApprovalRecord::from_row)
                .optional()?;
            let found = match ApprovalRecord::answerable(run_id, id, found) {
                Ok(found) => found,
                Err(why) => return Ok(Err(why)),
            };
            tx.execute(
                "UPDATE approvals SET status = ?2, note = ?3, answered_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), note, at],
            )?;
            let data = found.answered_event(status, note);
            insert_event(
                &tx,
                run_id,
                Some(&found.step_id),
                &at,
                "approval_answered",
                &data,
            )?;
            let record = tx.query_row(&select, params![id, run_id], ApprovalRecord::from_row)?;
            tx.commit()?;
            drop(conn);
            self.committed_event(
                run_id,
                Some(&found.step_id),
                &at,
                "approval_answered",
                &data,
            )?;
            Ok(Ok(record))
        })
    }
}
