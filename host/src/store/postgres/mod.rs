//! The store in PostgreSQL: [`PgStore`] implements every role trait of
//! [`crate::store::roles`], for runs shared by several machines
//! (`--store postgres://…`, `WFHOST_STORE`, `[store] url`).
//!
//! Split as the SQLite backend is: runs and the lease (`runs`), steps,
//! attempts and whole transitions (`steps`), the journal (`events`), agent
//! transcripts and approvals (`agent`), artifacts, comments and tokens
//! (`notes`); `rows` reads records from rows, `schema` holds the
//! migrations, `pool` the connections.
//!
//! Fencing: a handle that claimed a run remembers its lease token; every
//! write transaction of that handle for the run first locks the run's row
//! and compares its `lease_owner` with the token, so once another process
//! took the run over the write fails with
//! [`StoreError::LeaseLost`](crate::store::StoreError::LeaseLost) and
//! commits nothing.
//!
//! Journal order: the events of every run get their sequence numbers under
//! one transaction-scoped advisory lock taken just before they are
//! inserted and held to the commit, so sequence numbers become visible in
//! order and a reader following `seq > after` (the API's event stream)
//! never skips one committed late.

mod agent;
mod events;
mod notes;
mod pool;
pub(crate) use pool::redact;
mod rows;
mod runs;
mod schema;
mod steps;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pool::Tx;
use serde_json::Value;

use super::held::HeldLeases;
use super::observer::{notify, Committed, StoreObserver};
use super::records::{driver_may_live, host_name};
use super::{Durability, Result, StoreError};
use pool::Pool;

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> StoreError {
        // The client's own text is only "db error": the server's message
        // (a missing column, a broken constraint …) is in its source.
        StoreError::Database(pool::with_causes(&error).into())
    }
}

