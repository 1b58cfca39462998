//! The limits: `memory` (linear memory and tables, enforced by
//! [`StepLimits`] on the step's store), `timeout`, `max_output` (bytes kept
//! per output stream), the step's `kill_grace`, and how strictly its
//! started programs are confined ([`SandboxMode`], capped by the ceiling's
//! `sandbox`).
//!
//! The memory grant caps the step's total: every linear memory of every
//! core instance in the component, plus its tables (counted at
//! [`TABLE_ELEMENT_BYTES`] per element), not each memory on its own.

use std::path::Path;
use std::time::Duration;

use wasmtime::ResourceLimiter;

use serde_json::{json, Value};

use super::{
    CapabilityUnit, Caps, CeilingSpec, Grants, ResolveContext, ResolvedGrants, SandboxMode,
};
use crate::step::units::{humanize, parse_duration, parse_size};

/// Linear-memory cap when nothing says otherwise.
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// The most `max_output` may be, ceiling or not: a step's output, streams
/// and output file are held in the host's memory up to this size.
pub const MAX_MAX_OUTPUT: u64 = 256 * 1024 * 1024;
/// Bytes of output kept per stream when nothing says otherwise.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Time between SIGTERM and SIGKILL of a stopped program when nothing says
/// otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// The longest `kill_grace` a workflow may ask for: a cancel must stay quick.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(60);

/// Parse a `kill_grace` value and check its bound.
pub fn check_kill_grace(text: &str) -> Result<Duration, String> {
    let grace = parse_duration(text).map_err(|e| format!("kill_grace: {e}"))?;
    if grace > MAX_KILL_GRACE {
        return Err(format!(
            "kill_grace: '{text}' is more than the most allowed, {}",
            humanize(MAX_KILL_GRACE)
        ));
    }
    Ok(grace)
}

/// The limits capability unit.
pub(super) struct Limits;

impl CapabilityUnit for Limits {
    /// Sizes and the timeout parsed; `max_output` at most
    /// [`MAX_MAX_OUTPUT`].
    fn resolve(
        &self,
        spec: &Grants,
        _cx: &ResolveContext<'_>,
        into: &mut ResolvedGrants,
        problems: &mut Vec<String>,
    ) {
        if let Some(text) = &spec.memory {
            match parse_size(text) {
                Ok(bytes) => into.memory = bytes,
                Err(error) => problems.push(format!("memory grant {error}")),
            }
        }
        if let Some(text) = &spec.max_output {
            match parse_size(text) {
                Ok(bytes) if bytes > MAX_MAX_OUTPUT => problems.push(format!(
                    "max_output grant '{text}' is over the host's limit of {} MiB (what a step hands the host is held in memory)",
                    MAX_MAX_OUTPUT >> 20
                )),
                Ok(bytes) => into.max_output = bytes,
                Err(error) => problems.push(format!("max_output grant {error}")),
            }
        }
        if let Some(text) = &spec.timeout {
            match parse_duration(text) {
                Ok(timeout) => into.timeout = Some(timeout),
                Err(error) => problems.push(format!("timeout grant: {error}")),
            }
        }
    }

    /// `memory`, `timeout`, `max_output` parsed; `sandbox` as written.
    fn load_cap(&self, spec: &CeilingSpec, _base: &Path, into: &mut Caps) -> Result<(), String> {
        into.memory = spec
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| format!("memory: {e}"))?;
        into.timeout = spec
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("timeout: {e}"))?;
        into.max_output = spec
            .max_output
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| format!("max_output: {e}"))?;
        into.sandbox = spec.sandbox;
        Ok(())
    }

    /// `timeout` is the step's effective one (its own, its grants' or the
    /// run's); a strict ceiling forbids `sandbox: best-effort`.
    fn check_cap(
        &self,
        caps: &Caps,
        source: &str,
        grants: &ResolvedGrants,
        timeout: Duration,
        problems: &mut Vec<String>,
    ) {
        if let Some(max) = caps.memory.filter(|max| grants.memory > *max) {
            problems.push(format!(
                "memory grant of {} MiB exceeds the operator ceiling in {source} (ceiling memory: {} MiB)",
                grants.memory >> 20,
                max >> 20
            ));
        }
        if let Some(max) = caps.max_output.filter(|max| grants.max_output > *max) {
            problems.push(format!(
                "max_output grant of {} bytes exceeds the operator ceiling in {source} (ceiling max_output: {max} bytes)",
                grants.max_output
            ));
        }
        if caps.sandbox == Some(SandboxMode::Strict) && grants.sandbox == SandboxMode::BestEffort {
            problems.push(format!(
                "sandbox: best-effort is forbidden by the operator ceiling in {source} (ceiling \
                 sandbox: strict); remove it so that started programs run fully confined or \
                 not at all"
            ));
        }
        if let Some(max) = caps.timeout.filter(|max| timeout > *max) {
            problems.push(format!(
                "timeout of {} exceeds the operator ceiling in {source} (ceiling timeout: {})",
                humanize(timeout),
                humanize(max)
            ));
        }
    }

    fn describe(&self, grants: &ResolvedGrants, out: &mut serde_json::Map<String, Value>) {
        out.insert("memory".into(), json!(grants.memory));
        out.insert(
            "timeout_ms".into(),
            json!(grants.timeout.map(|t| t.as_millis() as u64)),
        );
        out.insert("max_output".into(), json!(grants.max_output));
        out.insert("sandbox".into(), json!(grants.sandbox));
        out.insert(
            "kill_grace_ms".into(),
            json!(grants.kill_grace.as_millis() as u64),
        );
    }

    fn summarize(&self, grants: &ResolvedGrants, parts: &mut Vec<String>) {
        parts.push(format!("memory: {} MiB", grants.memory >> 20));
    }
}

