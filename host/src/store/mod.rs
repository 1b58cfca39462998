//! Durable state, behind role traits, plus a human-readable folder per run.
//!
//! Every state transition is written in one transaction together with its
//! event row before the engine takes the next action. What the rest of
//! wfhost needs is a set of traits ([`roles`]): runs ([`RunStore`]), the
//! lease ([`LeaseStore`]), steps and attempts ([`StepStore`]), the journal
//! ([`EventLog`]), whole transitions and checkpoints ([`CheckpointStore`]),
//! agent transcripts and approvals ([`AgentStore`]); [`EngineStore`] is all
//! of them. Signatures use only the plain records here and [`StoreError`].
//!
//! The implementation is SQLite ([`sqlite::SqliteStore`]). The `runs/<id>/`
//! folder mirrors the journal for people: [`files::RunFolders`], an
//! observer ([`StoreObserver`]) the store tells about every commit. The
//! traits are synchronous; a backend keeps its blocking I/O off the async
//! runtime's worker threads with [`blocking::offload`].

mod agent;
pub mod blocking;
mod changes;
#[cfg(test)]
pub(crate) mod conformance;
pub mod files;
mod held;
mod observer;
pub mod postgres;
mod records;
pub mod roles;
pub mod sqlite;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

pub use agent::{
    call_hash, AgentRecord, ApprovalRecord, ApprovalStatus, NewAgentRecord, NewApproval,
};
pub use changes::Change;
pub use files::{RunFiles, RunFolders};
pub use observer::Committed;
pub use postgres::PgStore;
pub use records::{
    driver_alive, driver_may_live, host_name, is_stale, ArtifactRecord, CommentRecord, EventRecord,
    RunRecord, RunStatus, StepRecord, StepStatus,
};
pub use roles::{
    AgentStore, CheckpointStore, EngineStore, EventLog, LeaseStore, News, NoteStore, RunStore,
    StepQueue, StepStore, TokenStore,
};
pub use sqlite::SqliteStore;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// Another process kept the database's write lock for the whole wait.
    #[error(
        "database error: the store stayed locked for {} s: another process holds its write lock \
         (a wfhost process stopped or hung in the middle of a write keeps it until it continues \
         or ends)",
        .0.as_secs()
    )]
    Busy(std::time::Duration),
    /// This handle drove the run, but another process has since claimed
    /// it (this one was stopped or hung past its lease): nothing more is
    /// written, and the driver must stop.
    #[error(
        "this process lost its lease on the run: another process took it over while this one \
         was stopped or unresponsive; it stopped driving the run"
    )]
    LeaseLost,
    /// Reading or writing the run folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// No run matches the given id or prefix.
    #[error("no run matches '{0}' (see `wfhost runs`)")]
    UnknownRun(String),
    /// A prefix matches more than one run.
    #[error("run id prefix '{prefix}' is ambiguous: matches {}", candidates.join(", "))]
    AmbiguousRun {
        /// The prefix given.
        prefix: String,
        /// Some of the runs it matches.
        candidates: Vec<String>,
    },
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A new run, as handed to [`RunStore::create_run`].
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Fresh run id.
    pub id: &'a str,
    /// The workflow's `name`.
    pub workflow_name: &'a str,
    /// The workflow file as given on the command line.
    pub workflow_path: &'a str,
    /// Absolute directory of the workflow file.
    pub workflow_dir: &'a str,
    /// The workflow file's text: the pinned definition.
    pub definition: &'a str,
    /// The run's arguments, defaults applied.
    pub args: &'a Value,
    /// Step ids in file order.
    pub steps: &'a [&'a str],
    /// Who or what started it (`--triggered-by`).
    pub triggered_by: Option<&'a str>,
    /// Its priority (`--priority`; higher first where runs compete).
    pub priority: i64,
}

/// How hard a committed transition is pushed to disk (`[store] durability`
/// in `config.toml`); for SQLite, its `synchronous` setting in WAL mode,
/// for PostgreSQL, the session's `synchronous_commit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=NORMAL` (PostgreSQL: `synchronous_commit = off`): a
    /// commit survives a crash of the process (even
    /// `kill -9`); after a power loss or kernel crash the last commits
    /// before it may be rolled back, but the database stays consistent.
    #[default]
    Normal,
    /// `synchronous=FULL` (PostgreSQL: `synchronous_commit = on`): every
    /// commit is on disk (fsync of the WAL)
    /// before the engine acts on it; it also survives a power loss.
    Full,
}

/// The current time as stored: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// SHA-256 of a definition snapshot, hex encoded.
pub fn definition_hash(definition: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(definition.as_bytes()))
}

/// A fresh run id: 12 lowercase hex characters, random.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Open (creating if needed) the store under `home` (e.g. `.wfhost/`) with
/// `durability`, its run folders mirrored under `home/runs/`.
pub fn open(home: &Path, durability: Durability) -> Result<Arc<dyn EngineStore>> {
    let store = SqliteStore::open_with(home, durability)?;
    let mirror = RunFolders::new(store.home());
    Ok(Arc::new(store.observed_by(Arc::new(mirror))))
}

/// Connect to the PostgreSQL store at `url`, its run folders mirrored
/// under `home/runs/` on this machine.
pub fn open_postgres(
    url: &str,
    home: &Path,
    durability: Durability,
) -> Result<Arc<dyn EngineStore>> {
    let store = PgStore::connect(url, home, durability)?;
    let mirror = RunFolders::new(store.home());
    Ok(Arc::new(store.observed_by(Arc::new(mirror))))
}

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    postgres::redact(url)
}

/// Fault injection for crash tests, asked by a store after each committed
/// event (before its observers hear of it): with
/// `WFHOST_TEST_CRASH_AFTER=<event kind>` the process kills itself
/// (SIGKILL, as `kill -9` would) right after committing the first
/// transaction that records such an event.
pub fn crash_point(kind: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("WFHOST_TEST_CRASH_AFTER").ok());
    if point.as_deref() == Some(kind) {
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
