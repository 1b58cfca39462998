//! What a user sees while a big component compiles: it is announced by
//! name and size, a ticker says every few seconds that it is still going
//! (Cranelift reports no progress of its own), and the time it took.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime::Engine;

/// What becomes of a build, for the announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    /// Optimized and cached on disk.
    Cached,
    /// Optimized, no cache directory.
    Uncached,
    /// The quick (baseline) build of a big component's first use.
    Quick,
}

/// On a terminal, says every few seconds that a compile is still going
/// (Cranelift reports no progress of its own); stops when dropped.
struct Ticker {
    done: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Ticker {
    /// How often the ticker speaks.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3);

    fn start(name: String) -> Ticker {
        let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        // SAFETY: isatty has no memory-safety preconditions.
        if unsafe { libc::isatty(2) } == 1 {
            let shared = done.clone();
            let started = std::time::Instant::now();
            let _ = std::thread::Builder::new()
                .name("wfhost-compile-ticker".into())
                .spawn(move || {
                    let (lock, wake) = &*shared;
                    let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while !*finished {
                        let (guard, timeout) = wake
                            .wait_timeout(finished, Self::EVERY)
                            .unwrap_or_else(|e| e.into_inner());
                        finished = guard;
                        if timeout.timed_out() && !*finished {
                            tracing::info!(
                                target: "wfhost::compile",
                                "still compiling {name}: {} s",
                                started.elapsed().as_secs()
                            );
                        }
                    }
                });
        }
        Ticker { done }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, wake) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}

/// Components at least this big say so before they are compiled: a
/// componentize-py component (~18 MB) takes seconds, the first time only.
pub(super) const ANNOUNCED_SIZE: usize = 1 << 20;

/// Compile `wasm`; a big component is announced on stderr (target
/// `wfhost::compile`, shown by default) by name and size, with the time it
/// took and whether it is cached from now on.
pub(super) fn compile_showing_progress(
    engine: &Engine,
    wasm: &[u8],
    label: &str,
    build: Build,
) -> Result<Component> {
    let announce = wasm.len() >= ANNOUNCED_SIZE;
    let mb = wasm.len() as f64 / 1e6;
    let name = std::path::Path::new(label)
        .file_name()
        .map_or(label.to_string(), |n| n.to_string_lossy().into_owned());
    if announce {
        let after = match build {
            Build::Cached => "first use only: cached afterwards",
            Build::Uncached => "no cache directory: every run compiles it",
            Build::Quick => {
                "quick build for first use; an optimized build follows in the background"
            }
        };
        tracing::info!(
            target: "wfhost::compile",
            "compiling {name} ({mb:.1} MB) for this machine ({after})..."
        );
    }
    let started = std::time::Instant::now();
    let ticker = announce.then(|| Ticker::start(name.clone()));
    let component = Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .context("compiling component");
    drop(ticker);
    let component = component?;
    if announce {
        tracing::info!(
            target: "wfhost::compile",
            "compiled {name} ({mb:.1} MB) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(component)
}
