//! Run leases and fencing: one driver per run.
//!
//! A driver claims a run ([`crate::store::LeaseStore::claim_run`]) by writing a fresh
//! owner token into `runs.lease_owner`; the lease lasts while its heartbeat
//! is fresh (see [`crate::store::is_stale`]). The claiming handle keeps the
//! token ([`HeldLeases`]), and triggers of the schema on every table a driver
//! writes ask, inside the writing transaction, the connection's
//! `wfhost_lease_lost(run_id, owner)` whether the run's owner is still the
//! token this handle holds. So once another process has taken the run over
//! (this one was stopped or hung past its lease), every write this handle
//! tries for the run fails with [`crate::store::StoreError::LeaseLost`] and
//! nothing of it is committed: no new attempt starts, no outcome is
//! recorded, no status is overwritten. A handle that holds no lease on a run
//! (every other command) writes it freely.
//!
//! The triggers are part of the schema rather than made per connection
//! (they were connection-private `TEMP` triggers, whose creation cost every
//! run ~0.8 ms); a connection without the function cannot write those
//! tables at all, which fails closed.

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use crate::store::held::HeldLeases;

/// The message the fencing triggers abort with.
pub(super) const LEASE_LOST: &str = "wfhost: lease lost";

/// Give `conn` the function the fencing triggers call:
/// `wfhost_lease_lost(run_id, owner)` is true when `held` has a token for
/// `run_id` and `owner` (the run's `lease_owner`) is not it.
pub(super) fn register(conn: &Connection, held: HeldLeases) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "wfhost_lease_lost",
        2,
        // Innocuous (no side effects), so the schema's triggers may call
        // it with `trusted_schema` off; not deterministic (leases change).
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS,
        move |context| {
            let run_id = context.get_raw(0).as_str_or_null().ok().flatten();
            let owner = context.get_raw(1).as_str_or_null().ok().flatten();
            Ok(run_id.is_some_and(|run_id| held.lost(run_id, owner)))
        },
    )
}

/// A fresh owner token.
pub(super) fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}
