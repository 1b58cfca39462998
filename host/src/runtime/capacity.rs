//! How many step instances may live at once.
//!
//! Each live wasm instance holds about seven memory mappings (its linear
//! memory's reservation, accessible part and copy-on-write image, its fiber
//! stack and guard, ...). Linux caps a process's mappings at
//! `vm.max_map_count` (65,530 by default); past it, `mmap`/`munmap` fail and
//! wasmtime aborts the whole process. So the executor admits at most as many
//! instances at once as the map budget allows (about 7,900 by default);
//! further ready steps wait for a slot, and their timeout starts when they
//! get one. Raising `vm.max_map_count` raises the limit.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// Mappings counted per live instance (seven measured, with a margin).
const MAPS_PER_INSTANCE: usize = 8;

/// Mappings left for everything else (the binary, libraries, heap, thread
/// stacks, SQLite, compiled code, the idle fiber stacks `stacks` keeps).
const RESERVED_MAPS: usize = 2048;

/// The fewest instances admitted whatever the kernel says.
const MIN_INSTANCES: usize = 64;

/// The limit of mappings when `/proc/sys/vm/max_map_count` cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Slots for live step instances, one per instance.
pub(crate) fn instance_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(instance_budget(max_map_count())))
}

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_MAP_COUNT)
}

/// How many instances `max_map_count` mappings leave room for.
fn instance_budget(max_map_count: usize) -> usize {
    (max_map_count.saturating_sub(RESERVED_MAPS) / MAPS_PER_INSTANCE).max(MIN_INSTANCES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_the_kernels_map_limit() {
        assert_eq!(instance_budget(65_530), 7_935);
        assert_eq!(instance_budget(262_144), 32_512);
        assert_eq!(instance_budget(100), MIN_INSTANCES);
        assert!(instance_slots().available_permits() >= MIN_INSTANCES);
    }
}
