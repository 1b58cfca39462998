//! Reading the store's records from PostgreSQL rows.

use postgres::Row;
use serde_json::Value;

use super::driver_may_live;
use crate::store::{
    is_stale, AgentRecord, ApprovalRecord, ApprovalStatus, EventRecord, RunRecord, RunStatus,
    StepRecord, StepStatus,
};

/// A record read from one row of its table.
pub(super) trait FromRow: Sized {
    /// The columns to select, in the order [`FromRow::from_row`] reads them.
    const COLUMNS: &'static str;
    /// The record of `row`.
    fn from_row(row: &Row) -> Self;
}

/// A count or attempt number as the records keep it.
pub(super) fn small(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

impl FromRow for RunRecord {
    const COLUMNS: &'static str = "id, workflow_name, workflow_path, workflow_dir, \
        definition_hash, (SELECT args FROM run_texts t WHERE t.run_id = runs.id), status, error, \
        created_at, started_at, finished_at, \
        (SELECT definition FROM run_texts t WHERE t.run_id = runs.id), \
        heartbeat_at, driver_pid, request, triggered_by, priority, driver_host";

    fn from_row(row: &Row) -> RunRecord {
        let status: String = row.get(6);
        let status = RunStatus::parse(&status).unwrap_or(RunStatus::Failed);
        let heartbeat_at: Option<String> = row.get(12);
        let driver_pid: Option<i64> = row.get(13);
        let driver_host: Option<String> = row.get(17);
        RunRecord {
            stale: status == RunStatus::Running
                && (is_stale(heartbeat_at.as_deref())
                    || !driver_may_live(driver_pid, driver_host.as_deref())),

            heartbeat_at,
            driver_pid,
            driver_host,
            request: row.get(14),
            id: row.get(0),
            workflow: row.get(1),
            workflow_path: row.get(2),
            workflow_dir: row.get(3),
            definition_hash: row.get(4),
            args: parse_json(row.get::<_, Option<String>>(5).unwrap_or_default()),
            status,
            error: row.get(7),
            created_at: row.get(8),
            started_at: row.get(9),
            finished_at: row.get(10),
            definition: row.get::<_, Option<String>>(11).unwrap_or_default(),
            triggered_by: row.get(15),
            priority: row.get(16),
        }
    }
}

impl FromRow for StepRecord {
    const COLUMNS: &'static str =
        "step_id, status, attempts, started_at, finished_at, output, error, next_attempt_at, max_attempts";

    fn from_row(row: &Row) -> StepRecord {
        let status: String = row.get(1);
        StepRecord {
            id: row.get(0),
            status: StepStatus::parse(&status).unwrap_or(StepStatus::Failed),
            attempts: small(row.get(2)),
            started_at: row.get(3),
            finished_at: row.get(4),
            output: row.get::<_, Option<String>>(5).map(parse_json),
            error: row.get(6),
            next_attempt_at: row.get(7),
            max_attempts: small(row.get(8)),
        }
    }
}

impl FromRow for EventRecord {
    const COLUMNS: &'static str = "seq, step_id, at, kind, data";

    fn from_row(row: &Row) -> EventRecord {
        EventRecord {
            seq: row.get(0),
            step: row.get(1),
            at: row.get(2),
            kind: row.get(3),
            data: parse_json(row.get(4)),
        }
    }
}

impl FromRow for AgentRecord {
    const COLUMNS: &'static str = "seq, step_id, agent_id, attempt, kind, key, payload, at";

    fn from_row(row: &Row) -> AgentRecord {
        AgentRecord {
            seq: row.get(0),
            step_id: row.get(1),
            agent_id: row.get(2),
            attempt: small(row.get(3)),
            kind: row.get(4),
            key: row.get(5),
            payload: parse_json(row.get(6)),
            at: row.get(7),
        }
    }
}

impl FromRow for ApprovalRecord {
    const COLUMNS: &'static str = "id, run_id, step_id, agent_id, attempt, call_id, tool, \
        arguments, prompt, status, note, created_at, answered_at";

    fn from_row(row: &Row) -> ApprovalRecord {
        ApprovalRecord {
            id: row.get(0),
            run_id: row.get(1),
            step_id: row.get(2),
            agent_id: row.get(3),
            attempt: small(row.get(4)),
            call_id: row.get(5),
            tool: row.get(6),
            arguments: row.get(7),
            prompt: row.get(8),
            status: ApprovalStatus::parse(&row.get::<_, String>(9)),
            note: row.get(10),
            created_at: row.get(11),
            answered_at: row.get(12),
        }
    }
}

/// JSON stored as text; text that is not JSON is kept as a string.
pub(super) fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}
