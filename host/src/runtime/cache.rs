//! Compiled components, cached in memory (per process) and on disk (across
//! runs and processes), keyed by the SHA-256 of the wasm bytes and the
//! engine's compatibility hash. The one cache of the host: step components
//! (with [`Prepared`]) and policy components (`agent::policy`, with their
//! own pre-instantiated type) both go through [`ComponentCache`], in the
//! same directory ([`shared_disk_dir`]).
//!
//! A component is read and hashed once per process: later steps of the same
//! component reuse the prepared one by name. Compiled code on disk is
//! native code that wasmtime loads without checking it, so next to each
//! `.cwasm` file the host records the SHA-256 of the bytes it wrote
//! (`.cwasm.sha256`); an entry whose bytes do not match is not loaded but
//! compiled again (and rewritten).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use sha2::Digest;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::bindings::StepPre;
use super::state::StepState;

/// A loaded plugin, ready to instantiate cheaply.
pub type Prepared = Arc<StepPre<StepState>>;

/// The directory compiled components are cached in for this process: set
/// by the first [`crate::runtime::Runtime`] made with one (from the CLI's
/// choice), and used by every other cache of the process too.
static SHARED_DISK_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where [`ComponentCache`]s of this process persist compiled code, if a
/// runtime with a cache directory was made.
pub fn shared_disk_dir() -> Option<PathBuf> {
    SHARED_DISK_DIR.get().cloned()
}

/// Memory + disk cache of compiled components; `P` is what a component
/// is prepared into for its world (a step's [`Prepared`] by default).
pub struct ComponentCache<P: Clone = Prepared> {
    disk_dir: Option<PathBuf>,
    engine_tag: String,
    /// By SHA-256 of the wasm bytes.
    loaded: Mutex<HashMap<String, P>>,
    /// By component name or path, as steps name it.
    named: Mutex<HashMap<String, P>>,
}

impl<P: Clone> ComponentCache<P> {
    /// A cache that also persists compiled code under `disk_dir`; the
    /// first directory given in the process becomes [`shared_disk_dir`].
    pub fn new(engine: &Engine, disk_dir: Option<PathBuf>) -> ComponentCache<P> {
        if let Some(dir) = &disk_dir {
            let _ = SHARED_DISK_DIR.set(dir.clone());
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            disk_dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            loaded: Mutex::new(HashMap::new()),
            named: Mutex::new(HashMap::new()),
        }
    }

    /// Where compiled code is kept on disk, if anywhere.
    pub fn disk_dir(&self) -> Option<&Path> {
        self.disk_dir.as_deref()
    }

    /// The component already loaded under `name` (a built-in name or a
    /// path, as steps name it), if any.
    pub fn named(&self, name: &str) -> Option<P> {
        lock(&self.named).get(name).cloned()
    }

    /// Remember `prepared` as the component `name`, so it is not read and
    /// hashed again in this process.
    pub fn remember(&self, name: &str, prepared: &P) {
        lock(&self.named).insert(name.to_string(), prepared.clone());
    }

    /// The component for these bytes, compiled (or read from disk) at most
    /// once and made ready by `prepare` (e.g. pre-instantiated for a world).
    /// `label` names the component in what a compile prints.
    pub fn get_or_prepare(
        &self,
        engine: &Engine,
        wasm: &[u8],
        label: &str,
        prepare: impl FnOnce(&Component) -> Result<P>,
    ) -> Result<P> {
        let key = hex::encode(sha2::Sha256::digest(wasm));
        if let Some(found) = lock(&self.loaded).get(&key) {
            return Ok(found.clone());
        }
        let component = self.compile(engine, wasm, label, &key)?;
        let prepared = prepare(&component)?;
        lock(&self.loaded).insert(key, prepared.clone());
        Ok(prepared)
    }

    /// The compiled component for these bytes (read from disk when cached
    /// there, else compiled and stored), without preparing it for a world.
    pub fn compiled(&self, engine: &Engine, wasm: &[u8], label: &str) -> Result<Component> {
        let key = hex::encode(sha2::Sha256::digest(wasm));
        self.compile(engine, wasm, label, &key)
    }

    fn compile(&self, engine: &Engine, wasm: &[u8], label: &str, key: &str) -> Result<Component> {
        let Some(dir) = &self.disk_dir else {
            return compile_showing_progress(engine, wasm, label, false);
        };
        let path = dir.join(format!("{key}-{}.cwasm", self.engine_tag));
        if let Some(bytes) = read_verified(&path) {
            // SAFETY: these are the exact bytes `Component::serialize` wrote
            // for an engine with the same compatibility hash: their SHA-256
            // matches the one recorded when they were written.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(
                    "ignoring unusable cache entry {}: {error:#}",
                    path.display()
                ),
            }
        }
        let component = compile_showing_progress(engine, wasm, label, true)?;
        if let Err(error) = store_atomically(dir, &path, &component) {
            tracing::warn!("cannot write component cache {}: {error:#}", path.display());
        }
        Ok(component)
    }
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
const ANNOUNCED_SIZE: usize = 1 << 20;

