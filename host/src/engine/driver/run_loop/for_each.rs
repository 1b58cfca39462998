//! `for_each` steps: render the list and start the items (the items run
//! in [`crate::engine::fan_out`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::RunLoop;
use crate::engine::driver::invocation::{prepare_invocation, AttemptPlan, RunView};
use crate::engine::driver::step_log::StepLog;
use crate::engine::driver::{RunEvent, DEFAULT_PARALLELISM};
use crate::engine::fan_out;
use crate::step::executor::StepFailure;

/// The future running a `for_each` step's items: the attempt to report
/// and the list of outputs (or the first failure).
type ItemsFuture = crate::step::executor::BoxFuture<(u32, Result<Value, StepFailure>)>;

impl RunLoop<'_> {
    /// Render a `for_each` step's list and start its items; returns the
    /// future that runs them all.
    pub(super) fn start_for_each(
        &mut self,
        index: usize,
        expression: &str,
        remaining: Option<Duration>,
    ) -> std::result::Result<ItemsFuture, StepFailure> {
        let (driver, run_id, workflow, args) = (self.driver, self.run_id, self.workflow, self.args);
        let setup = self.setup;
        let kind = setup.types[index].as_ref();
        let component = &setup.components[index];
        let grants = &setup.grants[index];
        let retry = &setup.policies[index];
        let (templates, state, heartbeat) = (&self.templates, &mut self.state, &self.lease);
        let step = &workflow.def.steps[index];
        let inner = expression.trim();
        let inner = inner
            .strip_prefix("{{")
            .and_then(|rest| rest.strip_suffix("}}"))
            .unwrap_or(inner)
            .trim();
        let list = templates
            .render_value(&Value::String(format!("{{{{ {inner} }}}}")), &state.context)
            .map_err(|e| StepFailure::permanent(format!("for_each `{inner}`: {e}")))?;
        let Value::Array(list) = list else {
            return Err(StepFailure::permanent(format!(
                "for_each `{inner}` must give a list, not {list}"
            )));
        };
        let mut invocations = Vec::new();
        let mut inputs = Vec::new();
        for (position, item) in list.into_iter().enumerate() {
            let mut context = state.context.clone();
            context["item"] = item.clone();
            context["index"] = json!(position);
            let attempt = state.attempts[index] + 1;
            state.attempts[index] = attempt;
            let run = RunView {
                run_id,
                workflow,
                args,
                outputs: &state.outputs,
                context: &context,
                templates,
            };
            let plan = AttemptPlan {
                step,
                kind,
                component,
                attempt,
                grants: grants.clone(),
                scratch_dir: driver.store.run_files(run_id).scratch_dir(&step.id),
            };
            let mut invocation = prepare_invocation(&run, plan)
                .map_err(|f| StepFailure::permanent(format!("item {position}: {}", f.message)))?;
            invocation.idempotency_key =
                crate::step::executor::idempotency_key(run_id, &step.id, position, attempt);
            invocation.cancel = state.stop.signal();
            invocation.lease = heartbeat.step_check(&driver.store, run_id);
            if let Some(remaining) = remaining {
                invocation.timeout = invocation.timeout.min(remaining);
            }
            inputs.push(json!({
                "item": item,
                "index": position,
                "config": invocation.config,
                "attempt": attempt,
                "idempotency_key": invocation.idempotency_key,
            }));
            invocations.push(invocation);
        }
        state.board.started(index);
        driver.listener.on_event(&RunEvent::StepStarted {
            step: step.id.clone(),
            attempt: state.attempts[index],
        });
        if invocations.is_empty() {
            return Ok(Box::pin(async { (0, Ok(Value::Array(Vec::new()))) }));
        }
        let observer = Arc::new(
            StepLog::new(
                driver.store.clone(),
                driver.listener.clone(),
                run_id,
                &step.id,
                grants.max_output,
            )
            .without_waits(),
        );
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(state.attempts[index]));
        state.item_attempts.insert(index, attempts.clone());
        let items = fan_out::Items {
            invocations,
            inputs,
            parallelism: step.parallelism.unwrap_or(DEFAULT_PARALLELISM),
            fail_fast: step.fail_fast.unwrap_or(true),
            retry: retry.clone(),
            attempts,
        };
        Ok(Box::pin(fan_out::run_items(
            driver.store.clone(),
            driver.executor_for(step),
            observer,
            items,
        )))
    }
}
