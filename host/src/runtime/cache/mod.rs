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

mod entry;
mod progress;
mod prune;
mod stamp;
mod tiers;

pub use prune::Pruned;
pub use tiers::{enable_optimizer, serve_optimizer_if_asked};

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use sha2::Digest;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::bindings::StepPre;
use super::state::StepState;
use progress::{compile_showing_progress, Build};
use stamp::FileStamp;

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

/// Where a component's bytes are.
pub enum Source<'a> {
    /// In memory (a built-in component, bytes already read).
    Bytes(&'a [u8]),
    /// In a file, read only when its stamp is not known yet.
    File(&'a Path),
}

/// What [`ComponentCache::read_file`] found.
enum FromFile<P> {
    /// The file's component, already loaded in this process.
    Loaded(P),
    /// The file's key and its compiled component, from the disk cache.
    Cached(String, Component),
    /// The file's bytes, and their key when known (from the file's stamp,
    /// or hashed on the way to recording it).
    Read(Vec<u8>, Option<String>),
}

/// The biggest component file the host reads (a componentize-py component
/// with CPython is ~18 MB): a bigger one is refused, not read into memory.
pub const MAX_COMPONENT_FILE: u64 = 512 << 20;

/// The component file at `path`, opened: a regular file of at most
/// [`MAX_COMPONENT_FILE`] bytes (judged on the open handle).
fn open_component(path: &Path, label: &str) -> Result<(File, std::fs::Metadata)> {
    let file = File::open(path).with_context(|| format!("cannot read component '{label}'"))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read component '{label}'"))?;
    if !metadata.is_file() {
        anyhow::bail!("cannot read component '{label}': not a regular file");
    }
    if metadata.len() > MAX_COMPONENT_FILE {
        anyhow::bail!(
            "cannot read component '{label}': {} bytes, more than the {} MiB a component file may be",
            metadata.len(),
            MAX_COMPONENT_FILE >> 20
        );
    }
    Ok((file, metadata))
}

/// The bytes of an opened component file, at most [`MAX_COMPONENT_FILE`]
/// of them even if it grows while read.
fn read_component(file: &mut File, metadata: &std::fs::Metadata, label: &str) -> Result<Vec<u8>> {
    let mut wasm = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_COMPONENT_FILE + 1)
        .read_to_end(&mut wasm)
        .with_context(|| format!("cannot read component '{label}'"))?;
    if wasm.len() as u64 > MAX_COMPONENT_FILE {
        anyhow::bail!(
            "cannot read component '{label}': it grew past the {} MiB a component file may be while read",
            MAX_COMPONENT_FILE >> 20
        );
    }
    Ok(wasm)
}

/// The bytes of the component file at `path` (see [`MAX_COMPONENT_FILE`]).
pub fn read_component_file(path: &Path, label: &str) -> Result<Vec<u8>> {
    let (mut file, metadata) = open_component(path, label)?;
    read_component(&mut file, &metadata, label)
}

