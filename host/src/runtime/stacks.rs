//! Fiber stacks for step instances, kept for the next instance instead of
//! mapped and unmapped for each one.
//!
//! Every instance runs on a fiber with a stack of its own (2 MiB and a
//! guard page). wasmtime's on-demand allocator maps a stack per instance
//! and unmaps it when the instance ends; the unmapping of touched pages
//! interrupts every other CPU running the process to flush its TLB, and
//! the next stack faults its pages in again. For a run of short steps that
//! was the larger part of the kernel's time. The pool keeps up to
//! [`IDLE_STACKS`] stacks that instances have finished with and hands them
//! out again; beyond that, stacks are unmapped as before.
//!
//! A stack handed out again keeps what the last instance left on it, as
//! wasmtime's own pooling allocator does: the native stack is never
//! visible to guest code (a guest's own stack lives in its linear memory),
//! and when wasmtime asks for zeroed stacks they are zeroed.

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::{StackCreator, StackMemory};

/// Stacks kept for reuse at most: each keeps two mappings (stack and
/// guard) out of the budget `capacity` reserves for things other than live
/// instances.
pub const IDLE_STACKS: usize = 64;

/// The process's stack pool, shared by its engines.
pub fn shared() -> Arc<StackPool> {
    static POOL: OnceLock<Arc<StackPool>> = OnceLock::new();
    POOL.get_or_init(|| Arc::new(StackPool::default())).clone()
}

/// Fiber stacks that instances have finished with.
#[derive(Default)]
pub struct StackPool {
    idle: Arc<Idle>,
}

/// The stacks of a pool waiting to be handed out again.
#[derive(Default)]
struct Idle(Mutex<Vec<Mapping>>);

impl Idle {
    fn take(&self, size: usize) -> Option<Mapping> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let position = idle.iter().rposition(|m| m.size() == size)?;
        Some(idle.swap_remove(position))
    }

    fn give_back(&self, mapping: Mapping) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_STACKS {
            idle.push(mapping);
        }
        // Otherwise `mapping` is dropped here: unmapped.
    }
}

#[cfg(test)]
impl StackPool {
    /// Stacks waiting to be handed out again.
    pub fn idle(&self) -> usize {
        self.idle.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

// SAFETY: every stack handed out is page aligned, `size` bytes of
// read-write memory above an inaccessible guard page, owned by the
// `PooledStack` until it is dropped (only then can it be handed out again).
unsafe impl StackCreator for StackPool {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let size = size.next_multiple_of(page_size());
        let mapping = match self.idle.take(size) {
            Some(mapping) => {
                if zeroed {
                    mapping.zero();
                }
                mapping
            }
            // A fresh anonymous mapping is zero-filled.
            None => Mapping::new(size)?,
        };
        Ok(Box::new(PooledStack {
            mapping: Some(mapping),
            idle: self.idle.clone(),
        }))
    }
}

/// A stack lent to one instance; back to the pool when dropped.
struct PooledStack {
    mapping: Option<Mapping>,
    idle: Arc<Idle>,
}

impl PooledStack {
    fn mapping(&self) -> &Mapping {
        self.mapping.as_ref().expect("a lent stack has its mapping")
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        if let Some(mapping) = self.mapping.take() {
            self.idle.give_back(mapping);
        }
    }
}

// SAFETY: see `StackCreator for StackPool`.
unsafe impl StackMemory for PooledStack {
    fn top(&self) -> *mut u8 {
        let mapping = self.mapping();
        mapping.base.wrapping_add(mapping.len)
    }

    fn range(&self) -> Range<usize> {
        let mapping = self.mapping();
        let base = mapping.base as usize;
        base + mapping.guard..base + mapping.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let mapping = self.mapping();
        mapping.base..mapping.base.wrapping_add(mapping.guard)
    }
}

/// One stack's memory: a guard page, then the stack (which grows down
/// towards the guard).
struct Mapping {
    base: *mut u8,
    /// The whole mapping, guard included.
    len: usize,
    guard: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing about
// it is tied to a thread.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(size: usize) -> wasmtime::Result<Mapping> {
        let guard = page_size();
        let len = size + guard;
        // SAFETY: a new private anonymous mapping, inaccessible until the
        // stack part is made read-write below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let error = std::io::Error::last_os_error();
            return Err(wasmtime::Error::msg(format!(
                "cannot map a fiber stack of {size} bytes: {error}"
            )));
        }
        let mapping = Mapping {
            base: base.cast(),
            len,
            guard,
        };
        // SAFETY: the range lies inside the mapping just made.
        let status = unsafe {
            libc::mprotect(
                mapping.base.wrapping_add(guard).cast(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if status != 0 {
            let error = std::io::Error::last_os_error();
            return Err(wasmtime::Error::msg(format!(
                "cannot make a fiber stack writable: {error}"
            )));
        }
        Ok(mapping)
    }

    /// The stack's size, guard excluded.
    fn size(&self) -> usize {
        self.len - self.guard
    }

    fn zero(&self) {
        // SAFETY: the stack part is read-write memory owned by this value
        // and not in use (it is being handed out).
        unsafe { std::ptr::write_bytes(self.base.wrapping_add(self.guard), 0, self.size()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Mapping::new` and nothing uses
        // it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| {
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_stack_is_handed_out_again_and_zeroed_when_asked() {
        let pool = StackPool::default();
        let size = 64 * 1024;
        let first = pool.new_stack(size, false).unwrap();
        let range = first.range();
        assert_eq!(range.end - range.start, size);
        assert_eq!(range.end, first.top() as usize);
        assert_eq!(first.guard_range().end as usize, range.start);
        // SAFETY: the stack's memory is read-write and owned by this test.
        unsafe { *((range.end - 8) as *mut u64) = 0xfeed };
        drop(first);
        let again = pool.new_stack(size, false).unwrap();
        assert_eq!(again.range(), range, "the same stack, not a new mapping");
        // SAFETY: as above.
        assert_eq!(unsafe { *((range.end - 8) as *const u64) }, 0xfeed);
        drop(again);
        let zeroed = pool.new_stack(size, true).unwrap();
        assert_eq!(zeroed.range(), range);
        // SAFETY: as above.
        assert_eq!(unsafe { *((range.end - 8) as *const u64) }, 0);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_stacks() {
        let pool = StackPool::default();
        let size = 32 * 1024;
        let stacks: Vec<_> = (0..IDLE_STACKS + 8)
            .map(|_| pool.new_stack(size, false).unwrap())
            .collect();
        drop(stacks);
        assert_eq!(pool.idle(), IDLE_STACKS);
    }
}
