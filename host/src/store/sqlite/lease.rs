//! Run leases and fencing: one driver per run.
//!
//! A driver claims a run ([`crate::store::LeaseStore::claim_run`]) by writing a fresh
//! owner token into `runs.lease_owner`; the lease lasts while its heartbeat
//! is fresh (see [`crate::store::is_stale`]). The claiming handle
//! remembers the token in a connection-private `TEMP` table, and `TEMP`
//! triggers on every table a driver writes check, inside the writing
//! transaction, that the run's owner is still that token. So once another
//! process has taken the run over (this one was stopped or hung past its
//! lease), every write this handle tries for the run fails with
//! [`crate::store::StoreError::LeaseLost`] and nothing of it is committed: no new
//! attempt starts, no outcome is recorded, no status is overwritten.

use rusqlite::Connection;

/// The message the fencing triggers abort with.
pub(super) const LEASE_LOST: &str = "wfhost: lease lost";

/// The tables a driver writes, with the column naming the run and the
/// operations to fence.
const FENCED: &[(&str, &str, &[&str])] = &[
    ("steps", "run_id", &["INSERT", "UPDATE", "DELETE"]),
    ("step_attempts", "run_id", &["INSERT", "UPDATE", "DELETE"]),
    ("events", "run_id", &["INSERT"]),
    ("agent_records", "run_id", &["INSERT"]),
    ("approvals", "run_id", &["INSERT"]),
];

/// Create this connection's lease table and fencing triggers.
pub(super) fn install(conn: &Connection) -> rusqlite::Result<()> {
    let mut sql = String::from(
        "CREATE TEMP TABLE IF NOT EXISTS held_leases (run_id TEXT PRIMARY KEY, token TEXT NOT NULL);
         CREATE TEMP TRIGGER IF NOT EXISTS fence_runs BEFORE UPDATE ON runs
         WHEN EXISTS (SELECT 1 FROM held_leases h
                      WHERE h.run_id = OLD.id AND h.token IS NOT OLD.lease_owner)
         BEGIN SELECT RAISE(ABORT, 'wfhost: lease lost'); END;\n",
    );
    for (table, column, operations) in FENCED {
        for operation in *operations {
            let row = if *operation == "DELETE" { "OLD" } else { "NEW" };
            sql.push_str(&format!(
                "CREATE TEMP TRIGGER IF NOT EXISTS fence_{table}_{op} BEFORE {operation} ON {table}
                 WHEN EXISTS (SELECT 1 FROM held_leases h
                              WHERE h.run_id = {row}.{column}
                                AND h.token IS NOT (SELECT lease_owner FROM runs WHERE id = {row}.{column}))
                 BEGIN SELECT RAISE(ABORT, '{LEASE_LOST}'); END;\n",
                op = operation.to_ascii_lowercase()
            ));
        }
    }
    conn.execute_batch(&sql)
}

/// A fresh owner token.
pub(super) fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}
