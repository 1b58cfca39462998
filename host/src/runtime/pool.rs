//! A pool of step instances for runs of many steps.
//!
//! By default every step instance maps its linear memory (a 4 GiB
//! reservation, its accessible part, its copy-on-write data image) and its
//! tables when it starts and unmaps them when it ends; unmapping touched
//! pages interrupts the process's other CPUs to flush their TLBs. For a run
//! of a thousand short steps that is a quarter of its time. wasmtime's
//! pooling allocator instead reserves slots for a fixed number of instances
//! once and hands them out again, resetting only what an instance touched
//! (and keeping up to [`KEEP_RESIDENT_SCANNED`] of each memory mapped).
//!
//! Making the pool costs a few milliseconds when the engine is made, which
//! a run of one step would pay for nothing, so only a run of at least
//! [`MIN_STEPS`] steps (or with a `for_each`) gets one ([`slots_for`]).
//! The pool has its own engine ([`super::engine::pooled`]) with the same
//! compiler settings as the shared one, so a component compiled for the
//! shared engine is loaded into it from its compiled bytes, never compiled
//! again. A step takes a slot only when one is free and its component fits
//! a slot ([`StepPool::slot`]); otherwise it runs on the shared engine as
//! before, so the pool never refuses or delays a step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, PoolingAllocationConfig};

use super::bindings::StepPre;
use super::cache::Prepared;
use super::state::StepState;

/// The fewest steps a workflow has for its run to get a pool.
pub const MIN_STEPS: usize = 16;

/// The most step instances a pool holds at once; further steps running at
/// the same time run on the shared engine.
pub const MAX_SLOTS: u32 = 256;

/// What one slot allows a step's component: core instances (a component
/// built by `cargo component` or `wasm32-wasip2` has one to four), linear
/// memories and tables. A component needing more runs on the shared
/// engine.
const CORE_INSTANCES_PER_SLOT: u32 = 16;
const MEMORIES_PER_SLOT: u32 = 4;
const TABLES_PER_SLOT: u32 = 8;

/// Bytes of each memory and table kept mapped (and zeroed by hand) when an
/// instance ends, rather than returned to the kernel, where the kernel can
/// say which pages an instance wrote (Linux's `PAGEMAP_SCAN`, 6.7 and
/// later): only those are zeroed, up to this much, so a short step's reset
/// costs the pages it touched and no `madvise`.
const KEEP_RESIDENT_SCANNED: usize = 1 << 20;

/// Without `PAGEMAP_SCAN` the lowest this-many bytes are zeroed whether
/// touched or not, so less is kept.
const KEEP_RESIDENT_UNSCANNED: usize = 64 << 10;

/// [`KEEP_RESIDENT_SCANNED`] on a kernel with `PAGEMAP_SCAN` (wasmtime
/// uses it there: `pagemap_scan(Auto)`), else [`KEEP_RESIDENT_UNSCANNED`].
fn keep_resident() -> usize {
    if kernel_at_least((6, 7)) {
        KEEP_RESIDENT_SCANNED
    } else {
        KEEP_RESIDENT_UNSCANNED
    }
}

/// Whether the running Linux kernel's version is at least `wanted`
/// (major, minor); false when it cannot be read.
fn kernel_at_least(wanted: (u32, u32)) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    parse_release(&release).is_some_and(|version| version >= wanted)
}

/// The major and minor numbers of a kernel release such as
/// `6.18.44-fc-v1045-x86_64`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How many slots a run of `steps` steps (of which `for_each` fan out)
/// with `parallelism` steps at once gets: `None` for a run too small to pay
/// for a pool.
pub fn slots_for(steps: usize, for_each: usize, parallelism: usize) -> Option<u32> {
    if steps < MIN_STEPS && for_each == 0 {
        return None;
    }
    // A `for_each` runs its own items side by side with the run's steps.
    let wanted = parallelism.saturating_mul(2).max(MIN_STEPS);
    Some(u32::try_from(wanted).unwrap_or(MAX_SLOTS).min(MAX_SLOTS))
}

/// The pooling allocator's settings for `slots` step instances: every
/// total is a slot's allowance times `slots`, so that `slots` steps holding
/// a permit of [`StepPool::slot`] can never run the pool out.
pub(super) fn allocation(slots: u32) -> PoolingAllocationConfig {
    let keep_resident = keep_resident();
    let mut config = PoolingAllocationConfig::new();
    config
        .total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_SLOT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_SLOT)
        .total_memories(slots * MEMORIES_PER_SLOT)
        .max_memories_per_component(MEMORIES_PER_SLOT)
        .total_tables(slots * TABLES_PER_SLOT)
        .max_tables_per_component(TABLES_PER_SLOT)
        .max_tables_per_module(TABLES_PER_SLOT)
        .total_stacks(slots)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident)
        .pagemap_scan(wasmtime::Enabled::Auto);
    config
}

/// The pool of a run: its engine, the step imports linked for it, and its
/// components' pooled twins.
pub(super) struct StepPool {
    engine: &'static Engine,
    linker: Linker<StepState>,
    permits: Arc<Semaphore>,
    /// Per component of the shared engine (keyed by its address, and kept
    /// alive here so the key stays its own): its twin in the pool, or `None`
    /// if it does not fit a slot.
    twins: Mutex<HashMap<usize, (Prepared, Option<Prepared>)>>,
}

impl StepPool {
    /// A pool of `slots` step instances, `None` if its engine cannot be
    /// made.
    pub fn new(slots: u32) -> Result<Option<StepPool>> {
        let Some((engine, slots)) = super::engine::pooled(slots) else {
            return Ok(None);
        };
        // One count of free slots for the process, like the engine: every
        // runtime's steps share the engine's slots.
        static PERMITS: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
        let permits = PERMITS.get_or_init(|| Arc::new(Semaphore::new(*slots as usize)));
        Ok(Some(StepPool {
            engine,
            linker: super::step_linker(engine)?,
            permits: permits.clone(),
            twins: Mutex::new(HashMap::new()),
        }))
    }

