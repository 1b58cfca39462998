//! Agent steps: recordings of model replies and tool results
//! (`agent_records`, replayed when a step runs again after a crash) and
//! tool calls held for a person's approval (`approvals`).

use super::rows::{small, FromRow};
use super::{insert_events, opt_text, text, Event, PgStore};
use crate::store::{
    now, AgentRecord, AgentStore, ApprovalRecord, ApprovalStatus, NewAgentRecord, NewApproval,
    Result,
};

impl AgentStore for PgStore {
    fn append_agent_record(&self, record: &NewAgentRecord<'_>) -> Result<i64> {
        self.write(record.run_id, false, |tx| {
            Ok(tx
                .query_one(
                    "INSERT INTO agent_records (run_id, step_id, agent_id, attempt, kind, key, payload, at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
                    &[
                        &record.run_id,
                        &record.step_id,
                        &record.agent_id,
                        &i64::from(record.attempt),
                        &record.kind,
                        &text(record.key),
                        &record.payload.to_string(),
                        &now(),
                    ],
                )?
                .get(0))
        })
    }

    fn agent_records(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM agent_records
                         WHERE run_id = $1 AND ($2::TEXT IS NULL OR step_id = $2)
                           AND ($3::TEXT IS NULL OR agent_id = $3)
                         ORDER BY seq",
                        AgentRecord::COLUMNS
                    ),
                    &[&run_id, &step_id, &agent_id],
                )?
                .iter()
                .map(AgentRecord::from_row)
                .collect())
        })
    }

    fn find_approval(
        &self,
        run_id: &str,
        step_id: &str,
        (attempt, iteration): (u32, u32),
        call_hash: &str,
    ) -> Result<Option<ApprovalRecord>> {
        self.with(|client| {
            Ok(client
                .query_opt(
                    &format!(
                        "SELECT {} FROM approvals WHERE run_id = $1 AND step_id = $2
                         AND attempt = $3 AND iteration = $4 AND call_hash = $5
                         ORDER BY id DESC LIMIT 1",
                        ApprovalRecord::COLUMNS
                    ),
                    &[
                        &run_id,
                        &step_id,
                        &i64::from(attempt),
                        &i64::from(iteration),
                        &call_hash,
                    ],
                )?
                .map(|row| ApprovalRecord::from_row(&row)))
        })
    }

    fn create_approval(&self, new: &NewApproval<'_>) -> Result<ApprovalRecord> {
        let at = now();
        let (arguments, prompt) = (text(new.arguments), text(new.prompt));
        let (record, events) = self.write(new.run_id, false, |tx| {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO approvals (run_id, step_id, agent_id, attempt, iteration, call_hash,
                                           call_id, tool, arguments, prompt, status, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11)
                     RETURNING id",
                    &[
                        &new.run_id,
                        &new.step_id,
                        &new.agent_id,
                        &i64::from(new.attempt),
                        &i64::from(new.iteration),
                        &new.call_hash,
                        &text(new.call_id),
                        &new.tool,
                        &arguments,
                        &prompt,
                        &at,
                    ],
                )?
                .get(0);
            tx.execute(
                "UPDATE approvals SET status = 'denied', answered_at = $5,
                 note = 'expired: the attempt that asked ended; asked again as approval ' || $4::BIGINT
                 WHERE run_id = $1 AND step_id = $2 AND status = 'pending' AND id != $4
                   AND NOT (attempt = $3 AND iteration = $6)",
                &[
                    &new.run_id,
                    &new.step_id,
                    &i64::from(new.attempt),
                    &id,
                    &at,
                    &i64::from(new.iteration),
                ],
            )?;
            let data = new.requested_event(id);
            let events = [Event::new(Some(new.step_id), "approval_requested", data)];
            insert_events(tx, new.run_id, &at, &events)?;
            let row = tx.query_one(
                &format!(
                    "SELECT {} FROM approvals WHERE id = $1",
                    ApprovalRecord::COLUMNS
                ),
                &[&id],
            )?;
            Ok((ApprovalRecord::from_row(&row), events))
        })?;
        self.committed(new.run_id, &at, &events)?;
        Ok(record)
    }

    fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>> {
        self.with(|client| {
            Ok(client
                .query_opt(
                    &format!(
                        "SELECT {} FROM approvals WHERE id = $1",
                        ApprovalRecord::COLUMNS
                    ),
                    &[&id],
                )?
                .map(|row| ApprovalRecord::from_row(&row)))
        })
    }

    fn approvals(&self, run_id: Option<&str>, all: bool) -> Result<Vec<ApprovalRecord>> {
        self.with(|client| {
            Ok(client
                .query(
                    &format!(
                        "SELECT {} FROM approvals WHERE ($1::TEXT IS NULL OR run_id = $1)
                         AND ($2 OR status = 'pending') ORDER BY id",
                        ApprovalRecord::COLUMNS
                    ),
                    &[&run_id, &all],
                )?
                .iter()
                .map(ApprovalRecord::from_row)
                .collect())
        })
    }

    fn pending_approvals(&self, run_id: &str) -> Result<u32> {
        self.with(|client| {
            let count: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM approvals WHERE run_id = $1 AND status = 'pending'",
                    &[&run_id],
                )?
                .get(0);
            Ok(small(count))
        })
    }

    fn answer_approval(
        &self,
        run_id: &str,
        id: i64,
        approved: bool,
        note: Option<&str>,
    ) -> Result<std::result::Result<ApprovalRecord, String>> {
        let at = now();
        let status = if approved {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        let note = opt_text(note);
        let select = format!(
            "SELECT {} FROM approvals WHERE id = $1 AND run_id = $2",
            ApprovalRecord::COLUMNS
        );
        let answered = self.write(run_id, false, |tx| {
            let found = tx
                .query_opt(&format!("{select} FOR UPDATE"), &[&id, &run_id])?
                .map(|row| ApprovalRecord::from_row(&row));
            let found = match ApprovalRecord::answerable(run_id, id, found) {
                Ok(found) => found,
                Err(why) => return Ok(Err(why)),
            };
            tx.execute(
                "UPDATE approvals SET status = $2, note = $3, answered_at = $4 WHERE id = $1",
                &[&id, &status.as_str(), &note, &at],
            )?;
            let data = found.answered_event(status, note.as_deref());
            let events = [Event::new(Some(&found.step_id), "approval_answered", data)];
            insert_events(tx, run_id, &at, &events)?;
            let row = tx.query_one(&select, &[&id, &run_id])?;
            Ok(Ok((ApprovalRecord::from_row(&row), events)))
        })?;
        match answered {
            Ok((record, events)) => {
                self.committed(run_id, &at, &events)?;
                Ok(Ok(record))
            }
            Err(message) => Ok(Err(message)),
        }
    }
}
