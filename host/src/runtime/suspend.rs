//! `host.suspend` and `host.resumed`: a step that waits without an
//! instance.
//!
//! A guest that calls `suspend(ms, state)` ends its call there (the host
//! answers with a trap, as WASI's `exit` does); the runtime drops the store
//! and its instance, gives back the instance's slot, waits `ms` on a tokio
//! timer and calls the step again with a fresh instance, whose `resumed()`
//! returns `state`. A waiting step is then only its future and a timer: no
//! linear memory, no fiber stack, no mappings.
//!
//! Budgets: `state` is at most [`MAX_STATE`] bytes, and the step's deadline
//! counts the waits, so a guest that suspends again and again still ends.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::state::StepState;
use crate::step::executor::{Resume, StepObserver};

/// Most bytes of `state` a step may hand to `suspend`.
pub const MAX_STATE: usize = 64 * 1024;

/// A call that ended in `suspend`: how long to wait, and what to hand the
/// next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    /// How long the step asked to wait.
    pub wait: Duration,
    /// What the next call's `resumed` returns.
    pub state: String,
}

/// The trap that ends a call which asked to be suspended.
#[derive(Debug, thiserror::Error)]
#[error("the step suspended itself")]
struct Suspended;

/// Serve `suspend`: remember the request and end the guest's call. A state
/// over [`MAX_STATE`] ends the call as a crash whose message says so.
pub(super) fn suspend(step: &mut StepState, ms: u64, state: String) -> wasmtime::Result<()> {
    if state.len() > MAX_STATE {
        return Err(wasmtime::Error::msg(format!(
            "`suspend` was handed a state of {} bytes, over its budget of {} KiB",
            state.len(),
            MAX_STATE / 1024
        )));
    }
    step.suspension = Some(Suspension {
        wait: Duration::from_millis(ms),
        state,
    });
    Err(wasmtime::Error::new(Suspended))
}

/// Wait as `resume` says, holding no instance: the observer hears of the
/// wait first (so that it can record it) and of its end before the step's
/// next call starts. `Err` when the deadline or a cancel comes first.
pub(super) async fn wait_as_recorded(
    observer: &Arc<dyn StepObserver>,
    attempt: u32,
    resume: &Resume,
    deadline: tokio::time::Instant,
    cancel: &mut crate::step::stop::StopSignal,
) -> Result<(), super::Stopped> {
    let (told, left) = (observer.clone(), resume.clone());
    on_recorder(move || told.suspended(attempt, &left)).await;
    let wait = resume
        .wake_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    wait_out(wait, deadline, cancel).await?;
    let told = observer.clone();
    on_recorder(move || told.woken(attempt)).await;
    Ok(())
}

/// A call of an observer, run on the recorder thread.
type Job = Box<dyn FnOnce() + Send>;

/// Run `job` on the recorder: one thread that tells observers of waits, in
/// order. Recording blocks on the store (whose writes are one at a time
/// anyway); thousands of steps suspending at once would otherwise each
/// block a worker thread (and have tokio start another in its place).
async fn on_recorder(job: impl FnOnce() + Send + 'static) {
    let (done, finished) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        job();
        let _ = done.send(());
    });
    match recorder() {
        Some(recorder) => match recorder.send(job) {
            Ok(()) => {
                let _ = finished.await;
            }
            // The thread is gone: tell the observer here.
            Err(std::sync::mpsc::SendError(job)) => crate::store::blocking::offload(job),
        },
        None => crate::store::blocking::offload(job),
    }
}

/// The recorder thread's queue (none when the thread cannot be started).
fn recorder() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    static RECORDER: OnceLock<Option<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let (sender, jobs) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("wfhost-waits".into())
                .spawn(move || {
                    for job in jobs {
                        job();
                    }
                })
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

impl Suspension {
    /// The wait as it is recorded: ending at a wall-clock time (at most a
    /// century ahead: no step's timeout is that long).
    pub(super) fn into_resume(self) -> Resume {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Resume {
            wake_at: SystemTime::now() + self.wait.min(CENTURY),
            state: self.state,
        }
    }
}