    /// A free slot for an instance of `prepared`, with the component
    /// prepared in the pool: `None` when every slot is taken or the
    /// component does not fit one. The slot is the pool's again once the
    /// permit is dropped, which must come after the store the instance
    /// lives in.
    pub fn slot(&self, prepared: &Prepared) -> Option<(Prepared, OwnedSemaphorePermit)> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some((self.twin(prepared)?, permit))
    }

    /// `prepared`'s twin in the pool, made on first use.
    pub fn twin(&self, prepared: &Prepared) -> Option<Prepared> {
        let key = Arc::as_ptr(prepared) as usize;
        let mut twins = self.twins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, twin)) = twins.get(&key) {
            return twin.clone();
        }
        let twin = self
            .make_twin(prepared)
            .inspect_err(|error| tracing::debug!("component not pooled: {error:#}"))
            .ok();
        twins.insert(key, (prepared.clone(), twin.clone()));
        twin
    }

    fn make_twin(&self, prepared: &Prepared) -> Result<Prepared> {
        let shared = super::engine::shared().map_err(anyhow::Error::msg)?;
        if !Engine::same(prepared.engine(), shared) {
            // A quick (baseline) build: its optimized build replaces it.
            anyhow::bail!("not built by the optimizing compiler");
        }
        let bytes = prepared.instance_pre().component().serialize()?;
        // SAFETY: the bytes are this process's own serialization of a
        // component loaded by an engine with the same settings.
        let component = unsafe { Component::deserialize(self.engine, &bytes) }
            .map_err(anyhow::Error::from)
            .context("does not fit a slot of the pool")?;
        let pre = self.linker.instantiate_pre(&component)?;
        Ok(Arc::new(StepPre::new(pre)?))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use crate::step::executor::StepInvocation;
    use serde_json::json;
    use std::time::Duration;

    /// An attempt of `component` with `config` and no grants.
    pub(crate) fn invocation(
        step_id: &str,
        component: &str,
        config: serde_json::Value,
    ) -> StepInvocation {
        StepInvocation {
            run_id: "r1".into(),
            step_id: step_id.into(),
            component: component.into(),
            function: None,
            attempt: 1,
            idempotency_key: format!("r1:{step_id}:0:1"),
            config,
            inputs: json!({}),
            args: json!({}),
            workdir: std::env::temp_dir(),
            cwd: std::env::temp_dir(),
            grants: Default::default(),
            timeout: Duration::from_secs(60),
            scratch_dir: std::env::temp_dir(),
            agent: None,
            cancel: Default::default(),
            lease: Default::default(),
            resume: None,
        }
    }

    /// Steps run in the pool's slots while there are free ones, and on the
    /// shared engine beyond them: more steps at once than slots all finish,
    /// and every slot is free again afterwards. (One test: the pool is the
    /// process's.)
    #[test]
    fn steps_beyond_the_slots_still_run() {
        let runtime = Runtime::with_pool(None, Some(2)).unwrap();
        let pool = runtime.pool.as_ref().expect("a pool on this machine");
        let echo = runtime.load("echo").unwrap();
        let twin = pool.twin(&echo).expect("echo fits a slot");
        assert!(!Engine::same(twin.engine(), echo.engine()));

        let tokio = tokio::runtime::Runtime::new().unwrap();
        let outputs = tokio.block_on(async {
            let steps = (0..6).map(|i| {
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    let sleep = invocation(&format!("z{i}"), "sleep", json!({"ms": 50}));
                    runtime
                        .run_step(sleep, Arc::new(super::super::NullObserver))
                        .await
                })
            });
            let mut outputs = Vec::new();
            for step in steps.collect::<Vec<_>>() {
                outputs.push(step.await.unwrap());
            }
            outputs
        });
        assert!(outputs.iter().all(Result::is_ok), "{outputs:?}");
        assert_eq!(pool.permits.available_permits(), 2);

        let output = tokio
            .block_on(runtime.run_step(
                invocation("e", "echo", json!({"n": 7})),
                Arc::new(super::super::NullObserver),
            ))
            .unwrap();
        assert_eq!(output["n"], 7);

        // A full pool gives no slot until one is given back.
        let held = [pool.slot(&echo).unwrap(), pool.slot(&echo).unwrap()];
        assert!(pool.slot(&echo).is_none());
        drop(held);
        assert!(pool.slot(&echo).is_some());

        // Another runtime of the process shares the engine's slots, whatever
        // size it asks for.
        let other = Runtime::with_pool(None, Some(5)).unwrap();
        assert!(Arc::ptr_eq(
            &other.pool.as_ref().unwrap().permits,
            &pool.permits
        ));
    }

    #[test]
    fn kernel_releases_are_read_as_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v1045-x86_64\n"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.7"), Some((6, 7)));
        assert_eq!(parse_release("garbage"), None);
        assert!((6, 18) >= (6, 7) && (5, 15) < (6, 7) && (6, 6) < (6, 7));
    }

    #[test]
    fn only_runs_of_many_steps_get_a_pool() {
        assert_eq!(slots_for(1, 0, 4), None);
        assert_eq!(slots_for(MIN_STEPS - 1, 0, 64), None);
        assert_eq!(slots_for(MIN_STEPS, 0, 4), Some(MIN_STEPS as u32));
        assert_eq!(slots_for(2, 1, 50), Some(100));
        assert_eq!(slots_for(10_000, 0, 10_000), Some(MAX_SLOTS));
    }
}
