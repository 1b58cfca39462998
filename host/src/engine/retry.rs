//! Retry policies: which failures are retried, how often, and how long to
//! wait between attempts (exponential backoff with a cap and jitter).

use std::time::Duration;

use crate::step::executor::FailureKind;
use crate::workflow::locate::Locator;
use crate::workflow::model::{RetryOn, RetrySpec, Step};
use crate::workflow::parse_duration;
use crate::workflow::{Diagnostic, Diagnostics, LoadedWorkflow};

/// A resolved policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (≥ 1).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_interval: Duration,
    /// Growth factor of the wait (≥ 1).
    pub backoff_coefficient: f64,
    /// Cap on the wait.
    pub max_interval: Duration,
    /// Spread of the wait, 0..=1.
    pub jitter: f64,
    /// Failures that are retried.
    pub on: Vec<RetryOn>,
    /// When not empty, only failures whose message contains one of these
    /// (compared in lower case) are retried.
    pub errors: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(100),
            jitter: 0.1,
            // A workflow that asks for retries gets them for any failure
            // (a script's non-zero exit included), as the seed systems'
            // users expect; `retry.on` narrows it.
            on: vec![RetryOn::Transient, RetryOn::Timeout, RetryOn::Permanent],
            errors: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Resolve a spec (fields missing in `spec` come from `fallback`, then
    /// from the defaults).
    pub fn resolve(spec: &RetrySpec, fallback: Option<&RetrySpec>) -> Result<RetryPolicy, String> {
        let pick = |f: fn(&RetrySpec) -> Option<String>| f(spec).or_else(|| fallback.and_then(f));
        let mut policy = RetryPolicy::default();
        if let Some(n) = spec
            .max_attempts
            .or_else(|| fallback.and_then(|f| f.max_attempts))
        {
            if n == 0 {
                return Err("retry.max_attempts must be at least 1".into());
            }
            policy.max_attempts = n;
        }
        if let Some(text) = pick(|s| s.initial_interval.clone()) {
            policy.initial_interval =
                parse_duration(&text).map_err(|e| format!("retry.initial_interval: {e}"))?;
        }
        policy.max_interval = policy.initial_interval.saturating_mul(100);
        if let Some(text) = pick(|s| s.max_interval.clone()) {
            policy.max_interval =
                parse_duration(&text).map_err(|e| format!("retry.max_interval: {e}"))?;
        }
        if policy.max_interval < policy.initial_interval {
            return Err("retry.max_interval is shorter than retry.initial_interval".into());
        }
        if let Some(c) = spec
            .backoff_coefficient
            .or_else(|| fallback.and_then(|f| f.backoff_coefficient))
        {
            if !(1.0..=100.0).contains(&c) {
                return Err(format!(
                    "retry.backoff_coefficient must be between 1 and 100, not {c}"
                ));
            }
            policy.backoff_coefficient = c;
        }
        if let Some(j) = spec.jitter.or_else(|| fallback.and_then(|f| f.jitter)) {
            if !(0.0..=1.0).contains(&j) {
                return Err(format!("retry.jitter must be between 0 and 1, not {j}"));
            }
            policy.jitter = j;
        }
        if let Some(on) = spec
            .on
            .clone()
            .or_else(|| fallback.and_then(|f| f.on.clone()))
        {
            policy.on = on;
        }
        if let Some(errors) = spec
            .errors
            .clone()
            .or_else(|| fallback.and_then(|f| f.errors.clone()))
        {
            if errors.iter().any(|e| e.trim().is_empty()) {
                return Err("retry.errors holds an empty text (it would match every error)".into());
            }
            policy.errors = errors.iter().map(|e| e.to_lowercase()).collect();
        }
        Ok(policy)
    }

    /// Whether a failure of `kind` with `message` after attempt `attempt`
    /// (1-based) is retried.
    pub fn should_retry(&self, kind: &FailureKind, message: &str, attempt: u32) -> bool {
        let wanted = match kind {
            FailureKind::Transient | FailureKind::Interrupted => RetryOn::Transient,
            FailureKind::Timeout => RetryOn::Timeout,
            FailureKind::Permanent => RetryOn::Permanent,
        };
        attempt < self.max_attempts && self.on.contains(&wanted) && self.matches(message)
    }

    /// Whether `message` is one of the retryable errors (always, when none
    /// are listed).
    fn matches(&self, message: &str) -> bool {
        if self.errors.is_empty() {
            return true;
        }
        let message = message.to_lowercase();
        self.errors.iter().any(|e| message.contains(e.as_str()))
    }

    /// Wait after attempt `attempt` (1-based) failed, before the next one.
    /// `random` in `[0, 1)` places the wait inside the jitter band.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let initial = self.initial_interval.as_secs_f64();
        let cap = self.max_interval.as_secs_f64();
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let base = (initial * self.backoff_coefficient.powi(exponent)).min(cap);
        let spread = 1.0 - self.jitter + 2.0 * self.jitter * random.clamp(0.0, 1.0);
        let seconds = (base * spread).clamp(0.0, cap);
        Duration::from_secs_f64(if seconds.is_finite() { seconds } else { cap })
    }
}

