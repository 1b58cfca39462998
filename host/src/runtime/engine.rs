//! The process's one wasmtime engine, shared by step components and
//! policy components, so both compile with the same settings and share
//! compiled code on disk (see [`super::cache`]).
//!
//! The engine interrupts guests by epoch: a ticker thread advances the
//! epoch every [`EPOCH_TICK`] for the life of the process. A step yields
//! to the scheduler at each tick (its timeout is enforced by the host); a
//! policy decision traps once its deadline of ticks has passed.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, Strategy};

/// How often the epoch advances; steps yield to the scheduler at each tick,
/// which is also the granularity of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The shared engine, made (and its epoch ticker started) on first use:
/// Cranelift, optimized code.
pub fn shared() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| make(Strategy::Cranelift))
        .as_ref()
        .map_err(Clone::clone)
}

/// The baseline engine, made on first use: Winch, wasmtime's single-pass
/// compiler, which compiles a big component several times faster than
/// Cranelift into slower code. A big component's first use runs on it
/// while its optimized build is made in the background (see
/// [`super::cache`]); its components need a linker and stores of their
/// own (`Component::engine` says which engine a component belongs to).
pub fn baseline() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| make(Strategy::Winch))
        .as_ref()
        .map_err(Clone::clone)
}

/// The pooled engine, made by the first call (later calls get the same
/// one whatever `slots` they ask for): Cranelift like [`shared`], with
/// compiled code interchangeable with it, but whose instances take their
/// memories, tables and fiber stacks from a pool of `slots` step instances
/// made once, instead of mapping and unmapping them for each instance (see
/// [`super::pool`]). `None` when the pool cannot be made (its address
/// space refused, say): steps then run on the shared engine. With the
/// engine comes the number of slots it really has.
pub fn pooled(slots: u32) -> Option<&'static (Engine, u32)> {
    static ENGINE: OnceLock<Option<(Engine, u32)>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = config(Strategy::Cranelift);
            config.allocation_strategy(super::pool::allocation(slots));
            start(&config)
                .inspect_err(|error| tracing::debug!("no pooled engine: {error}"))
                .ok()
                .map(|engine| (engine, slots))
        })
        .as_ref()
}

fn make(strategy: Strategy) -> Result<Engine, String> {
    let mut config = config(strategy);
    config.with_host_stack(super::stacks::shared());
    start(&config)
}

/// The settings every engine of the process shares (the compiled code of
/// one is loadable by the others of the same strategy).
fn config(strategy: Strategy) -> Config {
    let mut config = Config::new();
    config.strategy(strategy);
    config.epoch_interruption(true);
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    config
}

/// An engine made from `config`, with its epoch ticker started.
fn start(config: &Config) -> Result<Engine, String> {
    let engine = Engine::new(config).map_err(|e| format!("wasm engine: {e:#}"))?;
    let ticking = engine.clone();
    std::thread::Builder::new()
        .name("wfhost-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticking.increment_epoch();
        })
        .map_err(|e| format!("wasm engine: cannot start the epoch ticker: {e}"))?;
    Ok(engine)
}

/// Epoch ticks in `duration` (at least one).
pub fn ticks(duration: Duration) -> u64 {
    (duration.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_engine_per_process() {
        let first = shared().unwrap();
        let second = shared().unwrap();
        assert!(Engine::same(first, second));
        assert!(!Engine::same(first, baseline().unwrap()));
    }

    #[test]
    fn ticks_round_down_but_never_to_zero() {
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::from_millis(25)), 2);
        assert_eq!(ticks(Duration::from_secs(2)), 200);
    }
}
