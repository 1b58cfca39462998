//! The lease tokens a store handle holds, by run (see
//! [`super::LeaseStore::claim_run`]): what its fencing compares a run's
//! owner with before each write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Run id → the owner token of this handle's lease on it. Cloning shares
/// the tokens (the SQLite store hands a clone to its connection's fencing
/// function).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldLeases(Arc<Mutex<HashMap<String, String>>>);

impl HeldLeases {
    /// The token of this handle's lease on `run_id`, if it holds one.
    pub(crate) fn token(&self, run_id: &str) -> Option<String> {
        self.tokens().get(run_id).cloned()
    }

    /// Record (or, with `None`, forget) this handle's lease on `run_id`.
    pub(crate) fn set(&self, run_id: &str, token: Option<String>) {
        let mut tokens = self.tokens();
        match token {
            Some(token) => tokens.insert(run_id.to_string(), token),
            None => tokens.remove(run_id),
        };
    }

    /// Whether this handle holds a lease on `run_id` whose token is not
    /// `owner` (the run's current owner): another driver took it over.
    pub(crate) fn lost(&self, run_id: &str, owner: Option<&str>) -> bool {
        self.tokens()
            .get(run_id)
            .is_some_and(|token| owner != Some(token.as_str()))
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_lost_only_to_another_owner() {
        let held = HeldLeases::default();
        assert!(!held.lost("r1", Some("t1")), "no lease held, nothing lost");
        held.set("r1", Some("t1".into()));
        assert!(!held.lost("r1", Some("t1")));
        assert!(held.lost("r1", Some("t2")));
        assert!(held.lost("r1", None));
        assert!(!held.lost("r2", Some("t2")));
        let shared = held.clone();
        shared.set("r1", None);
        assert_eq!(held.token("r1"), None, "clones share the tokens");
    }
}