/// The retry policy of a step: its `retry:` block (the seeds' spellings
/// were read into it when the workflow was loaded), with missing fields
/// taken from `defaults.retry`.
pub fn policy_for(step: &Step, defaults: Option<&RetrySpec>) -> Result<RetryPolicy, String> {
    let spec = step.retry.clone().unwrap_or_default();
    RetryPolicy::resolve(&spec, defaults)
}

/// Every step's policy, in step order, or every problem with its step.
pub fn resolve_all(workflow: &LoadedWorkflow) -> Result<Vec<RetryPolicy>, Diagnostics> {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let defaults = workflow.def.defaults.retry.as_ref();
    let mut policies = Vec::new();
    let mut diagnostics = Diagnostics::new();
    for (index, step) in workflow.def.steps.iter().enumerate() {
        for problem in flow_problems(workflow, index) {
            diagnostics.push(
                Diagnostic::new(problem)
                    .at(locator.step_key(index, &["on_failure", "loop", "for_each"]))
                    .for_step(&step.id),
            );
        }
        match policy_for(step, defaults) {
            Ok(policy) => policies.push(policy),
            Err(message) => diagnostics.push(
                Diagnostic::new(message)
                    .at(locator.step_key(index, &["retry", "maxRetries", "retryDelayMs"]))
                    .for_step(&step.id),
            ),
        }
    }
    diagnostics.into_result(policies)
}

