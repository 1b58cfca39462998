//! `for_each` steps: one execution per item, several at once, each its own
//! recorded attempt; the step's output is the ordered list of the items'
//! outputs. A failed item is retried by the step's retry policy (each try
//! its own attempt row); an item whose task panics or is stopped has its
//! attempt row closed with the reason, never left running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::retry::RetryPolicy;
use crate::step::executor::{LogLevel, StepExecutor, StepFailure, StepInvocation, StepObserver};
use crate::store::EngineStore;

/// The items of one `for_each` step, ready to execute.
pub struct Items {
    /// One invocation per item, in order (attempt numbers already set).
    pub invocations: Vec<StepInvocation>,
    /// The recorded input of each item.
    pub inputs: Vec<Value>,
    /// Items running at once.
    pub parallelism: usize,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// How a failed item is retried.
    pub retry: RetryPolicy,
    /// The step's last attempt number; retries take the next ones.
    pub attempts: Arc<AtomicU32>,
}

/// Attempt rows that are open (started, not yet finished), by item.
type OpenAttempts = Arc<Mutex<HashMap<usize, u32>>>;

/// Run every item; returns the attempt number to report (the failed item's,
/// or the last one) and the list of outputs or the first failure.
pub async fn run_items(
    store: Arc<dyn EngineStore>,
    executor: Arc<dyn StepExecutor>,
    observer: Arc<dyn StepObserver>,
    items: Items,
) -> (u32, Result<Value, StepFailure>) {
    let count = items.invocations.len();
    let (run_id, step_id) = match items.invocations.first() {
        Some(first) => (first.run_id.clone(), first.step_id.clone()),
        None => return (0, Ok(Value::Array(Vec::new()))),
    };
    let last_attempt = items.invocations.last().map(|i| i.attempt).unwrap_or(0);
    let permits = Arc::new(Semaphore::new(items.parallelism.max(1)));
    let open: OpenAttempts = Arc::default();
    let retry = Arc::new(items.retry);
    let mut tasks = JoinSet::new();
    let mut task_items = HashMap::new();
    for (index, (invocation, input)) in items.invocations.into_iter().zip(items.inputs).enumerate()
    {
        let item = Item {
            index,
            store: store.clone(),
            executor: executor.clone(),
            observer: observer.clone(),
            open: open.clone(),
            retry: retry.clone(),
            attempts: items.attempts.clone(),
        };
        let permits = permits.clone();
        let handle = tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            item.run(invocation, input).await
        });
        task_items.insert(handle.id(), index);
    }
    let mut outputs = vec![Value::Null; count];
    let mut first_failure: Option<(usize, u32, StepFailure)> = None;
    let mut failed = 0;
    while let Some(joined) = tasks.join_next_with_id().await {
        let (index, attempt, result) = match joined {
            Ok((_, done)) => done,
            Err(error) => {
                let Some(&index) = task_items.get(&error.id()) else {
                    continue;
                };
                let panicked = error.is_panic();
                let reason = if panicked {
                    format!(
                        "item {index}: its task panicked: {}",
                        panic_text(&*error.into_panic())
                    )
                } else {
                    format!("item {index}: stopped because another item failed (fail_fast)")
                };
                // Close the item's attempt row, if it was opened.
                let opened = open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&index);
                let attempt = opened.unwrap_or(last_attempt);
                if let Some(attempt) = opened {
                    let closed = store.finish_item(&run_id, &step_id, attempt, index, Err(&reason));
                    if let Err(error) = closed {
                        tracing::warn!("cannot record item {index} of step '{step_id}': {error}");
                    }
                }
                if !panicked {
                    continue;
                }
                (index, attempt, Err(StepFailure::permanent(reason)))
            }
        };
        match result {
            Ok(output) => outputs[index] = output,
            Err(failure) => {
                failed += 1;
                let earlier = first_failure.as_ref().is_none_or(|(i, _, _)| index < *i);
                if earlier {
                    first_failure = Some((index, attempt, failure));
                }
                if items.fail_fast {
                    tasks.abort_all();
                }
            }
        }
    }
    match first_failure {
        None => (last_attempt, Ok(Value::Array(outputs))),
        Some((index, attempt, failure)) => {
            let message = if items.fail_fast {
                format!(
                    "item {index} failed (fail_fast stopped the rest): {}",
                    failure.message
                )
            } else {
                format!(
                    "{failed} of {count} items failed; item {index}: {}",
                    failure.message
                )
            };
            (
                attempt,
                Err(StepFailure {
                    kind: failure.kind,
                    message,
                }),
            )
        }
    }
}

/// One item's task: its tries, each recorded as an attempt.
struct Item {
    index: usize,
    store: Arc<dyn EngineStore>,
    executor: Arc<dyn StepExecutor>,
    observer: Arc<dyn StepObserver>,
    open: OpenAttempts,
    retry: Arc<RetryPolicy>,
    attempts: Arc<AtomicU32>,
}

impl Item {
    /// Try the item until it succeeds or the retry policy gives up;
    /// returns its index, its last attempt and its outcome.
    async fn run(
        self,
        mut invocation: StepInvocation,
        mut input: Value,
    ) -> (usize, u32, Result<Value, StepFailure>) {
        let index = self.index;
        let (run_id, step_id) = (invocation.run_id.clone(), invocation.step_id.clone());
        let mut tries = 1;
        loop {
            let attempt = invocation.attempt;
            if let Err(error) = self.store.start_attempt(&run_id, &step_id, attempt, &input) {
                let failure = StepFailure::permanent(format!("store: {error}"));
                return (index, attempt, Err(failure));
            }
            self.opened(Some(attempt));
            let result = self
                .executor
                .execute(invocation.clone(), self.observer.clone())
                .await;
            let outcome = result.as_ref().map_err(|failure| failure.message.as_str());
            if let Err(error) = self
                .store
                .finish_item(&run_id, &step_id, attempt, index, outcome)
            {
                let failure = StepFailure::permanent(format!(
                    "item {index}: its outcome could not be recorded: {error}"
                ));
                return (index, attempt, Err(failure));
            }
            self.opened(None);
            let failure = match result {
                Err(failure)
                    if self
                        .retry
                        .should_retry(&failure.kind, &failure.message, tries) =>
                {
                    failure
                }
                other => return (index, attempt, other),
            };
            let delay = self.retry.delay(tries, rand::random::<f64>());
            self.observer.log(
                LogLevel::Warn,
                &format!(
                    "item {index}: attempt {tries}/{} failed ({}); retrying in {}",
                    self.retry.max_attempts,
                    failure.message,
                    crate::step::units::humanize(delay)
                ),
            );
            tokio::time::sleep(delay).await;
            tries += 1;
            let next = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            invocation.attempt = next;
            invocation.idempotency_key = format!("{run_id}:{step_id}:{index}:{next}");
            input["attempt"] = next.into();
            input["idempotency_key"] = invocation.idempotency_key.clone().into();
        }
    }

    /// Note that this item's attempt row is open (`Some`) or closed.
    fn opened(&self, attempt: Option<u32>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match attempt {
            Some(attempt) => open.insert(self.index, attempt),
            None => open.remove(&self.index),
        };
    }
}

/// The message of a panicked task.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}
