//! The run's lease, renewed from its own task while the run is driven.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CONTROL_TICK;
use crate::step::executor::LeaseCheck;
use crate::store::EngineStore;

/// Renews a run's lease every [`CONTROL_TICK`] until dropped, and
/// remembers when it was lost to another process.
pub(super) struct Heartbeat {
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// When the lease was last claimed or renewed.
    renewed: Arc<std::sync::Mutex<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

/// How recent the lease's last renewal must be for a fenced write to stand
/// in for asking the store whether the lease is held (see
/// [`Heartbeat::confirm`]): far less than the 5 s after which another
/// process may take a silent run over.
const RENEWED_WITHIN: Duration = Duration::from_secs(1);

impl Heartbeat {
    pub(super) fn start(store: Arc<dyn EngineStore>, run_id: &str) -> Heartbeat {
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (flag, run_id, renewal) = (lost.clone(), run_id.to_string(), renewed.clone());
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
                        *renewal.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    }
                    Ok(Err(crate::store::StoreError::LeaseLost)) => {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(Err(error)) => tracing::warn!("run {run_id}: heartbeat failed: {error}"),
                    Err(_) => return,
                }
            }
        });
        Heartbeat {
            lost,
            renewed,
            task,
        }
    }

    /// A write fenced by the lease has just committed: if the lease was
    /// renewed lately (so no other process can take the run for seconds),
    /// `check` counts it as held for a moment without asking the store.
    pub(super) fn confirm(&self, check: &LeaseCheck) {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if renewed.elapsed() < RENEWED_WITHIN && !self.lost.load(Ordering::SeqCst) {
            check.confirm();
        }
    }

    /// An error once another process has taken the run over.
    pub(super) fn check(&self) -> std::result::Result<(), crate::store::StoreError> {
        if self.lost.load(Ordering::SeqCst) {
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

/// A check, asked right before a step's program starts, that this driver
/// still holds the run's lease (a store error counts as lost).
pub(in crate::engine::driver) fn check(store: &Arc<dyn EngineStore>, run_id: &str) -> LeaseCheck {
    let (store, run_id) = (store.clone(), run_id.to_string());
    LeaseCheck::new(move || store.holds_lease(&run_id).unwrap_or(false))
}
