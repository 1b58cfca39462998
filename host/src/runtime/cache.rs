//! Compiled components, cached in memory (per process) and on disk (across
//! runs and processes), keyed by the SHA-256 of the wasm bytes and the
//! engine's compatibility hash. The one cache of the host: step components
//! (with [`Prepared`]) and policy components (`agent::policy`, with their
//! own pre-instantiated type) both go through [`ComponentCache`], in the
//! same directory ([`shared_disk_dir`]).

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
    loaded: Mutex<HashMap<String, P>>,
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
        }
    }

    /// The component for these bytes, compiled (or read from disk) at most
    /// once and made ready by `prepare` (e.g. pre-instantiated for a world).
    pub fn get_or_prepare(
        &self,
        engine: &Engine,
        wasm: &[u8],
        prepare: impl FnOnce(&Component) -> Result<P>,
    ) -> Result<P> {
        let key = hex::encode(sha2::Sha256::digest(wasm));
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let component = self.compile(engine, wasm, &key)?;
        let prepared = prepare(&component)?;
        self.lock().insert(key, prepared.clone());
        Ok(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, P>> {
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn compile(&self, engine: &Engine, wasm: &[u8], key: &str) -> Result<Component> {
        let Some(dir) = &self.disk_dir else {
            return Component::new(engine, wasm)
                .map_err(anyhow::Error::from)
                .context("compiling component");
        };
        let path = dir.join(format!("{key}-{}.cwasm", self.engine_tag));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, into wfhost's own cache
            // directory; wasmtime re-checks the header before use.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(
                    "ignoring unusable cache entry {}: {error:#}",
                    path.display()
                ),
            }
        }
        let component = Component::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .context("compiling component")?;
        if let Err(error) = store_atomically(dir, &path, &component) {
            tracing::warn!("cannot write component cache {}: {error:#}", path.display());
        }
        Ok(component)
    }
}

impl ComponentCache<Prepared> {
    /// The prepared step component for these bytes, compiling at most once.
    pub fn get_or_load(
        &self,
        engine: &Engine,
        linker: &Linker<StepState>,
        wasm: &[u8],
    ) -> Result<Prepared> {
        self.get_or_prepare(engine, wasm, |component| {
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

fn store_atomically(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)?;
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
        // The text format: Component::new parses it too.
        let wasm = b"(component)".to_vec();
        let prepared = AtomicUsize::new(0);
        let prepare = |_: &Component| Ok(prepared.fetch_add(1, Ordering::SeqCst) + 100);

        let cache: ComponentCache<usize> = ComponentCache::new(&engine, Some(dir.path().into()));
        assert_eq!(cache.get_or_prepare(&engine, &wasm, prepare).unwrap(), 100);
        assert_eq!(cache.get_or_prepare(&engine, &wasm, prepare).unwrap(), 100);
        assert_eq!(prepared.load(Ordering::SeqCst), 1, "prepared once");
        assert_eq!(cwasm_files(dir.path()), 1);

        // Another cache over the same directory (another process) reads the
        // compiled code back instead of writing a second copy.
        let other: ComponentCache<usize> = ComponentCache::new(&engine, Some(dir.path().into()));
        assert_eq!(other.get_or_prepare(&engine, &wasm, prepare).unwrap(), 101);
        assert_eq!(cwasm_files(dir.path()), 1);
        assert!(shared_disk_dir().is_some());
    }
}
