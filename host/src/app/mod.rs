//! The wiring of a wfhost application: where the host config is, the
//! operator's ceiling, the store (with its configured durability), the
//! compiled-component cache, the wasm runtime and the driver that ties them
//! together. The CLI is one front end on top; a server can reuse the same
//! wiring.

pub mod background;
pub mod control;
pub mod home;
pub mod notes;
pub mod plugins;
pub mod registry;
pub mod runs;
pub mod status;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::ceiling::{self, Ceiling};
use crate::engine::grants::{self, HostState, ResolvedGrants};
use crate::engine::step_types::SCRIPT_COMPONENT;
use crate::engine::{Driver, RunListener};
use crate::runtime::{Runtime, WasmExecutor};
use crate::step::executor::StepExecutor;
use crate::store::{Durability, EngineStore};
use crate::workflow::LoadedWorkflow;

/// Invalid input (a user mistake, such as a broken config file or a grant
/// over the ceiling), as opposed to an operational failure. The CLI reports
/// it on one line with exit code 2.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// A workflow (or its arguments) with problems: reported like [`Invalid`],
/// one line per diagnostic, and as structured diagnostics with `--json`.
#[derive(Debug)]
pub struct InvalidWorkflow(pub crate::workflow::Diagnostics);

impl std::fmt::Display for InvalidWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InvalidWorkflow {}

/// The host config file: `given`, else `<home>/config.toml` if it exists.
pub fn config_path(home: &Path, given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(path) => Some(path.to_path_buf()),
        None => Some(home.join("config.toml")).filter(|default| default.exists()),
    }
}

/// Open the store: PostgreSQL when `store` (`--store`/`WFHOST_STORE`) or the
/// config's `[store] url` names a database, else SQLite under `home` with
/// the config's `[store] durability` (`config`: see [`config_path`]). A
/// broken config or URL is [`Invalid`].
pub fn open_store(
    home: &Path,
    config: Option<&Path>,
    store: Option<&str>,
) -> anyhow::Result<Arc<dyn EngineStore>> {
    let durability = match config_path(home, config) {
        Some(path) => ceiling::load_durability(&path).map_err(Invalid)?,
        None => Durability::default(),
    };
    if let Some(url) = store_url(home, config, store)? {
        return crate::store::open_postgres(&url, home, durability)
            .map_err(|error| anyhow::anyhow!("{error}"));
    }
    crate::store::open(home, durability)
        .map_err(|error| anyhow::anyhow!("cannot open store in '{}': {error}", home.display()))
}

/// The PostgreSQL store to use, if any: `store` (`--store`/`WFHOST_STORE`),
/// else the config's `[store] url`; `None` means SQLite under the home.
pub fn store_url(
    home: &Path,
    config: Option<&Path>,
    store: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let url = match (store, config_path(home, config)) {
        (Some(url), _) => Some(url.to_string()),
        (None, Some(path)) => ceiling::load_store_url(&path).map_err(Invalid)?,
        (None, None) => None,
    };
    let Some(url) = url.filter(|url| !url.trim().is_empty()) else {
        return Ok(None);
    };
    check_store_url(&url)?;
    Ok(Some(url))
}

/// A store URL wfhost can use: `postgres://` or `postgresql://`.
pub fn check_store_url(url: &str) -> anyhow::Result<()> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(Invalid(format!(
            "store '{}': wfhost stores runs in SQLite under the home (the default) or in \
             PostgreSQL, given as postgres://USER@HOST:PORT/DATABASE",
            crate::store::redact_url(url)
        ))
        .into())
    }
}

/// The operator's ceiling from the config (see [`config_path`]), if there
/// is a config. A broken config file is [`Invalid`].
pub fn load_ceiling(home: &Path, config: Option<&Path>) -> anyhow::Result<Option<Ceiling>> {
    let Some(path) = config_path(home, config) else {
        return Ok(None);
    };
    Ceiling::load(&path).map_err(|e| Invalid(e).into())
}