/// Handle on a PostgreSQL database holding wfhost's runs.
///
/// The role traits are synchronous; each call takes a pooled connection and
/// runs off the async runtime's worker threads ([`pool::off_runtime`]).
pub struct PgStore {
    home: PathBuf,
    url: String,
    pool: Pool,
    /// The connection that listens for queued work, once a worker waits.
    work_listener: Mutex<Option<postgres::Client>>,
    /// The connection that listens for finished tasks, once a driver waits.
    outcome_listener: Mutex<Option<postgres::Client>>,
    /// Leases this handle holds.
    leases: HeldLeases,
    observers: Vec<Arc<dyn StoreObserver>>,
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user@host:port/db`)
    /// and bring its schema up to date; `home` keeps this machine's run
    /// folders (a local mirror) and caches.
    pub fn connect(url: &str, home: &Path, durability: Durability) -> Result<PgStore> {
        std::fs::create_dir_all(home).map_err(|source| StoreError::Io {
            path: home.to_path_buf(),
            source,
        })?;
        let home = std::fs::canonicalize(home).map_err(|source| StoreError::Io {
            path: home.to_path_buf(),
            source,
        })?;
        let pool = Pool::new(url, durability)?;
        pool.with(schema::migrate)?;
        Ok(PgStore {
            home,
            url: url.to_string(),
            work_listener: Mutex::new(None),
            outcome_listener: Mutex::new(None),
            pool,
            leases: HeldLeases::default(),
            observers: Vec::new(),
        })
    }

    /// This store, telling `observer` about every commit (after it).
    pub fn observed_by(mut self, observer: Arc<dyn StoreObserver>) -> PgStore {
        self.observers.push(observer);
        self
    }

    /// Run `work` on a pooled connection.
    fn with<T: Send>(&self, work: impl FnOnce(&mut pool::Db) -> Result<T> + Send) -> Result<T> {
        self.pool.with(work)
    }

    /// Run `work` in one transaction on `run_id`, fenced by this handle's
    /// lease on it (if it holds one), then commit. `exclusive`: the
    /// transaction updates the run's own row (lock it for update from the
    /// start, so two such transactions never deadlock upgrading a shared
    /// lock).
    fn write<T: Send>(
        &self,
        run_id: &str,
        exclusive: bool,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let token = self.lease_token(run_id);
        self.with(|client| {
            let mut tx = client.transaction()?;
            if let Some(token) = token {
                let lock = if exclusive { "UPDATE" } else { "SHARE" };
                let owner: Option<String> = tx
                    .query_opt(
                        &format!("SELECT lease_owner FROM runs WHERE id = $1 FOR {lock}"),
                        &[&run_id],
                    )?
                    .and_then(|row| row.get(0));
                if owner.as_deref() != Some(token.as_str()) {
                    return Err(StoreError::LeaseLost);
                }
            }
            let value = work(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    fn lease_token(&self, run_id: &str) -> Option<String> {
        self.leases.token(run_id)
    }

    fn set_lease_token(&self, run_id: &str, token: Option<String>) {
        self.leases.set(run_id, token);
    }

    /// Wait up to `timeout` for notifications on `channels`, listening on
    /// the connection kept in `slot`; each as (channel, payload).
    fn listen(
        &self,
        channels: &[&str],
        slot: &Mutex<Option<postgres::Client>>,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, String)>> {
        pool::off_runtime(|| {
            let mut listener = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if listener.as_ref().is_none_or(|client| client.is_closed()) {
                let mut client = self.pool.connect()?;
                for channel in channels {
                    client.batch_execute(&format!("LISTEN {channel}"))?;
                }
                *listener = Some(client);
            }
            let Some(client) = listener.as_mut() else {
                return Ok(Vec::new());
            };
            use postgres::fallible_iterator::FallibleIterator;
            let heard = {
                let mut notifications = client.notifications();
                let mut heard = Vec::new();
                let first = notifications.timeout_iter(timeout).next();
                match first {
                    Ok(Some(first)) => {
                        heard.push((first.channel().to_string(), first.payload().to_string()));
                        // What else came meanwhile, without waiting.
                        while let Ok(Some(more)) = notifications.iter().next() {
                            heard.push((more.channel().to_string(), more.payload().to_string()));
                        }
                        Ok(heard)
                    }
                    Ok(None) => Ok(heard),
                    Err(error) => Err(error),
                }
            };
            if heard.is_err() {
                *listener = None;
            }
            Ok(heard?)
        })
    }

    /// Tell the observers about a committed change.
    fn notify(&self, change: &Committed<'_>) -> Result<()> {
        notify(&self.observers, change)
    }

    /// Tell the observers about committed events, after the crash point of
    /// the crash tests (see [`crate::store::crash_point`]).
    fn committed(&self, run_id: &str, at: &str, events: &[Event]) -> Result<()> {
        for event in events {
            super::crash_point(&event.kind);
            self.notify(&Committed::Event {
                run_id,
                step_id: event.step.as_deref(),
                at,
                kind: &event.kind,
                data: &event.data,
            })?;
        }
        Ok(())
    }
}

/// An event to append to the journal at the end of a transaction.
#[derive(Debug, Clone)]
struct Event {
    step: Option<String>,
    kind: String,
    data: Value,
}

impl Event {
    fn new(step: Option<&str>, kind: &str, data: Value) -> Event {
        Event {
            step: step.map(str::to_string),
            kind: kind.to_string(),
            data,
        }
    }
}

/// Append `events` of `run_id` inside `tx`, in order, under the journal's
/// advisory lock (see the module's doc: sequence numbers commit in order).
fn insert_events(tx: &mut Tx<'_>, run_id: &str, at: &str, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // One statement, one round trip: the lock, then every event in order.
    let steps: Vec<Option<&str>> = events.iter().map(|e| e.step.as_deref()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let data: Vec<String> = events.iter().map(|e| e.data.to_string()).collect();
    tx.execute(
        "INSERT INTO events (run_id, step_id, at, kind, data)
         SELECT $1, e.step, $2, e.kind, e.data
         FROM (SELECT pg_advisory_xact_lock($3)) AS journal,
              UNNEST($4::TEXT[], $5::TEXT[], $6::TEXT[]) WITH ORDINALITY AS e(step, kind, data, n)
         ORDER BY e.n",
        &[&run_id, &at, &JOURNAL_LOCK, &steps, &kinds, &data],
    )?;
    Ok(())
}

/// The channel a new run is announced on, for waiting workers.
const WORK_CHANNEL: &str = "wfhost_work";

/// The channel a queued step attempt is announced on, for waiting workers.
const TASK_CHANNEL: &str = "wfhost_tasks";

/// The channel a finished task is announced on, for waiting drivers.
const OUTCOME_CHANNEL: &str = "wfhost_outcomes";

/// The advisory lock key of the journal ("wfhostev" in ASCII).
const JOURNAL_LOCK: i64 = 0x7766_686f_7374_6576;

/// Free text from a step, a model or a person as PostgreSQL can keep it:
/// its `text` type refuses NUL characters, which a hostile step could
/// otherwise use to make the store fail on its error message.
fn text(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('\0') {
        value.replace('\0', "\u{FFFD}").into()
    } else {
        value.into()
    }
}

/// [`text`] of an optional value.
fn opt_text(value: Option<&str>) -> Option<String> {
    value.map(|v| text(v).into_owned())
}
