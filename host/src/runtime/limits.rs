//! Per-store resource limits that remember whether they were hit, so an
//! out-of-memory trap can be reported as such.

use wasmtime::ResourceLimiter;

/// Caps linear memory (bytes) and table growth of one step's store.
pub struct StepLimits {
    /// Most linear memory, in bytes, one memory may grow to.
    pub memory_bytes: usize,
    /// Set when a growth request was refused because of `memory_bytes`.
    pub memory_exceeded: bool,
}

/// Most elements a table may hold.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for StepLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
