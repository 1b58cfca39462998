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
            let data = serde_json::json!({
                "approval": id,
                "call_id": new.call_id,
                "tool": new.tool,
                "arguments": new.arguments,
                "prompt": new.prompt,
            });
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
            let Some(found) = tx
                .query_row(&select, params![id, run_id], ApprovalRecord::from_row)
                .optional()?
            else {
                return Ok(Err(format!(
                    "run {run_id} has no approval {id} (see `wfhost approvals {run_id}`)"
                )));
            };
            if found.status != ApprovalStatus::Pending {
                return Ok(Err(format!(
                    "approval {id} of run {run_id} is already {}",
                    found.status.as_str()
                )));
            }
            tx.execute(
                "UPDATE approvals SET status = ?2, note = ?3, answered_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), note, at],
            )?;
            let data = serde_json::json!({
                "approval": id,
                "call_id": found.call_id,
                "tool": found.tool,
                "status": status.as_str(),
                "note": note,
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("home")).unwrap();
        store
            .create_run(&NewRun {
                id: "r1",
                workflow_name: "wf",
                workflow_path: "wf.yaml",
                workflow_dir: "/tmp",
                definition: "name: wf\n",
                args: &json!({}),
                steps: &["a"],
                triggered_by: None,
                priority: 0,
            })
            .unwrap();
        (dir, store)
    }

    fn new_approval<'a>(call_id: &'a str, arguments: &'a str) -> NewApproval<'a> {
        NewApproval {
            run_id: "r1",
            step_id: "a",
            agent_id: "rev",
            attempt: 1,
            iteration: 0,
            call_hash: Box::leak(call_hash("exec", arguments).into_boxed_str()),
            call_id,
            tool: "exec",
            arguments,
            prompt: "run tests?",
        }
    }

    #[test]
    fn approvals_round_trip() {
        let (_dir, store) = store();
        let asked = store
            .create_approval(&new_approval("c1", r#"{"command":"cargo test"}"#))
            .unwrap();
        assert_eq!(asked.status, ApprovalStatus::Pending);
        assert_eq!(store.pending_approvals("r1").unwrap(), 1);
        assert_eq!(store.approvals(Some("r1"), false).unwrap().len(), 1);
        assert_eq!(store.approvals(None, false).unwrap()[0].id, asked.id);

        let hash = call_hash("exec", r#"{"command":"cargo test"}"#);
        let found = store
            .find_approval("r1", "a", (1, 0), &hash)
            .unwrap()
            .unwrap();
        assert_eq!(found.id, asked.id);
        let other = call_hash("exec", r#"{"command":"rm"}"#);
        assert!(store
            .find_approval("r1", "a", (1, 0), &other)
            .unwrap()
            .is_none());
        // Another attempt or iteration does not see it.
        assert!(store
            .find_approval("r1", "a", (2, 0), &hash)
            .unwrap()
            .is_none());
        assert!(store
            .find_approval("r1", "a", (1, 1), &hash)
            .unwrap()
            .is_none());

        let answered = store
            .answer_approval("r1", asked.id, true, Some("fine"))
            .unwrap()
            .unwrap();
        assert_eq!(answered.status, ApprovalStatus::Approved);
        assert_eq!(answered.note.as_deref(), Some("fine"));
        assert!(answered.answered_at.is_some());
        assert_eq!(store.pending_approvals("r1").unwrap(), 0);
        assert!(store.approvals(Some("r1"), false).unwrap().is_empty());
        assert_eq!(store.approvals(Some("r1"), true).unwrap().len(), 1);

        let again = store
            .answer_approval("r1", asked.id, false, Some("no"))
            .unwrap()
            .unwrap_err();
        assert!(again.contains("already approved"), "{again}");
        let missing = store
            .answer_approval("r1", 999, true, None)
            .unwrap()
            .unwrap_err();
        assert!(missing.contains("has no approval 999"), "{missing}");

        let second = store.create_approval(&new_approval("c2", "{}")).unwrap();
        let denied = store
            .answer_approval("r1", second.id, false, Some("too risky"))
            .unwrap()
            .unwrap();
        assert_eq!(denied.status, ApprovalStatus::Denied);
        assert_eq!(
            store.approval(second.id).unwrap().unwrap().note.as_deref(),
            Some("too risky")
        );

        let kinds: Vec<String> = store
            .events("r1", Some("a"))
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "approval_requested",
                "approval_answered",
                "approval_requested",
                "approval_answered"
            ]
        );
    }

    #[test]
    fn a_run_blocked_on_an_approval_is_still_driven() {
        let (_dir, store) = store();
        // Driven by another live process (pid 1 always exists).
        assert!(store.claim_run("r1", 1).unwrap());
        let asked = store.create_approval(&new_approval("c1", "{}")).unwrap();
        store
            .set_run_status("r1", crate::store::RunStatus::Blocked, None)
            .unwrap();
        let me = std::process::id();
        assert!(
            !store.claim_run("r1", me).unwrap(),
            "its driver waits for the answer"
        );
        store
            .answer_approval("r1", asked.id, true, None)
            .unwrap()
            .unwrap();
        assert!(
            store.claim_run("r1", me).unwrap(),
            "blocked without a pending approval: claimable"
        );
    }

    #[test]
    fn records_round_trip_in_order() {
        let (_dir, store) = store();
        for (kind, key) in [("completion", "h1"), ("tool_result", "c1")] {
            store
                .append_agent_record(&NewAgentRecord {
                    run_id: "r1",
                    step_id: "a",
                    agent_id: "rev",
                    attempt: 1,
                    kind,
                    key,
                    payload: &json!({"k": key}),
                })
                .unwrap();
        }
        let all = store.agent_records("r1", Some("a"), None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, "completion");
        assert_eq!(all[1].payload, json!({"k": "c1"}));
        assert!(store
            .agent_records("r1", None, Some("other"))
            .unwrap()
            .is_empty());
        assert_eq!(store.last_completed_attempt("r1", "a").unwrap(), 0);
    }

    #[test]
    fn a_new_attempt_asks_again_and_closes_the_old_question() {
        let (_dir, store) = store();
        let first = store
            .create_approval(&new_approval("c1", r#"{"command":"x"}"#))
            .unwrap();
        let again = store
            .create_approval(&NewApproval {
                attempt: 2,
                ..new_approval("c1", r#"{"command":"x"}"#)
            })
            .unwrap();
        assert_ne!(first.id, again.id);
        let old = store.approval(first.id).unwrap().unwrap();
        assert_eq!(old.status, ApprovalStatus::Denied);
        assert!(
            old.note
                .as_deref()
                .unwrap()
                .contains(&format!("approval {}", again.id)),
            "{:?}",
            old.note
        );
        assert_eq!(store.pending_approvals("r1").unwrap(), 1);
        assert_eq!(call_hash("a", "b").len(), 64);
        assert_ne!(call_hash("a", "bc"), call_hash("ab", "c"));
    }
}
