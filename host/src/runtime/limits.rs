//! Per-store resource limits that remember whether they were hit, so an
//! out-of-memory trap can be reported as such.
//!
//! The memory grant caps the step's total: every linear memory of every
//! core instance in the component, plus its tables (counted at
//! [`TABLE_ELEMENT_BYTES`] per element), not each memory on its own.

use wasmtime::ResourceLimiter;

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
        let component = wasmtime::component::Component::new(&engine, TWO_MEMORIES).unwrap();
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
