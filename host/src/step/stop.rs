//! Asking running steps to stop, so that their started programs can end
//! gracefully (SIGTERM, `kill_grace`, then SIGKILL) instead of being dropped
//! with the step's future.

use std::time::Duration;

use tokio::sync::watch;

/// Extra time, past a step's `kill_grace`, that the host waits for a stopped
/// program's output pipes to drain and its tree to be swept, before it gives
/// up on the step's future.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);

/// The sending side: fired once, seen by every [`StopSignal`] made from it.
#[derive(Debug)]
pub struct StopTrigger(watch::Sender<bool>);

impl StopTrigger {
    /// A trigger that has not fired.
    pub fn new() -> StopTrigger {
        StopTrigger(watch::Sender::new(false))
    }

    /// A signal that sees this trigger fire.
    pub fn signal(&self) -> StopSignal {
        StopSignal(Some(self.0.subscribe()))
    }

    /// Ask everything holding a signal of this trigger to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`StopTrigger::fire`] was called.
    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }
}

impl Default for StopTrigger {
    fn default() -> Self {
        StopTrigger::new()
    }
}

/// The receiving side, carried by a step's invocation.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Option<watch::Receiver<bool>>);

impl StopSignal {
    #[cfg(test)]
    /// A signal that never fires.
    pub fn never() -> StopSignal {
        StopSignal(None)
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Wait until a stop is asked for (forever if it never is, also when
    /// the trigger is gone without firing).
    pub async fn wait(&mut self) {
        if let Some(rx) = &mut self.0 {
            if rx.wait_for(|stop| *stop).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fired_trigger_wakes_every_signal_and_never_never_fires() {
        let trigger = StopTrigger::new();
        let mut a = trigger.signal();
        let b = trigger.signal();
        assert!(!b.is_set() && !trigger.fired());
        let waiting = tokio::spawn(async move { a.wait().await });
        trigger.fire();
        waiting.await.unwrap();
        assert!(b.is_set() && trigger.fired());
        // A signal made after the fire sees it too.
        assert!(trigger.signal().is_set());
        let mut never = StopSignal::never();
        let waited = tokio::time::timeout(Duration::from_millis(50), never.wait()).await;
        assert!(waited.is_err());
        // A dropped trigger that never fired is not a stop.
        let dropped = StopTrigger::new();
        let mut orphan = dropped.signal();
        drop(dropped);
        let waited = tokio::time::timeout(Duration::from_millis(50), orphan.wait()).await;
        assert!(waited.is_err() && !orphan.is_set());
    }
}
