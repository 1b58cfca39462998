//! The run's step tasks: spawned on the async runtime's workers, except an
//! attempt that starts while nothing else runs, which the run loop polls
//! itself.
//!
//! Why: in a chain of steps each attempt starts when the one before it
//! ends, and a spawned attempt costs two hand-overs between threads (the
//! spawn wakes a worker, its end wakes the thread that drives the run),
//! each a futex wake and a context switch: more than the rest of a no-op
//! step. An attempt polled by the drive's own task costs neither. Only a
//! lone attempt is kept here, so steps that can run in parallel still get
//! the workers; a guest yields to the loop at every epoch tick, so the loop
//! still obeys its control tick (cancel, pause) while one runs.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use super::StepResult;
use crate::step::executor::StepFailure;
use crate::step::stop::StopTrigger;

/// What an attempt's future ends with: the attempt it ended on (a
/// `for_each` step's items may take several) and its output or failure.
type Attempted = (u32, Result<serde_json::Value, StepFailure>);

/// The attempt the run loop polls itself.
struct Lone {
    index: usize,
    attempt: u32,
    /// Set at its first poll.
    started: Option<Instant>,
    future: Pin<Box<dyn Future<Output = Attempted> + Send>>,
}

/// The run's running attempts.
pub(super) struct StepTasks {
    spawned: JoinSet<StepResult>,
    /// Which step (and attempt) each spawned task executes, to name the
    /// step of a task that panicked.
    ids: HashMap<tokio::task::Id, (usize, u32)>,
    lone: Option<Lone>,
}

impl StepTasks {
    pub(super) fn new() -> StepTasks {
        StepTasks {
            spawned: JoinSet::new(),
            ids: HashMap::new(),
            lone: None,
        }
    }

    /// Attempts running.
    pub(super) fn len(&self) -> usize {
        self.spawned.len() + usize::from(self.lone.is_some())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start `future`, the attempt `attempt` of step `index`; `alone_ok`
    /// says it may be polled by the loop when nothing else runs.
    pub(super) fn start(
        &mut self,
        index: usize,
        attempt: u32,
        alone_ok: bool,
        future: impl Future<Output = Attempted> + Send + 'static,
    ) {
        if alone_ok && self.is_empty() {
            self.lone = Some(Lone {
                index,
                attempt,
                started: None,
                future: Box::pin(future),
            });
            return;
        }
        let task = self.spawned.spawn(async move {
            let started = Instant::now();
            let (attempt, result) = future.await;
            (index, attempt, started.elapsed(), result)
        });
        self.ids.insert(task.id(), (index, attempt));
    }

    /// Wait for an attempt to end; with it come the spawned ones that have
    /// ended too (steps that finish together are recorded together). A
    /// task that panicked or was stopped fails its step with the reason.
    /// Pending forever when nothing runs.
    pub(super) async fn next_finished(&mut self) -> Result<Vec<StepResult>> {
        let first = std::future::poll_fn(|cx| {
            if let Some(lone) = &mut self.lone {
                let started = *lone.started.get_or_insert_with(Instant::now);
                let polled =
                    std::panic::catch_unwind(AssertUnwindSafe(|| lone.future.as_mut().poll(cx)));
                let ended = match polled {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready((attempt, result))) => {
                        Some((lone.index, attempt, started.elapsed(), result))
                    }
                    Err(payload) => Some((
                        lone.index,
                        lone.attempt,
                        started.elapsed(),
                        Err(panicked(&*payload)),
                    )),
                };
                if let Some(ended) = ended {
                    self.lone = None;
                    return Poll::Ready(Ok(ended));
                }
            }
            match self.spawned.poll_join_next_with_id(cx) {
                Poll::Ready(Some(joined)) => Poll::Ready(self.joined(joined)),
                _ => Poll::Pending,
            }
        })
        .await?;
        let mut finished = vec![first];
        while let Some(joined) = self.spawned.try_join_next_with_id() {
            finished.push(self.joined(joined)?);
        }
        Ok(finished)
    }

    fn joined(
        &mut self,
        joined: Result<(tokio::task::Id, StepResult), tokio::task::JoinError>,
    ) -> Result<StepResult> {
        match joined {
            Ok((task, done)) => {
                self.ids.remove(&task);
                Ok(done)
            }
            Err(error) => {
                let (index, attempt) = self
                    .ids
                    .remove(&error.id())
                    .context("a step task failed and its step is unknown")?;
                let failure = if error.is_panic() {
                    panicked(&*error.into_panic())
                } else {
                    StepFailure::permanent("the step's task was stopped")
                };
                Ok((index, attempt, Duration::ZERO, Err(failure)))
            }
        }
    }

    /// Stop every running attempt: ask them (their programs get SIGTERM,
    /// then SIGKILL after their `kill_grace`), wait up to `budget` for them
    /// to end, then drop what is left. Their results are dropped: the run
    /// is being cancelled. `stop` is renewed, so the cleanup steps that run
    /// next are not stopped at once.
    pub(super) async fn stop(&mut self, stop: &mut StopTrigger, budget: Duration) {
        stop.fire();
        let _ = tokio::time::timeout(budget, async {
            while !self.is_empty() {
                let _ = self.next_finished().await;
            }
        })
        .await;
        self.lone = None;
        self.spawned.abort_all();
        while self.spawned.join_next().await.is_some() {}
        self.ids.clear();
        *stop = StopTrigger::new();
    }
}

/// A step's failure for its task's panic.
fn panicked(payload: &(dyn std::any::Any + Send)) -> StepFailure {
    let text = crate::engine::fan_out::panic_text(payload);
    StepFailure::permanent(format!("the step's task panicked: {text}"))
}
