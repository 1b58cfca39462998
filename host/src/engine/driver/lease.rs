//! The run's lease, renewed from its own task while the run is driven.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::CONTROL_TICK;
use crate::step::executor::LeaseCheck;
use crate::store::EngineStore;

/// Renews a run's lease every [`CONTROL_TICK`] until dropped, and
/// remembers when it was lost to another process.
pub(super) struct Heartbeat {
    state: Arc<LeaseState>,
    task: tokio::task::JoinHandle<()>,
}

/// What the heartbeat knows of the lease, shared with the steps' checks.
struct LeaseState {
    /// Set once another process has taken the run over.
    lost: AtomicBool,
    /// When the lease was last claimed or renewed, on [`boot_clock`].
    renewed: Mutex<Duration>,
}

/// How recent the lease's last renewal must be for a step's check to take
/// the lease as held without asking the store (see [`Heartbeat::step_check`]):
/// far less than the 5 s of silence after which another process may take
/// the run over, and four heartbeats long.
const RENEWED_WITHIN: Duration = Duration::from_secs(1);

/// Time since boot, counting time the machine was suspended (unlike
/// [`std::time::Instant`]): a lease's expiry is measured by other processes
/// on the wall clock, which moves on while the machine sleeps.
fn boot_clock() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    if status != 0 {
        // Never on Linux; a renewal that looks ancient only costs a store read.
        return Duration::MAX;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

impl LeaseState {
    /// Whether the lease is held: not if the heartbeat found it lost; yes
    /// if renewed within [`RENEWED_WITHIN`]; else what `ask_store` says.
    fn holds(&self, ask_store: impl FnOnce() -> bool) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        boot_clock().saturating_sub(renewed) < RENEWED_WITHIN || ask_store()
    }
}

impl Heartbeat {
    pub(super) fn start(store: Arc<dyn EngineStore>, run_id: &str) -> Heartbeat {
        let state = Arc::new(LeaseState {
            lost: AtomicBool::new(false),
            renewed: Mutex::new(boot_clock()),
        });
        let (shared, run_id) = (state.clone(), run_id.to_string());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONTROL_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // On the blocking pool, awaited: if the runtime shuts down
                // meanwhile (the drive ended), this task is dropped at the
                // await instead of going on to poll a timer that is gone.
                let (beat_store, beat_run) = (store.clone(), run_id.clone());
                let beat = tokio::task::spawn_blocking(move || beat_store.heartbeat(&beat_run));
                match beat.await {
                    Ok(Ok(())) => {
                        *shared.renewed.lock().unwrap_or_else(|e| e.into_inner()) = boot_clock();
                    }
                    Ok(Err(crate::store::StoreError::LeaseLost)) => {
                        shared.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Err(error)) => tracing::warn!("run {run_id}: heartbeat failed: {error}"),
                    Err(_) => return,
                }
            }
        });
        Heartbeat { state, task }
    }

    /// The check a step of this run makes right before it starts (and a
    /// program once it exists): held while the heartbeat renewed the lease
    /// within [`RENEWED_WITHIN`] (no other process can take the run for
    /// seconds then), else the store's answer; lost once the heartbeat found
    /// the run taken over. Thousands of steps starting at once thus cost no
    /// store reads while the heartbeat keeps up, and a driver that was
    /// stopped or hung finds its renewal old and asks the store.
    pub(super) fn step_check(&self, store: &Arc<dyn EngineStore>, run_id: &str) -> LeaseCheck {
        let (state, store, run_id) = (self.state.clone(), store.clone(), run_id.to_string());
        LeaseCheck::new(move || state.holds(|| store.holds_lease(&run_id).unwrap_or(false)))
    }

    /// An error once another process has taken the run over.
    pub(super) fn check(&self) -> std::result::Result<(), crate::store::StoreError> {
        if self.state.lost.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError::LeaseLost);
        }
        Ok(())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn state(renewed_ago: Duration, lost: bool) -> LeaseState {
        LeaseState {
            lost: AtomicBool::new(lost),
            renewed: Mutex::new(boot_clock() - renewed_ago),
        }
    }

    #[test]
    fn a_lease_renewed_lately_is_held_without_asking_the_store() {
        let asked = Cell::new(false);
        let held = state(Duration::from_millis(100), false).holds(|| {
            asked.set(true);
            false
        });
        assert!(held);
        assert!(!asked.get(), "a fresh renewal needs no store read");
    }

    #[test]
    fn an_old_renewal_asks_the_store() {
        let old = state(RENEWED_WITHIN + Duration::from_millis(50), false);
        let asked = Cell::new(0);
        let ask = |answer| {
            asked.set(asked.get() + 1);
            answer
        };
        assert!(
            !old.holds(|| ask(false)),
            "the store says another process owns it"
        );
        assert!(old.holds(|| ask(true)));
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn a_lost_lease_is_never_held() {
        let lost = state(Duration::ZERO, true);
        assert!(!lost.holds(|| panic!("no need to ask: the heartbeat saw it taken")));
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let before = boot_clock();
        std::thread::sleep(Duration::from_millis(5));
        let after = boot_clock();
        assert!(after > before && after < Duration::MAX);
    }
}