/// Wait out a suspension: `Ok` once `wait` has passed, `TimedOut` when the
/// step's deadline comes first, `Cancelled` when the run is cancelled.
pub(super) async fn wait_out(
    wait: Duration,
    deadline: tokio::time::Instant,
    cancel: &mut crate::step::stop::StopSignal,
) -> Result<(), super::Stopped> {
    let now = tokio::time::Instant::now();
    let wake = now
        .checked_add(wait)
        .map_or(deadline, |wake| wake.min(deadline));
    let woken = if wake < deadline {
        Ok(())
    } else {
        Err(super::Stopped::TimedOut)
    };
    tokio::select! {
        _ = tokio::time::sleep_until(wake) => woken,
        _ = cancel.wait() => Err(super::Stopped::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Stopped;
    use super::*;

    #[test]
    fn a_wait_ends_at_its_time_or_at_the_deadline_or_on_cancel() {
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let mut cancel = crate::step::stop::StopSignal::default();
            let soon = tokio::time::Instant::now() + Duration::from_millis(300);
            let short = wait_out(Duration::from_millis(10), soon, &mut cancel).await;
            assert!(short.is_ok());
            // The longest wait a guest can ask for neither overflows nor
            // outlives the deadline.
            let long = wait_out(Duration::from_millis(u64::MAX), soon, &mut cancel).await;
            assert!(matches!(long, Err(Stopped::TimedOut)));

            let trigger = crate::step::stop::StopTrigger::new();
            let mut cancel = trigger.signal();
            trigger.fire();
            let later = tokio::time::Instant::now() + Duration::from_secs(3600);
            let cancelled = wait_out(Duration::from_secs(3600), later, &mut cancel).await;
            assert!(matches!(cancelled, Err(Stopped::Cancelled)));
        });
    }

    /// The built-in `sleep` waits suspended and returns its config; a
    /// cancelled run ends its wait at once.
    #[test]
    fn the_sleep_component_waits_suspended_and_a_cancel_ends_the_wait() {
        use super::super::pool::tests::invocation;
        use serde_json::json;
        use std::sync::Arc;

        let runtime = super::super::Runtime::new(None).unwrap();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let observer = Arc::new(super::super::NullObserver);
        let short = invocation("z", "sleep", json!({ "ms": 50 }));
        let output = tokio
            .block_on(runtime.run_step(short, observer.clone()))
            .unwrap();
        assert_eq!(output, json!({ "ms": 50 }));

        let trigger = crate::step::stop::StopTrigger::new();
        let mut long = invocation("z2", "sleep", json!({ "ms": 3_600_000 }));
        long.cancel = trigger.signal();
        let failure = tokio.block_on(async {
            let step = tokio::spawn(async move { runtime.run_step(long, observer).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.fire();
            step.await.unwrap().unwrap_err()
        });
        assert!(failure.message.contains("cancelled"), "{failure:?}");
    }

    /// The observer hears of a wait before it and of its end after it, in
    /// that order; a wait the deadline ends has no end to tell.
    #[test]
    fn a_wait_is_told_to_the_observer_before_and_after() {
        use crate::step::executor::LogLevel;
        use std::sync::Mutex;

        #[derive(Default)]
        struct Calls(Mutex<Vec<String>>);
        impl StepObserver for Calls {
            fn log(&self, _: LogLevel, _: &str) {}
            fn progress(&self, _: &str, _: Option<f32>) {}
            fn suspended(&self, attempt: u32, resume: &Resume) {
                let told = format!("suspended {attempt} {}", resume.state);
                self.0.lock().unwrap().push(told);
            }
            fn woken(&self, attempt: u32) {
                self.0.lock().unwrap().push(format!("woken {attempt}"));
            }
        }

        let calls = Arc::new(Calls::default());
        let observer: Arc<dyn StepObserver> = calls.clone();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let mut cancel = crate::step::stop::StopSignal::default();
            let resume = |ms: u64, state: &str| Resume {
                wake_at: SystemTime::now() + Duration::from_millis(ms),
                state: state.into(),
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let first = resume(10, "a");
            let woke = wait_as_recorded(&observer, 3, &first, deadline, &mut cancel);
            assert!(woke.await.is_ok());
            let soon = tokio::time::Instant::now() + Duration::from_millis(50);
            let second = resume(3_600_000, "b");
            let ended = wait_as_recorded(&observer, 4, &second, soon, &mut cancel);
            assert!(matches!(ended.await, Err(Stopped::TimedOut)));
        });
        assert_eq!(
            *calls.0.lock().unwrap(),
            ["suspended 3 a", "woken 3", "suspended 4 b"]
        );
    }
}