/// Compile `wasm`; a big component is announced on stderr (target
/// `wfhost::compile`, shown by default) by name and size, with the time it
/// took and whether it is cached from now on.
fn compile_showing_progress(
    engine: &Engine,
    wasm: &[u8],
    label: &str,
    cached: bool,
) -> Result<Component> {
    let announce = wasm.len() >= ANNOUNCED_SIZE;
    let mb = wasm.len() as f64 / 1e6;
    let name = std::path::Path::new(label)
        .file_name()
        .map_or(label.to_string(), |n| n.to_string_lossy().into_owned());
    if announce {
        let after = if cached {
            "first use only: cached afterwards"
        } else {
            "no cache directory: every run compiles it"
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

impl ComponentCache<Prepared> {
    /// The prepared step component for these bytes, compiling at most once.
    pub fn get_or_load(
        &self,
        engine: &Engine,
        linker: &Linker<StepState>,
        wasm: &[u8],
        label: &str,
    ) -> Result<Prepared> {
        self.get_or_prepare(engine, wasm, label, |component| {
            let pre = linker
                .instantiate_pre(component)
                .map_err(anyhow::Error::from)
                .context("the component's imports do not match what wfhost provides")?;
            Ok(Arc::new(
                StepPre::new(pre)
                    .map_err(anyhow::Error::from)
                    .context("the component does not implement the wfhost:plugin/step world")?,
            ))
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file recording the SHA-256 of a cache entry's bytes.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The bytes of the cache entry at `path` if they match the digest the
/// host recorded for them; `None` (with a warning for a mismatch) if not.
fn read_verified(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let Ok(recorded) = std::fs::read_to_string(digest_path(path)) else {
        // Written by an older wfhost (or its digest not yet written):
        // not trusted, quietly compiled again.
        tracing::debug!(
            "cache entry {} has no recorded digest; compiling again",
            path.display()
        );
        return None;
    };
    if recorded.trim() == hex::encode(sha2::Sha256::digest(&bytes)) {
        return Some(bytes);
    }
    tracing::warn!(
        "cache entry {} does not match the digest recorded when it was compiled; compiling again",
        path.display()
    );
    None
}

/// Write the entry and its digest, each through a temporary file and a
/// rename, entry first: a reader sees either a matching pair or a
/// mismatch (and recompiles), never a torn file.
fn store_atomically(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    for (target, contents) in [
        (path.to_path_buf(), bytes),
        (digest_path(path), digest.into_bytes()),
    ] {
        let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        std::fs::write(&temp, contents)?;
        std::fs::rename(&temp, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cwasm_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "cwasm")
            })
            .count()
    }

    #[test]
    fn any_world_is_compiled_once_and_shared_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let wasm = wat::parse_str("(component)").unwrap();
        let prepared = AtomicUsize::new(0);
        let prepare = |_: &Component| Ok(prepared.fetch_add(1, Ordering::SeqCst) + 100);

        let cache: ComponentCache<usize> = ComponentCache::new(&engine, Some(dir.path().into()));
        assert_eq!(
            cache
                .get_or_prepare(&engine, &wasm, "test", prepare)
                .unwrap(),
            100
        );
        assert_eq!(
            cache
                .get_or_prepare(&engine, &wasm, "test", prepare)
                .unwrap(),
            100
        );
        assert_eq!(prepared.load(Ordering::SeqCst), 1, "prepared once");
        assert_eq!(cwasm_files(dir.path()), 1);

        // Another cache over the same directory (another process) reads the
        // compiled code back instead of writing a second copy.
        let other: ComponentCache<usize> = ComponentCache::new(&engine, Some(dir.path().into()));
        assert_eq!(
            other
                .get_or_prepare(&engine, &wasm, "test", prepare)
                .unwrap(),
            101
        );
        assert_eq!(cwasm_files(dir.path()), 1);
        assert!(shared_disk_dir().is_some());
    }

    fn exporting(name: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func (export "{name}") (canon lift (core func $i "f"))))"#
        ))
        .unwrap()
    }

    fn exports(engine: &Engine, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    #[test]
    fn a_tampered_cache_entry_is_compiled_again_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let genuine = exporting("genuine");
        let key = hex::encode(sha2::Sha256::digest(&genuine));
        let cache: ComponentCache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
        cache.compile(&engine, &genuine, "test", &key).unwrap();
        let entry = dir.path().join(format!("{key}-{}.cwasm", cache.engine_tag));
        assert!(entry.is_file() && digest_path(&entry).is_file());

        // Swap in valid compiled code of another component: wasmtime
        // itself would load it.
        let other = Component::new(&engine, exporting("planted")).unwrap();
        std::fs::write(&entry, other.serialize().unwrap()).unwrap();

        let fresh: ComponentCache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
        let loaded = fresh.compile(&engine, &genuine, "test", &key).unwrap();
        assert_eq!(exports(&engine, &loaded), ["genuine"]);
        // ... and the entry was rewritten with the genuine code.
        assert!(read_verified(&entry).is_some());
        let reloaded = ComponentCache::<Prepared>::new(&engine, Some(dir.path().to_path_buf()))
            .compile(&engine, &genuine, "test", &key)
            .unwrap();
        assert_eq!(exports(&engine, &reloaded), ["genuine"]);
    }

    #[test]
    fn an_entry_without_a_recorded_digest_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let genuine = exporting("genuine");
        let key = hex::encode(sha2::Sha256::digest(&genuine));
        let cache: ComponentCache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
        let entry = dir.path().join(format!("{key}-{}.cwasm", cache.engine_tag));
        let planted = Component::new(&engine, exporting("planted")).unwrap();
        std::fs::write(&entry, planted.serialize().unwrap()).unwrap();
        let loaded = cache.compile(&engine, &genuine, "test", &key).unwrap();
        assert_eq!(exports(&engine, &loaded), ["genuine"]);
    }
}
