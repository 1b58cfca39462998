//! Compiled components, cached in memory (per process) and on disk (across
//! runs and processes), keyed by the SHA-256 of the wasm bytes and the
//! engine's compatibility hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sha2::Digest;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::bindings::StepPre;
use super::state::StepState;

/// A loaded plugin, ready to instantiate cheaply.
pub type Prepared = Arc<StepPre<StepState>>;

/// Memory + disk cache of compiled components.
pub struct ComponentCache {
    disk_dir: Option<PathBuf>,
    engine_tag: String,
    loaded: Mutex<HashMap<String, Prepared>>,
}

impl ComponentCache {
    /// A cache that also persists compiled code under `disk_dir`.
    pub fn new(engine: &Engine, disk_dir: Option<PathBuf>) -> ComponentCache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            disk_dir,
            engine_tag: format!("{:016x}", hasher.finish()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The prepared component for these bytes, compiling at most once.
    pub fn get_or_load(
        &self,
        engine: &Engine,
        linker: &Linker<StepState>,
        wasm: &[u8],
    ) -> Result<Prepared> {
        let key = hex::encode(sha2::Sha256::digest(wasm));
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let component = self.compile(engine, wasm, &key)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component's imports do not match what wfhost provides")?;
        let prepared = Arc::new(
            StepPre::new(pre)
                .map_err(anyhow::Error::from)
                .context("the component does not implement the wfhost:plugin/step world")?,
        );
        self.lock().insert(key, prepared.clone());
        Ok(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prepared>> {
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

fn store_atomically(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}