/// Problems with a step's failure handling and loops: `retry_step` and
/// `loop.steps` must name steps that run before it.
fn flow_problems(workflow: &LoadedWorkflow, index: usize) -> Vec<String> {
    let step = &workflow.def.steps[index];
    let mut problems = Vec::new();
    let mut earlier = |what: &str, id: &str| {
        match workflow.graph.index_of(id) {
        None => problems.push(format!("{what} names unknown step '{id}'")),
        Some(j) if !workflow.graph.needs(index, j) => problems.push(format!(
            "{what} '{id}' must be a step this one needs (directly or not), so that it runs before it"
        )),
        Some(_) => {}
    }
    };
    if let Some(target) = step
        .on_failure
        .as_ref()
        .and_then(|o| o.retry_step.as_deref())
    {
        earlier("on_failure.retry_step", target);
    }
    if let Some(stage) = &step.stage_loop {
        for id in &stage.steps {
            earlier("loop.steps", id);
        }
        if let Some(fallback) = &stage.fallback {
            match workflow.graph.index_of(fallback) {
                None => problems.push(format!("loop.fallback names unknown step '{fallback}'")),
                Some(j) if !workflow.graph.dependents(index).contains(&j) => problems.push(format!(
                    "loop.fallback '{fallback}' must be a step that needs '{}' (the step to go on to \
                     when the loop runs out of iterations)",
                    step.id
                )),
                Some(_) => {}
            }
        }
    }
    if step.on_failure.as_ref().and_then(|o| o.max_loops) == Some(0) {
        problems.push("on_failure.max_loops must be at least 1".into());
    }
    if step.parallelism == Some(0) {
        problems.push("parallelism must be at least 1".into());
    }
    if (step.parallelism.is_some() || step.fail_fast.is_some()) && step.for_each.is_none() {
        problems.push("parallelism and fail_fast apply to for_each steps only".into());
    }
    if let Some(total) = &step.total_timeout {
        if let Err(error) = crate::workflow::parse_duration(total) {
            problems.push(format!("total_timeout: {error}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(initial_ms: u64, coefficient: f64, max_ms: u64, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_interval: Duration::from_millis(initial_ms),
            backoff_coefficient: coefficient,
            max_interval: Duration::from_millis(max_ms),
            jitter,
            on: vec![RetryOn::Transient],
            errors: Vec::new(),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy(100, 2.0, 1000, 0.0);
        let waits: Vec<u128> = (1..=6).map(|a| p.delay(a, 0.5).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn only_the_chosen_kinds_are_retried_and_attempts_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.should_retry(&FailureKind::Transient, "x", 1));
        assert!(p.should_retry(&FailureKind::Timeout, "x", 2));
        assert!(!p.should_retry(&FailureKind::Transient, "x", 3));
        // Any failure, a script's non-zero exit (permanent) included.
        assert!(p.should_retry(&FailureKind::Permanent, "exit code 1", 1));
        assert!(!RetryPolicy::default().should_retry(&FailureKind::Transient, "x", 1));
        let narrowed = RetryPolicy {
            on: vec![RetryOn::Transient],
            ..p.clone()
        };
        assert!(!narrowed.should_retry(&FailureKind::Permanent, "x", 1));
    }

    #[test]
    fn retryable_errors_match_the_message_text() {
        let spec = RetrySpec {
            max_attempts: Some(3),
            errors: Some(vec!["ETIMEDOUT".into(), "rate limit".into()]),
            ..RetrySpec::default()
        };
        let p = RetryPolicy::resolve(&spec, None).unwrap();
        assert!(p.should_retry(&FailureKind::Permanent, "connect: etimedout", 1));
        assert!(p.should_retry(&FailureKind::Transient, "Rate Limit exceeded", 1));
        assert!(!p.should_retry(&FailureKind::Permanent, "exit code 1", 1));
        let empty = RetrySpec {
            errors: Some(vec![" ".into()]),
            ..RetrySpec::default()
        };
        assert!(RetryPolicy::resolve(&empty, None)
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn specs_resolve_with_fallback_and_reject_nonsense() {
        let defaults = RetrySpec {
            max_attempts: Some(4),
            initial_interval: Some("200ms".into()),
            ..RetrySpec::default()
        };
        let own = RetrySpec {
            backoff_coefficient: Some(3.0),
            ..RetrySpec::default()
        };
        let p = RetryPolicy::resolve(&own, Some(&defaults)).unwrap();
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.initial_interval, Duration::from_millis(200));
        assert_eq!(p.max_interval, Duration::from_secs(20));
        assert_eq!(p.backoff_coefficient, 3.0);
        let bad = |spec: RetrySpec| RetryPolicy::resolve(&spec, None).unwrap_err();
        assert!(bad(RetrySpec {
            max_attempts: Some(0),
            ..Default::default()
        })
        .contains("at least 1"));
        assert!(bad(RetrySpec {
            jitter: Some(2.0),
            ..Default::default()
        })
        .contains("jitter"));
        assert!(bad(RetrySpec {
            backoff_coefficient: Some(0.5),
            ..Default::default()
        })
        .contains("backoff"));
        assert!(bad(RetrySpec {
            initial_interval: Some("soon".into()),
            ..Default::default()
        })
        .contains("initial_interval"));
        assert!(bad(RetrySpec {
            initial_interval: Some("10s".into()),
            max_interval: Some("1s".into()),
            ..Default::default()
        })
        .contains("shorter"));
    }

    proptest! {
        #[test]
        fn delay_stays_within_its_band(
            initial in 1u64..10_000,
            coefficient in 1.0f64..10.0,
            cap_factor in 1u64..1000,
            jitter in 0.0f64..=1.0,
            attempt in 1u32..10_000,
            random in 0.0f64..1.0,
        ) {
            let p = policy(initial, coefficient, initial * cap_factor, jitter);
            let wait = p.delay(attempt, random);
            prop_assert!(wait <= p.max_interval);
            let base = (initial as f64 * coefficient.powi((attempt - 1).min(1024) as i32))
                .min((initial * cap_factor) as f64);
            let low = base * (1.0 - jitter) / 1000.0;
            prop_assert!(wait.as_secs_f64() + 1e-6 >= low.min(p.max_interval.as_secs_f64()));
        }

        #[test]
        fn without_jitter_waits_never_shrink(
            initial in 1u64..10_000,
            coefficient in 1.0f64..10.0,
            cap_factor in 1u64..1000,
            attempt in 1u32..200,
        ) {
            let p = policy(initial, coefficient, initial * cap_factor, 0.0);
            prop_assert!(p.delay(attempt + 1, 0.3) >= p.delay(attempt, 0.3));
            prop_assert!(p.delay(1, 0.9) == Duration::from_millis(initial));
        }
    }
}