/// Resolve every step's grants (and retry policies) against the ceiling
/// and wfhost's own state under `home`; problems are [`Invalid`].
pub fn check_grants(
    home: &Path,
    workflow: &LoadedWorkflow,
    ceiling: Option<&Ceiling>,
) -> anyhow::Result<Vec<ResolvedGrants>> {
    crate::engine::retry::resolve_all(workflow).map_err(|d| Invalid(d.to_string()))?;
    let host = HostState::new(home, Some(&component_cache_dir(home)));
    let resolved =
        grants::resolve_all(workflow, ceiling, &host).map_err(|d| Invalid(d.to_string()))?;
    // `artifacts:` must name files inside the step's read-write grants.
    let mut problems = Vec::new();
    for (step, grants) in workflow.def.steps.iter().zip(&resolved) {
        for pattern in &step.artifacts {
            if let Err(why) = crate::engine::artifacts::place(pattern, &workflow.dir, grants) {
                problems.push(format!("step '{}': {why}", step.id));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid(problems.join("\n")).into());
    }
    Ok(resolved)
}

/// Directory for compiled components shared by every run on this machine:
/// `$WFHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/wfhost`, else
/// `~/.cache/wfhost`, else `<home>/cache`.
pub fn component_cache_dir(home: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("WFHOST_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("wfhost");
    }
    if let Some(dir) = std::env::var_os("HOME") {
        return PathBuf::from(dir).join(".cache").join("wfhost");
    }
    home.join("cache")
}

/// The wasm runtime, caching compiled components for `home` (see
/// [`component_cache_dir`]).
pub fn runtime(home: &Path) -> anyhow::Result<Arc<Runtime>> {
    Runtime::new(Some(component_cache_dir(home)))
}

/// An executor whose wasm runtime (that of [`runtime`]) is made on
/// another thread together with the components `workflow`'s steps run
/// (read from the cache, or compiled), so that this work overlaps what the
/// caller does meanwhile: opening the store, recording and claiming the
/// run. The driver's first use of the executor (its preparation of the
/// components, before any step starts) waits for it. A component that
/// fails to load there is loaded again by that preparation, which reports
/// it; a runtime that could not be made fails the run with the reason.
pub fn warm_runtime(home: &Path, workflow: &LoadedWorkflow) -> Warming {
    let cache_dir = component_cache_dir(home);
    let mut components: Vec<String> = workflow
        .def
        .steps
        .iter()
        .map(|step| crate::engine::step_types::component_of(workflow, step))
        .collect();
    components.sort();
    components.dedup();
    if components
        .iter()
        .any(|component| component == SCRIPT_COMPONENT)
    {
        // Known before the runtime is made: the launcher's start (an
        // `exec` of this binary) overlaps making it.
        crate::runtime::prepare_for_programs(Some(&cache_dir));
    }
    let made_in = cache_dir.clone();
    let slots = pool_slots(&workflow.def);
    let thread = std::thread::Builder::new()
        .name("wfhost-warm-up".into())
        .spawn(move || {
            let runtime = Runtime::with_pool(Some(made_in), slots)?;
            let _ = WasmExecutor(runtime.clone()).prepare(&components);
            Ok(runtime)
        });
    Warming {
        thread: std::sync::Mutex::new(Some(thread)),
        ready: std::sync::OnceLock::new(),
        cache_dir,
    }
}

/// The instance pool a run of `def` gets ([`crate::runtime::pool`]): as
/// many slots as its steps may run at once, counting each `for_each`'s own
/// parallelism; `None` for a run of few steps.
fn pool_slots(def: &crate::workflow::model::Workflow) -> Option<u32> {
    use crate::engine::driver::DEFAULT_PARALLELISM;
    let fan_outs = def.steps.iter().filter(|step| step.for_each.is_some());
    let parallelism = fan_outs.clone().fold(
        def.config.parallelism.unwrap_or(DEFAULT_PARALLELISM),
        |sum, step| sum.saturating_add(step.parallelism.unwrap_or(DEFAULT_PARALLELISM)),
    );
    crate::runtime::pool::slots_for(def.steps.len(), fan_outs.count(), parallelism)
}

/// The executor [`warm_runtime`] returns.
pub struct Warming {
    thread: std::sync::Mutex<Option<WarmUpThread>>,
    ready: std::sync::OnceLock<Result<WasmExecutor, String>>,
    /// Where the runtime keeps compiled code (known before it is made).
    cache_dir: PathBuf,
}

type WarmUpThread = std::io::Result<std::thread::JoinHandle<anyhow::Result<Arc<Runtime>>>>;

impl Warming {
    /// The executor, once the warm-up thread has made it (waits for it).
    fn executor(&self) -> Result<&WasmExecutor, String> {
        self.ready
            .get_or_init(|| {
                let thread = self
                    .thread
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                let thread = match thread {
                    Some(Ok(thread)) => thread,
                    Some(Err(error)) => {
                        return Err(format!(
                            "cannot start a thread for the wasm runtime: {error}"
                        ))
                    }
                    None => return Err("the wasm runtime was not made".to_string()),
                };
                match thread.join() {
                    Ok(Ok(runtime)) => Ok(WasmExecutor(runtime)),
                    Ok(Err(error)) => Err(format!("{error:#}")),
                    Err(_) => Err("making the wasm runtime failed (its thread panicked)".into()),
                }
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl StepExecutor for Warming {
    fn prepare(&self, components: &[String]) -> Result<(), String> {
        self.executor()?.prepare(components)
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        // Known without waiting, and so also when the runtime failed: no
        // step is ever granted the cache.
        Some(self.cache_dir.clone())
    }

    fn execute(
        &self,
        invocation: crate::step::executor::StepInvocation,
        observer: Arc<dyn crate::step::executor::StepObserver>,
    ) -> crate::step::executor::BoxFuture<
        Result<serde_json::Value, crate::step::executor::StepFailure>,
    > {
        match self.executor() {
            Ok(executor) => executor.execute(invocation, observer),
            Err(message) => {
                Box::pin(async move { Err(crate::step::executor::StepFailure::permanent(message)) })
            }
        }
    }
}

/// A driver recording into `store`, executing steps with `runtime`,
/// serving agent steps with [`crate::agent::Sessions`], checking grants
/// against `ceiling` and reporting to `listener`.
pub fn driver(
    store: &Arc<dyn EngineStore>,
    runtime: Arc<Runtime>,
    ceiling: Option<Ceiling>,
    listener: Arc<dyn RunListener>,
) -> Driver {
    driver_with(store, Arc::new(WasmExecutor(runtime)), ceiling, listener)
}

/// [`driver`] executing steps with `executor` (such as [`warm_runtime`]'s).
pub fn driver_with(
    store: &Arc<dyn EngineStore>,
    executor: Arc<dyn StepExecutor>,
    ceiling: Option<Ceiling>,
    listener: Arc<dyn RunListener>,
) -> Driver {
    Driver::new(store.clone(), executor, listener)
        .with_ceiling(ceiling)
        .with_agents(Arc::new(crate::agent::Sessions))
}

/// A multi-threaded tokio runtime for work that executes steps.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A [`tokio_runtime`] being made on a thread of its own (~0.3 ms: its
/// worker threads, drivers and the CPU quota read from the cgroup), so that
/// this overlaps what the caller does meanwhile (`wfhost run` opens the
/// store and records the run). [`TokioStart::wait`] returns it.
pub struct TokioStart(Option<std::thread::JoinHandle<anyhow::Result<tokio::runtime::Runtime>>>);

/// Start making a [`tokio_runtime`] (see [`TokioStart`]).
pub fn start_tokio_runtime() -> TokioStart {
    let thread = std::thread::Builder::new()
        .name("wfhost-start".into())
        .spawn(tokio_runtime);
    // No thread: the runtime is made by `wait`, as without one.
    TokioStart(thread.ok())
}

impl TokioStart {
    /// The runtime, once made (waits for it).
    pub fn wait(self) -> anyhow::Result<tokio::runtime::Runtime> {
        match self.0.map(std::thread::JoinHandle::join) {
            Some(Ok(made)) => made,
            Some(Err(_)) => anyhow::bail!("making the async runtime failed (its thread panicked)"),
            None => tokio_runtime(),
        }
    }
}