/// The tag of an engine's compiled code in cache entries' names: entries of
/// engines with other settings are never confused.
fn engine_tag(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Prune the disk cache in `dir` for this build's engines (the optimized
/// and the quick one): what none of them can load, what a killed writer
/// left, and with `unused_for` entries not used for that long (see
/// [`prune::prune`]).
pub fn prune_disk(dir: &Path, unused_for: Option<std::time::Duration>) -> Result<Pruned> {
    let mut tags = vec![engine_tag(
        super::engine::shared().map_err(anyhow::Error::msg)?,
    )];
    // An engine this machine cannot make has no entries to keep.
    if let Ok(baseline) = super::engine::baseline() {
        tags.push(engine_tag(baseline));
    }
    prune::prune(dir, &tags, unused_for, tiers::PENDING_STALE)
        .with_context(|| format!("cannot prune the compile cache {}", dir.display()))
}

/// The cache directory's folder of file stamp → key records.
const SOURCES: &str = "sources";

/// Memory + disk cache of compiled components; `P` is what a component
/// is prepared into for its world (a step's [`Prepared`] by default).
pub struct ComponentCache<P: Clone = Prepared> {
    disk_dir: Option<PathBuf>,
    engine_tag: String,
    /// Whether a big component with no optimized build cached yet runs on
    /// its quick build first ([`tiers`]).
    quick_first: bool,
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
        ComponentCache {
            disk_dir,
            engine_tag: engine_tag(engine),
            quick_first: false,
            loaded: Mutex::new(HashMap::new()),
            named: Mutex::new(HashMap::new()),
        }
    }

    /// The same cache, giving a big component (of [`tiers::QUICK_SIZE`] or
    /// more) with no optimized build cached yet its quick build first, on
    /// [`super::engine::baseline`], while the optimized one is made in the
    /// background. What `prepare` is given may then belong to either engine
    /// (`Component::engine`).
    pub fn with_quick_first(mut self) -> ComponentCache<P> {
        self.quick_first = true;
        self
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

    /// The component at `source`, compiled (or read from disk) at most
    /// once and made ready by `prepare` (e.g. pre-instantiated for a world).
    /// `label` names the component in what a compile prints.
    pub fn get_or_prepare(
        &self,
        engine: &Engine,
        source: Source<'_>,
        label: &str,
        prepare: impl FnOnce(&Component) -> Result<P>,
    ) -> Result<P> {
        let (wasm, key) = match source {
            Source::Bytes(wasm) => (std::borrow::Cow::Borrowed(wasm), None),
            Source::File(path) => match self.read_file(engine, path, label)? {
                FromFile::Loaded(found) => return Ok(found),
                FromFile::Cached(key, component) => return self.prepared(key, &component, prepare),
                FromFile::Read(bytes, key) => (std::borrow::Cow::Owned(bytes), key),
            },
        };
        let key = key.unwrap_or_else(|| hex::encode(sha2::Sha256::digest(&wasm)));
        if let Some(found) = lock(&self.loaded).get(&key) {
            return Ok(found.clone());
        }
        let component = self.compile(engine, &wasm, label, &key)?;
        self.prepared(key, &component, prepare)
    }

    fn prepared(
        &self,
        key: String,
        component: &Component,
        prepare: impl FnOnce(&Component) -> Result<P>,
    ) -> Result<P> {
        let prepared = prepare(component)?;
        lock(&self.loaded).insert(key, prepared.clone());
        Ok(prepared)
    }

    /// The component file at `path`, opened once: when its stamp names a
    /// key seen before (recorded under `sources/`), the loaded or cached
    /// component for that key without reading the file; else its bytes,
    /// and the key they hash to is recorded for the file's stamp (only
    /// once the file has [settled](FileStamp::settled), so a file being
    /// rewritten is never taken for its older bytes).
    fn read_file(&self, engine: &Engine, path: &Path, label: &str) -> Result<FromFile<P>> {
        let (mut file, metadata) = open_component(path, label)?;
        let stamp = FileStamp::of(&metadata);
        let known = self.known_key(&stamp);
        if let Some(key) = &known {
            if let Some(found) = lock(&self.loaded).get(key) {
                return Ok(FromFile::Loaded(found.clone()));
            }
            if let Some(dir) = &self.disk_dir {
                if let Some(component) = entry::load(engine, &self.entry_path(dir, key)) {
                    return Ok(FromFile::Cached(key.clone(), component));
                }
            }
        }
        let wasm = read_component(&mut file, &metadata, label)?;
        // Changed while read: the bytes stand for no stamp.
        if file.metadata().ok().map(|m| FileStamp::of(&m)) != Some(stamp) {
            return Ok(FromFile::Read(wasm, None));
        }
        if known.is_none() && stamp.settled() {
            let key = hex::encode(sha2::Sha256::digest(&wasm));
            self.record_key(&stamp, &key);
            return Ok(FromFile::Read(wasm, Some(key)));
        }
        Ok(FromFile::Read(wasm, known))
    }

    /// The key recorded for a file with this stamp, if any.
    fn known_key(&self, stamp: &FileStamp) -> Option<String> {
        let dir = self.disk_dir.as_ref()?;
        let key = std::fs::read_to_string(dir.join(SOURCES).join(stamp.to_text())).ok()?;
        let key = key.trim();
        (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_string())
    }

    fn record_key(&self, stamp: &FileStamp, key: &str) {
        let Some(dir) = &self.disk_dir else { return };
        let sources = dir.join(SOURCES);
        let written = std::fs::create_dir_all(&sources)
            .map_err(anyhow::Error::from)
            .and_then(|()| entry::replace(&sources.join(stamp.to_text()), key.as_bytes()));
        if let Err(error) = written {
            tracing::debug!("cannot record the key of a component file: {error:#}");
        }
    }

    fn entry_path(&self, dir: &Path, key: &str) -> PathBuf {
        dir.join(format!("{key}-{}.cwasm", self.engine_tag))
    }

    /// The compiled component for these bytes (read from disk when cached
    /// there, else compiled and stored), without preparing it for a world.
    pub fn compiled(&self, engine: &Engine, wasm: &[u8], label: &str) -> Result<Component> {
        let key = hex::encode(sha2::Sha256::digest(wasm));
        self.compile(engine, wasm, label, &key)
    }

    fn compile(&self, engine: &Engine, wasm: &[u8], label: &str, key: &str) -> Result<Component> {
        let Some(dir) = &self.disk_dir else {
            return compile_showing_progress(engine, wasm, label, Build::Uncached);
        };
        let path = self.entry_path(dir, key);
        if let Some(component) = entry::load(engine, &path) {
            return Ok(component);
        }
        if self.quick_first && wasm.len() >= tiers::QUICK_SIZE {
            match tiers::quick_build(dir, wasm, label, key) {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(
                    "the quick build of {label} failed ({error:#}); compiling it optimized"
                ),
            }
        }
        let component = compile_showing_progress(engine, wasm, label, Build::Cached)?;
        if let Err(error) = entry::store(dir, &path, &component) {
            tracing::warn!("cannot write component cache {}: {error:#}", path.display());
        }
        Ok(component)
    }
}

impl ComponentCache<Prepared> {
    /// The prepared step component for these bytes, compiling at most once.
    pub fn get_or_load<'l>(
        &self,
        engine: &Engine,
        linker_for: impl FnOnce(&Engine) -> Result<&'l Linker<StepState>>,
        source: Source<'_>,
        label: &str,
    ) -> Result<Prepared> {
        self.get_or_prepare(engine, source, label, |component| {
            let pre = linker_for(component.engine())?
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
                .get_or_prepare(&engine, Source::Bytes(&wasm), "test", prepare)
                .unwrap(),
            100
        );
        assert_eq!(
            cache
                .get_or_prepare(&engine, Source::Bytes(&wasm), "test", prepare)
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
                .get_or_prepare(&engine, Source::Bytes(&wasm), "test", prepare)
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

    /// A cache over a fresh directory, the "genuine" component, its key
    /// and the path of its entry there.
    struct Genuine {
        dir: tempfile::TempDir,
        engine: Engine,
        wasm: Vec<u8>,
        key: String,
        cache: ComponentCache,
        entry: PathBuf,
    }

    impl Genuine {
        fn new() -> Genuine {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::default();
            let wasm = exporting("genuine");
            let key = hex::encode(sha2::Sha256::digest(&wasm));
            let cache: ComponentCache = ComponentCache::new(&engine, Some(dir.path().into()));
            let entry = cache.entry_path(dir.path(), &key);
            Genuine {
                dir,
                engine,
                wasm,
                key,
                cache,
                entry,
            }
        }
    }

    #[test]
    fn a_tampered_cache_entry_is_compiled_again_not_loaded() {
        let Genuine {
            dir,
            engine,
            wasm: genuine,
            key,
            cache,
            entry,
        } = Genuine::new();
        cache.compile(&engine, &genuine, "test", &key).unwrap();
        assert!(entry.is_file() && entry::record_path(&entry).is_file());

        // Swap in valid compiled code of another component: wasmtime
        // itself would load it.
        let other = Component::new(&engine, exporting("planted-elsewhere")).unwrap();
        std::fs::write(&entry, other.serialize().unwrap()).unwrap();

        let fresh: ComponentCache = ComponentCache::new(&engine, Some(dir.path().to_path_buf()));
        let loaded = fresh.compile(&engine, &genuine, "test", &key).unwrap();
        assert_eq!(exports(&engine, &loaded), ["genuine"]);
        // ... and the entry was rewritten with the genuine code.
        assert!(entry::load(&engine, &entry).is_some());
        let reloaded = ComponentCache::<Prepared>::new(&engine, Some(dir.path().to_path_buf()))
            .compile(&engine, &genuine, "test", &key)
            .unwrap();
        assert_eq!(exports(&engine, &reloaded), ["genuine"]);
    }

    #[test]
    fn an_entry_without_a_recorded_digest_is_not_loaded() {
        let Genuine {
            dir: _dir,
            engine,
            wasm: genuine,
            key,
            cache,
            entry,
        } = Genuine::new();
        let planted = Component::new(&engine, exporting("planted-elsewhere")).unwrap();
        std::fs::write(&entry, planted.serialize().unwrap()).unwrap();
        let loaded = cache.compile(&engine, &genuine, "test", &key).unwrap();
        assert_eq!(exports(&engine, &loaded), ["genuine"]);
    }

    #[test]
    fn an_entry_written_by_an_older_wfhost_is_verified_once_then_mapped() {
        let Genuine {
            dir: _dir,
            engine,
            wasm: genuine,
            key,
            cache,
            entry,
        } = Genuine::new();
        cache.compile(&engine, &genuine, "test", &key).unwrap();
        let record = std::fs::read_to_string(entry::record_path(&entry)).unwrap();
        let (digest, stamp) = record.split_once('\n').unwrap();
        assert!(FileStamp::parse(stamp).is_some(), "{record}");

        // Only the digest, as older versions wrote it: checked by hashing,
        // loaded, and the stamp recorded for next time.
        std::fs::write(entry::record_path(&entry), digest).unwrap();
        let loaded = entry::load(&engine, &entry).unwrap();
        assert_eq!(exports(&engine, &loaded), ["genuine"]);
        let record = std::fs::read_to_string(entry::record_path(&entry)).unwrap();
        assert!(
            record.starts_with(digest) && record.lines().count() == 2,
            "{record}"
        );
    }

    #[test]
    fn a_component_file_is_hashed_until_known_by_its_stamp_and_a_rewrite_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let file = dir.path().join("plugin.wasm");
        std::fs::write(&file, exporting("first")).unwrap();
        let cache_dir = dir.path().join("cache");
        let load = |expected: &str| {
            let cache: ComponentCache<Component> =
                ComponentCache::new(&engine, Some(cache_dir.clone()));
            let component = cache
                .get_or_prepare(&engine, Source::File(&file), "plugin.wasm", |c| {
                    Ok(c.clone())
                })
                .unwrap();
            assert_eq!(exports(&engine, &component), [expected]);
        };
        let records = || {
            std::fs::read_dir(cache_dir.join(SOURCES))
                .map(|entries| entries.count())
                .unwrap_or(0)
        };

        // Just written: its stamp may not yet stand for its bytes.
        load("first");
        assert_eq!(records(), 0);
        std::thread::sleep(std::time::Duration::from_millis(2100));
        load("first");
        assert_eq!(records(), 1, "a settled file's key is recorded");
        load("first");

        // Rewritten (same size, other bytes): another stamp, read again.
        std::fs::write(&file, exporting("other")).unwrap();
        load("other");

        // Not a regular file: refused, never read.
        let cache: ComponentCache<Component> = ComponentCache::new(&engine, None);
        let error = cache
            .get_or_prepare(&engine, Source::File(dir.path()), "a-directory", |c| {
                Ok(c.clone())
            })
            .err()
            .unwrap();
        assert_eq!(
            format!("{error:#}"),
            "cannot read component 'a-directory': not a regular file"
        );

        // Too big: refused from its size, never read (a sparse file here).
        let huge = dir.path().join("huge.wasm");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_COMPONENT_FILE + 1)
            .unwrap();
        let error = cache
            .get_or_prepare(&engine, Source::File(&huge), "huge.wasm", |c| Ok(c.clone()))
            .err()
            .unwrap();
        assert_eq!(
            format!("{error:#}"),
            "cannot read component 'huge.wasm': 536870913 bytes, more than the 512 MiB a component file may be"
        );
    }
}
