//! Observers of committed transitions: what a store tells others after a
//! transaction committed (the run-folder mirror, [`super::files::RunFolders`],
//! is one). A store calls its observers in commit order, after the commit:
//! the database stays the truth, an observer only follows it.

use serde_json::Value;

use super::Result;

/// Something a store committed.
#[derive(Debug, Clone, Copy)]
pub enum Committed<'a> {
    /// A run was recorded.
    RunCreated {
        /// The run.
        run_id: &'a str,
    },
    /// An event was appended to the journal.
    Event {
        /// The run.
        run_id: &'a str,
        /// The step, for step events.
        step_id: Option<&'a str>,
        /// When (as stored).
        at: &'a str,
        /// What happened.
        kind: &'a str,
        /// Details.
        data: &'a Value,
    },
    /// A run and its history were deleted (`wfhost prune`).
    RunRemoved {
        /// The run.
        run_id: &'a str,
    },
}

impl Committed<'_> {
    /// The run this is about.
    pub fn run_id(&self) -> &str {
        match self {
            Committed::RunCreated { run_id }
            | Committed::Event { run_id, .. }
            | Committed::RunRemoved { run_id } => run_id,
        }
    }
}

/// Follows a store's committed transitions.
pub trait StoreObserver: Send + Sync {
    /// What it keeps, for warnings (e.g. "the run folder").
    fn name(&self) -> &'static str;

    /// Called after `change` committed. An error is reported by the store
    /// as a warning (the transition stands), except for
    /// [`Committed::RunRemoved`], where it fails the prune.
    fn committed(&self, change: &Committed<'_>) -> Result<()>;

    /// Wait until everything told so far is kept (for observers that work
    /// in the background; by default there is nothing to wait for).
    fn flush(&self) {}
}

/// Tell every observer about a committed change; failures other than a
/// removal's are logged, not returned (see [`StoreObserver::committed`]).
pub(crate) fn notify(
    observers: &[std::sync::Arc<dyn StoreObserver>],
    change: &Committed<'_>,
) -> Result<()> {
    for observer in observers {
        match (observer.committed(change), change) {
            (Ok(()), _) => {}
            (Err(error), Committed::RunRemoved { .. }) => return Err(error),
            (Err(error), _) => tracing::warn!(
                "run {}: {} could not be updated: {error}",
                change.run_id(),
                observer.name()
            ),
        }
    }
    Ok(())
}