/// Host bytes one table element is counted as (a pointer-sized reference).
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// Caps the total linear memory and tables of one step's store.
pub struct StepLimits {
    /// Most bytes all memories and tables together may grow to.
    pub memory_bytes: usize,
    /// Set when a growth request was refused because of `memory_bytes`.
    pub memory_exceeded: bool,
    /// Bytes the step's memories and tables hold now.
    used: usize,
}

impl StepLimits {
    /// Limits of a step with these grants.
    pub fn of(grants: &ResolvedGrants) -> StepLimits {
        StepLimits::new(usize::try_from(grants.memory).unwrap_or(usize::MAX))
    }

    /// Limits of a step whose memory grant is `memory_bytes`.
    pub fn new(memory_bytes: usize) -> StepLimits {
        StepLimits {
            memory_bytes,
            memory_exceeded: false,
            used: 0,
        }
    }

    /// Bytes the step's memories and tables hold now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }

    /// Account for one memory or table growing from `current` to `desired`
    /// bytes; refuse it when the total would pass the grant.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_bytes {
            self.memory_exceeded = true;
            return false;
        }
        self.used = total;
        true
    }
}

impl ResourceLimiter for StepLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_cap_is_on_the_sum_of_all_memories_and_tables() {
        let mut limits = StepLimits::new(64 * MIB);
        // Two memories of 30 MiB each fit ...
        assert!(limits.memory_growing(0, 30 * MIB, None).unwrap());
        assert!(limits.memory_growing(0, 30 * MIB, None).unwrap());
        assert_eq!(limits.used(), 60 * MIB);
        // ... a third of 30 MiB does not, though it is under the cap alone.
        assert!(!limits.memory_growing(0, 30 * MIB, None).unwrap());
        assert!(limits.memory_exceeded);
        // Growing one of the first two counts only the difference.
        assert!(limits.memory_growing(30 * MIB, 33 * MIB, None).unwrap());
        assert_eq!(limits.used(), 63 * MIB);
        // Tables count too: just over 1 MiB of elements is over what is left.
        assert!(!limits
            .table_growing(0, MIB / TABLE_ELEMENT_BYTES + 1, None)
            .unwrap());
        assert!(limits.table_growing(0, 1000, None).unwrap());
        assert_eq!(limits.used(), 63 * MIB + 1000 * TABLE_ELEMENT_BYTES);
    }

    #[test]
    fn absurd_requests_do_not_overflow() {
        let mut limits = StepLimits::new(64 * MIB);
        assert!(!limits.memory_growing(0, usize::MAX, None).unwrap());
        assert!(!limits.table_growing(0, usize::MAX, None).unwrap());
        assert_eq!(limits.used(), 0);
    }

    /// A component of two core instances, each with a 40 MiB memory.
    const TWO_MEMORIES: &str = r#"
        (component
          (core module $a (memory (export "m") 640))
          (core module $b (memory (export "m") 640))
          (core instance (instantiate $a))
          (core instance (instantiate $b)))
    "#;

    fn instantiate(limit: usize) -> (wasmtime::Result<()>, bool) {
        let engine = wasmtime::Engine::default();
        let component =
            wasmtime::component::Component::new(&engine, wat::parse_str(TWO_MEMORIES).unwrap())
                .unwrap();
        let linker = wasmtime::component::Linker::<StepLimits>::new(&engine);
        let mut store = wasmtime::Store::new(&engine, StepLimits::new(limit));
        store.limiter(|limits| limits);
        let result = linker.instantiate(&mut store, &component).map(|_| ());
        (result, store.data().memory_exceeded)
    }

    #[test]
    fn a_component_with_several_memories_is_held_to_one_total() {
        // 2 × 40 MiB: over 64 MiB in total though each memory is under it.
        let (result, exceeded) = instantiate(64 * MIB);
        assert!(
            result.is_err() && exceeded,
            "two 40 MiB memories fit in 64 MiB"
        );
        let (result, exceeded) = instantiate(96 * MIB);
        assert!(result.is_ok() && !exceeded, "{result:?}");
    }
}
