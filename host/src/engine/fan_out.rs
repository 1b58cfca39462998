//! `for_each` steps: one execution per item, several at once, each its own
//! recorded attempt; the step's output is the ordered list of the items'
//! outputs.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::executor::{StepExecutor, StepFailure, StepInvocation, StepObserver};
use crate::store::Store;

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
}

/// Run every item; returns the attempt number to report (the failed item's,
/// or the last one) and the list of outputs or the first failure.
pub async fn run_items(
    store: Arc<Store>,
    executor: Arc<dyn StepExecutor>,
    observer: Arc<dyn StepObserver>,
    items: Items,
) -> (u32, Result<Value, StepFailure>) {
    let count = items.invocations.len();
    let last_attempt = items.invocations.last().map(|i| i.attempt).unwrap_or(0);
    let permits = Arc::new(Semaphore::new(items.parallelism.max(1)));
    let mut tasks = JoinSet::new();
    for (index, (invocation, input)) in items.invocations.into_iter().zip(items.inputs).enumerate()
    {
        let (store, executor, observer, permits) = (
            store.clone(),
            executor.clone(),
            observer.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (run_id, step_id, attempt) = (
                invocation.run_id.clone(),
                invocation.step_id.clone(),
                invocation.attempt,
            );
            if let Err(error) = store.start_attempt(&run_id, &step_id, attempt, &input) {
                return (
                    index,
                    attempt,
                    Err(StepFailure::permanent(format!("store: {error}"))),
                );
            }
            let result = executor.execute(invocation, observer).await;
            let recorded = match &result {
                Ok(output) => store.finish_item(&run_id, &step_id, attempt, index, Ok(output)),
                Err(failure) => {
                    store.finish_item(&run_id, &step_id, attempt, index, Err(&failure.message))
                }
            };
            if let Err(error) = recorded {
                tracing::warn!("cannot record item {index} of step '{step_id}': {error}");
            }
            (index, attempt, result)
        });
    }
    let mut outputs = vec![Value::Null; count];
    let mut first_failure: Option<(usize, u32, StepFailure)> = None;
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, attempt, result)) = joined else {
            continue;
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
