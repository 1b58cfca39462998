//! The wasmtime side: one engine, a compile cache, one store per step
//! attempt built from the step's grants, and the host capabilities.
//!
//! Each capability lives in its own file: [`host_api`] (log, progress),
//! [`process`] (start granted programs). WASI is linked too, shaped by the
//! grants' capability units ([`crate::step::grants`]): preopened
//! directories for `files`, variables for `env`, and sockets and name
//! lookups only as `network` allows (checked by [`network`]).
//!
//! Nothing a step hands back is unbounded: its output is checked against
//! its output budget ([`output_budget`]) as soon as it leaves the guest (before it is
//! parsed, stored or printed), its error message is cut at
//! [`MAX_STEP_ERROR`], and it holds at most [`MAX_STEP_HANDLES`] WASI
//! handles (open files, sockets, streams) at once.

mod agent_api;
pub mod builtin;
pub mod cache;
mod capacity;
pub mod engine;
pub mod function_call;
mod host_api;
pub mod host_files;
pub mod inspect;
mod network;
pub mod pool;
pub mod process;
mod sandbox;
pub mod stacks;
mod state;
mod suspend;

pub use crate::step::bindings;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use wasmtime::component::{HasSelf, InstancePre, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

/// A linker giving what steps get (WASI, `network`, the `wfhost:plugin`
/// host API) to components of `engine`.
fn step_linker(engine: &Engine) -> Result<Linker<StepState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    network::add_to_linker(&mut linker)?;
    Step::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// Programs steps start are forked by a small launcher process run from
/// this binary (`/proc/self/exe`), not by the host itself: the binary's
/// `main` calls this, after [`serve_launcher_if_asked`].
pub fn use_launcher() {
    sandbox::enable_launcher(PathBuf::from("/proc/self/exe"));
}

/// When this process was started as the sandbox launcher, serve the host
/// that started it and exit; otherwise return at once. Called first thing
/// in the binary's `main`.
pub fn serve_launcher_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(sandbox::LAUNCHER_ARG))
        && args.next().is_none()
    {
        sandbox::serve_launcher();
    }
}

use crate::step::executor::{
    BoxFuture, FailureKind, LogLevel, StepExecutor, StepFailure, StepInvocation, StepObserver,
};
use crate::step::grants::limits::StepLimits;
use crate::step::grants::network::NetworkPolicy;
use crate::step::grants::WasiSetup;
use crate::step::stop::{StopSignal, StopTrigger, STOP_MARGIN};
use bindings::types::{FileGrant, StepError, StepRequest};
use bindings::Step;
use cache::{ComponentCache, Prepared, Source};
use state::{StepContext, StepState};

/// Bytes of a guest's own stdout/stderr kept for its log.
const GUEST_STDIO_CAPACITY: usize = 1024 * 1024;
/// How long a plugin's `describe` may take.
const DESCRIBE_TIME: Duration = Duration::from_secs(10);
/// Longest error message a step may return; longer ones are cut with a
/// marker.
pub const MAX_STEP_ERROR: usize = 64 * 1024;
/// Most WASI handles (open files and directories, sockets, streams,
/// pollables) one step attempt may hold at once.
pub const MAX_STEP_HANDLES: usize = 1024;

/// The shared wasm runtime: the process's one engine ([`engine::shared`])
/// and compile cache for every step.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    /// The same imports for the quick builds of big components
    /// ([`engine::baseline`]), made on first use.
    quick_linker: std::sync::OnceLock<Result<Linker<StepState>, String>>,
    cache: ComponentCache,
    /// Components whose functions are called directly (`function:`),
    /// linked but not bound to the `step` world.
    functions: ComponentCache<InstancePre<StepState>>,
    /// Slots for step instances, for a run of many steps ([`pool`]).
    pool: Option<pool::StepPool>,
}

impl Runtime {
    /// A runtime whose compiled components are also cached in `cache_dir`.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Runtime>> {
        Self::with_pool(cache_dir, None)
    }

    /// A runtime like [`Runtime::new`]'s whose steps take their instances
    /// from a pool of `slots` when given ([`pool::slots_for`] says how
    /// many a run wants) and one can be made.
    pub fn with_pool(cache_dir: Option<PathBuf>, slots: Option<u32>) -> Result<Arc<Runtime>> {
        let engine = engine::shared().map_err(anyhow::Error::msg)?.clone();
        let pool = match slots {
            Some(slots) => pool::StepPool::new(slots)?,
            None => None,
        };
        Ok(Arc::new(Runtime {
            pool,
            functions: ComponentCache::new(&engine, cache_dir.clone()).with_quick_first(),
            cache: ComponentCache::new(&engine, cache_dir).with_quick_first(),
            linker: step_linker(&engine)?,
            quick_linker: std::sync::OnceLock::new(),
            engine,
        }))
    }

    /// The linker for components compiled by `engine` (the shared one, or
    /// the baseline one of a quick build).
    fn linker_for(&self, engine: &Engine) -> Result<&Linker<StepState>> {
        if Engine::same(engine, &self.engine) {
            return Ok(&self.linker);
        }
        self.quick_linker
            .get_or_init(|| {
                let baseline = engine::baseline()?;
                step_linker(baseline).map_err(|error| format!("{error:#}"))
            })
            .as_ref()
            .map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// Load a component by built-in name or `.wasm` path (cached: a
    /// component is read and hashed once per process).
    pub fn load(&self, component: &str) -> Result<Prepared> {
        if let Some(found) = self.cache.named(component) {
            return Ok(found);
        }
        let prepared = self
            .cache
            .get_or_load(
                &self.engine,
                |engine| self.linker_for(engine),
                Self::source(component),
                component,
            )
            .with_context(|| format!("cannot load component '{component}'"))?;
        self.cache.remember(component, &prepared);
        Ok(prepared)
    }

    /// Ask a component to describe itself.
    pub async fn describe(&self, component: &str) -> Result<bindings::types::PluginInfo> {
        let prepared = self.load(component)?;
        let mut store = Store::new(prepared.engine(), self.bare_state());
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_async_yield_and_update(1);
        let call = async {
            let step = prepared.instantiate_async(&mut store).await?;
            step.call_describe(&mut store).await
        };
        // The guest yields at every epoch tick, so a `describe` that never
        // returns is given up on here.
        match tokio::time::timeout(DESCRIBE_TIME, call).await {
            Ok(info) => Ok(info?),
            Err(_) => anyhow::bail!(
                "`describe` did not return within {} s",
                DESCRIBE_TIME.as_secs()
            ),
        }
    }

    /// Load a component whose exported functions are called directly
    /// (`function:`): any world, linked against what steps get.
    pub fn load_functions(&self, component: &str) -> Result<InstancePre<StepState>> {
        if let Some(found) = self.functions.named(component) {
            return Ok(found);
        }
        let prepared = self
            .functions
            .get_or_prepare(
                &self.engine,
                Self::source(component),
                component,
                |component| {
                    self.linker_for(component.engine())?
                        .instantiate_pre(component)
                        .map_err(anyhow::Error::from)
                        .context("the component's imports do not match what wfhost provides")
                },
            )
            .with_context(|| format!("cannot load component '{component}'"))?;
        self.functions.remember(component, &prepared);
        Ok(prepared)
    }

    /// Whether a step can call `function` of `component` with `with`
    /// (checked before the run: the component links, exports the function,
    /// and `with` gives its parameters; values holding templates are judged
    /// when rendered).
    pub fn check_function(
        &self,
        component: &str,
        function: &str,
        with: &Value,
    ) -> std::result::Result<(), String> {
        let pre = self
            .load_functions(component)
            .map_err(|error| format!("{error:#}"))?;
        function_call::check(pre.engine(), pre.component(), function, with)
    }

    /// Where the component named by built-in name or path is.
    fn source(component: &str) -> Source<'_> {
        match builtin::builtin(component) {
            Some(found) => Source::Bytes(found.wasm),
            None => Source::File(std::path::Path::new(component)),
        }
    }

    /// The bytes of a component named by built-in name or path.
    fn component_bytes(component: &str) -> Result<std::borrow::Cow<'static, [u8]>> {
        Ok(match builtin::builtin(component) {
            Some(found) => found.wasm.into(),
            None => cache::read_component_file(std::path::Path::new(component), component)?.into(),
        })
    }

    /// What the component named by built-in name or path is: its world,
    /// imports and exports (compiled into the cache on the way; a file that
    /// is no component is an error saying so).
    pub fn inspect(&self, component: &str) -> Result<inspect::Inspection> {
        let bytes = Self::component_bytes(component)?;
        if let Some(what) = inspect::not_a_component(&bytes) {
            anyhow::bail!("'{component}' {what}");
        }
        let compiled = self
            .cache
            .compiled(&self.engine, &bytes, component)
            .map_err(|error| {
                // wasmparser's messages may span lines; one line is promised.
                let text = format!("{error:#}")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                anyhow::anyhow!("'{component}' is not a usable WebAssembly component: {text}")
            })?;
        Ok(inspect::inspect(compiled.engine(), &compiled))
    }

    fn bare_state(&self) -> StepState {
        StepState {
            wasi: WasiCtxBuilder::new().build(),
            table: step_table(),
            limits: StepLimits::new(crate::step::grants::DEFAULT_MEMORY as usize),
            network: NetworkPolicy::new(&[], Arc::new(NullObserver)),
            progress: Default::default(),
            resumed: None,
            suspension: None,
            step: Arc::new(StepContext {
                invocation: StepInvocation {
                    run_id: String::new(),
                    step_id: String::new(),
                    component: String::new(),
                    function: None,
                    attempt: 0,
                    idempotency_key: String::new(),
                    config: Value::Null,
                    inputs: Value::Null,
                    args: Value::Null,
                    workdir: PathBuf::from("/"),
                    cwd: PathBuf::from("/"),
                    grants: Default::default(),
                    timeout: Duration::from_secs(5),
                    scratch_dir: std::env::temp_dir(),
                    agent: None,
                    cancel: Default::default(),
                    lease: Default::default(),
                    resume: None,
                },
                observer: Arc::new(NullObserver),
                deadline: tokio::time::Instant::now() + Duration::from_secs(5),
                agent: None,
                stop: StopTrigger::new(),
                programs: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Run one step attempt: one call of the component in a fresh store
    /// built from its grants, and, each time a call ends in `host.suspend`,
    /// a wait with no instance held and another call.
    ///
    /// Each call takes a slot for its instance (see `capacity`): too many
    /// at once would exhaust the process's memory mappings. The attempt's
    /// timeout starts when its first call gets one and counts the waits.
    pub async fn run_step(
        &self,
        mut invocation: StepInvocation,
        observer: Arc<dyn StepObserver>,
    ) -> Result<Value, StepFailure> {
        // An attempt going on with a wait an earlier process left takes its
        // first slot after the wait.
        let mut pending = invocation.resume.take();
        let mut slot = match pending {
            None => Some(instance_slot().await?),
            Some(_) => None,
        };
        let callee = match &invocation.function {
            None => self.load(&invocation.component).map(Callee::Step),
            Some(_) => self
                .load_functions(&invocation.component)
                .map(Callee::Functions),
        }
        .map_err(|error| StepFailure::permanent(format!("{error:#}")))?;
        let call = CallPlan {
            request: step_request(&invocation),
            function: invocation.function.clone(),
            parameters: invocation.config.clone(),
            timeout: invocation.timeout,
            deadline: tokio::time::Instant::now() + invocation.timeout,
        };
        let mut cancel = invocation.cancel.clone();
        let lease = invocation.lease.clone();
        let attempt = invocation.attempt;
        let context = Arc::new(StepContext {
            deadline: call.deadline,
            agent: invocation.agent.as_ref().map(|handle| handle.0.clone()),
            invocation,
            observer,
            stop: StopTrigger::new(),
            programs: tokio::sync::watch::Sender::new(0),
        });
        let mut resumed = None;
        // One budget of progress reports for the whole attempt, however
        // many calls it takes.
        let mut progress = host_api::ProgressBudget::default();
        loop {
            // The wait before this call: one an earlier process left, or
            // the last call's suspension.
            if let Some(wait) = pending.take() {
                suspend::wait_as_recorded(
                    &context.observer,
                    attempt,
                    &wait,
                    call.deadline,
                    &mut cancel,
                )
                .await
                .map_err(|stopped| stopped.failure(call.timeout))?;
                resumed = Some(wait.state);
            }
            let slot = match slot.take() {
                Some(slot) => slot,
                None => instance_slot().await?,
            };
            if !lease.holds() {
                let outcome = match resumed {
                    None => "the step was not started",
                    Some(_) => "the step was not resumed",
                };
                return Err(StepFailure::permanent(crate::step::executor::lease_lost(
                    outcome,
                )));
            }
            let called = self
                .call_once(
                    &callee,
                    &context,
                    &call,
                    resumed.take(),
                    &mut progress,
                    &mut cancel,
                )
                .await;
            drop(slot);
            match called? {
                Called::Done(output) => return Ok(output),
                Called::Suspended(suspension) => pending = Some(suspension.into_resume()),
            }
        }
    }

    /// One call of a step attempt's component, in a fresh store.
    async fn call_once(
        &self,
        callee: &Callee,
        context: &Arc<StepContext>,
        call: &CallPlan,
        resumed: Option<String>,
        progress: &mut host_api::ProgressBudget,
        cancel: &mut StopSignal,
    ) -> Result<Called, StepFailure> {
        let invocation = &context.invocation;
        let observer = context.observer.clone();
        let stdout = MemoryOutputPipe::new(GUEST_STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(GUEST_STDIO_CAPACITY);
        let wasi = build_wasi(invocation, observer.clone(), stdout.clone(), stderr.clone()).await?;
        let limits = StepLimits::of(&invocation.grants);
        let memory_limit = limits.memory_bytes;
        let max_output = output_budget(invocation.grants.max_output);
        let network = NetworkPolicy::new(&invocation.grants.network, observer.clone());
        // Bound before the store so that the slot is given back only once
        // the store (and the instance in the slot) is gone.
        let (callee, _slot) = match callee {
            Callee::Step(prepared) => match self.pool.as_ref().and_then(|p| p.slot(prepared)) {
                Some((twin, permit)) => (Callee::Step(twin), Some(permit)),
                None => (Callee::Step(prepared.clone()), None),
            },
            Callee::Functions(pre) => (Callee::Functions(pre.clone()), None),
        };
        let engine = match &callee {
            Callee::Step(prepared) => prepared.engine(),
            Callee::Functions(pre) => pre.engine(),
        };
        let mut store = Store::new(
            engine,
            StepState {
                wasi,
                table: step_table(),
                limits,
                network,
                progress: std::mem::take(progress),
                step: context.clone(),
                resumed,
                suspension: None,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_async_yield_and_update(1);

        let run = async {
            match &callee {
                Callee::Step(prepared) => {
                    let step = prepared.instantiate_async(&mut store).await?;
                    step.call_run(&mut store, &call.request).await
                }
                Callee::Functions(pre) => {
                    let function = call.function.as_deref().unwrap_or_default();
                    function_call::call(pre, &mut store, function, &call.parameters).await
                }
            }
        };
        let outcome = until_stopped(run, call.deadline, cancel, context).await;
        *progress = std::mem::take(&mut store.data_mut().progress);
        forward_guest_output(&*observer, &stdout, LogLevel::Info);
        forward_guest_output(&*observer, &stderr, LogLevel::Warn);

        match outcome {
            Err(stopped) => Err(stopped.failure(call.timeout)),
            Ok(Err(_)) if store.data().suspension.is_some() => Ok(Called::Suspended(
                store.data_mut().suspension.take().expect("checked"),
            )),
            Ok(Err(trap)) if store.data().limits.memory_exceeded => {
                Err(StepFailure::permanent(bounded_error(format!(
                    "ran out of memory: the limit is {} MiB for all the step's memories and tables together (grants: {{ memory: ... }} raises it; {})",
                    memory_limit / (1024 * 1024),
                    trap.root_cause()
                ))))
            }
            Ok(Err(trap)) if handles_exhausted(&trap) => Err(StepFailure::permanent(format!(
                "used up its budget of {MAX_STEP_HANDLES} open WASI handles (files, sockets, streams) per step: close what it no longer uses"
            ))),
            Ok(Err(trap)) => Err(StepFailure::permanent(bounded_error(format!(
                "plugin crashed: {}",
                trap.root_cause()
            )))),
            Ok(Ok(Err(StepError::Transient(message)))) => {
                Err(StepFailure::transient(bounded_error(message)))
            }
            Ok(Ok(Err(StepError::Permanent(message)))) => {
                Err(StepFailure::permanent(bounded_error(message)))
            }
            Ok(Ok(Ok(json))) => parse_output(json, max_output).map(Called::Done),
        }
    }
}

/// What every call of one step attempt shares.
struct CallPlan {
    /// The `step` world's request.
    request: StepRequest,
    /// The function called instead of `run`, and its parameters.
    function: Option<String>,
    parameters: Value,
    /// The attempt's timeout, and when it passes.
    timeout: Duration,
    deadline: tokio::time::Instant,
}

/// How one call of a step ended, when it did not fail.
enum Called {
    /// With the step's output.
    Done(Value),
    /// In `host.suspend`: call again after the wait.
    Suspended(suspend::Suspension),
}

/// A slot for one live instance (see `capacity`).
async fn instance_slot() -> Result<tokio::sync::SemaphorePermit<'static>, StepFailure> {
    capacity::instance_slots()
        .acquire()
        .await
        .map_err(|_| StepFailure::permanent("the step executor is shutting down"))
}

/// What a step attempt calls: the `step` world's `run`, or one exported
/// function.
enum Callee {
    Step(Prepared),
    Functions(InstancePre<StepState>),
}

/// Whether the component imports the `process` interface (may start
/// programs).
fn starts_programs(prepared: &Prepared, engine: &Engine) -> bool {
    prepared
        .instance_pre()
        .component()
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wfhost:plugin/process@"))
}

/// Get ready for the programs a run's steps will start: start the sandbox
/// launcher and find out what the kernel offers (remembered in
/// `cache_dir`), each on a thread of its own, so both are ready by the time
/// the first program is and the caller does not wait. Done by
/// [`WasmExecutor::prepare`] for every component that can start programs;
/// a caller that knows earlier (a workflow with script steps) may call it
/// before any component is loaded.
pub fn prepare_for_programs(cache_dir: Option<&Path>) {
    sandbox::detect_support_in_background(cache_dir);
    sandbox::prestart_launcher();
}

/// The engine's view of the runtime: a [`StepExecutor`] running steps as
/// wasm components.
#[derive(Clone)]
pub struct WasmExecutor(pub Arc<Runtime>);

impl StepExecutor for WasmExecutor {
    fn prepare(&self, components: &[String]) -> Result<(), String> {
        for component in components {
            let prepared = match self.0.load(component) {
                Ok(prepared) => prepared,
                // A component called through `function:` needs no `step`
                // world; each attempt links it as it is.
                Err(error) => match self.0.load_functions(component) {
                    Ok(_) => continue,
                    Err(_) => return Err(format!("{error:#}")),
                },
            };
            if let Some(pool) = &self.0.pool {
                pool.twin(&prepared);
            }
            if starts_programs(&prepared, &self.0.engine) {
                prepare_for_programs(self.0.cache.disk_dir());
            }
        }
        Ok(())
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        self.0.cache.disk_dir().map(PathBuf::from)
    }

    fn execute(
        &self,
        invocation: StepInvocation,
        observer: Arc<dyn StepObserver>,
    ) -> BoxFuture<Result<Value, StepFailure>> {
        let runtime = self.0.clone();
        Box::pin(async move { runtime.run_step(invocation, observer).await })
    }
}

/// Build the WASI context for a step: shaped by its grants (preopens for
/// `files`, variables for `env`, sockets for `network`: see
/// [`crate::step::grants`]), with captured stdio.
async fn build_wasi(
    invocation: &StepInvocation,
    observer: Arc<dyn StepObserver>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
) -> Result<wasmtime_wasi::WasiCtx, StepFailure> {
    let mut builder = WasiCtxBuilder::new();
    let mut setup = WasiSetup {
        builder: &mut builder,
        observer,
    };
    crate::step::grants::configure_wasi(&invocation.grants, &mut setup)
        .await
        .map_err(StepFailure::permanent)?;
    builder.stdout(stdout).stderr(stderr);
    Ok(builder.build())
}

/// A fresh resource table holding at most [`MAX_STEP_HANDLES`] handles.
fn step_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_STEP_HANDLES);
    table
}

/// Whether a trap came from the step's resource table being full.
fn handles_exhausted(trap: &wasmtime::Error) -> bool {
    trap.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    })
}

/// A step error message cut at [`MAX_STEP_ERROR`] bytes, with a marker.
fn bounded_error(mut message: String) -> String {
    if message.len() <= MAX_STEP_ERROR {
        return message;
    }
    let total = message.len();
    let mut end = MAX_STEP_ERROR;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!(
        " [wfhost: error message of {total} bytes cut at {} KiB]",
        MAX_STEP_ERROR / 1024
    ));
    message
}

/// How many times `max_output` a step's output (JSON) may be: room for a
/// script's stdout, stderr and output file, each up to `max_output`, and
/// their JSON encoding.
pub const OUTPUT_BUDGET_FACTOR: u64 = 4;

/// The most bytes of output (JSON) a step with this `max_output` may
/// return.
pub fn output_budget(max_output: u64) -> usize {
    usize::try_from(max_output.saturating_mul(OUTPUT_BUDGET_FACTOR)).unwrap_or(usize::MAX)
}

/// The step's output, refused past its output budget before it is parsed.
fn parse_output(json: String, max_output: usize) -> Result<Value, StepFailure> {
    if json.len() > max_output {
        return Err(StepFailure::permanent(format!(
            "returned an output of {} bytes, over its output budget of {} ({OUTPUT_BUDGET_FACTOR} × max_output; grants: {{ max_output: ... }} raises it)",
            json.len(),
            human_size(max_output)
        )));
    }
    serde_json::from_str(&json).map_err(|error| {
        // The first bytes, escaped: they often say what went wrong (a
        // debug print, a bare string) and cannot garble a terminal.
        let start: String = json.chars().take(OUTPUT_EXCERPT_CHARS).collect();
        let more = if json.chars().count() > OUTPUT_EXCERPT_CHARS {
            "…"
        } else {
            ""
        };
        StepFailure::permanent(format!(
            "plugin returned invalid JSON output ({error}); it starts {start:?}{more}"
        ))
    })
}

/// How much of an invalid output its error quotes.
const OUTPUT_EXCERPT_CHARS: usize = 80;

/// `16 MiB`, `100 KiB`, `100 B` for messages.
fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

fn step_request(invocation: &StepInvocation) -> StepRequest {
    StepRequest {
        run_id: invocation.run_id.clone(),
        step_id: invocation.step_id.clone(),
        attempt: invocation.attempt,
        idempotency_key: invocation.idempotency_key.clone(),
        config: invocation.config.to_string(),
        inputs: invocation.inputs.to_string(),
        args: invocation.args.to_string(),
        workdir: invocation.workdir.to_string_lossy().into_owned(),
        file_grants: invocation
            .grants
            .files
            .iter()
            .map(|(path, writable)| FileGrant {
                path: path.to_string_lossy().into_owned(),
                writable: *writable,
            })
            .collect(),
    }
}

/// Why a step was stopped before it finished.
enum Stopped {
    TimedOut,
    Cancelled,
}

impl Stopped {
    /// The failure of an attempt stopped this way (`timeout`: its limit).
    fn failure(self, timeout: Duration) -> StepFailure {
        match self {
            Stopped::TimedOut => StepFailure {
                kind: FailureKind::Timeout,
                message: format!("timed out after {} and was stopped", humanize(timeout)),
            },
            Stopped::Cancelled => {
                StepFailure::permanent("cancelled while running; its programs were stopped")
            }
        }
    }
}

/// Drive a step's call until it finishes, its deadline passes or the run is
/// cancelled. When stopped, the step's running programs are asked to end
/// (SIGTERM, `kill_grace`, SIGKILL, in `process/`): the call keeps being
/// polled until none is left, or the grace and a margin have passed; then
/// it is dropped (which kills whatever is still there).
async fn until_stopped<F: std::future::Future>(
    call: F,
    deadline: tokio::time::Instant,
    cancel: &mut StopSignal,
    step: &StepContext,
) -> Result<F::Output, Stopped> {
    tokio::pin!(call);
    let stopped = tokio::select! {
        output = &mut call => return Ok(output),
        _ = tokio::time::sleep_until(deadline) => Stopped::TimedOut,
        _ = cancel.wait() => Stopped::Cancelled,
    };
    step.stop.fire();
    let mut programs = step.programs.subscribe();
    let budget = step.invocation.grants.kill_grace + STOP_MARGIN;
    let _ = tokio::time::timeout(budget, async {
        tokio::select! {
            _ = &mut call => {}
            _ = programs.wait_for(|running| *running == 0) => {}
        }
    })
    .await;
    Err(stopped)
}

fn forward_guest_output(observer: &dyn StepObserver, pipe: &MemoryOutputPipe, level: LogLevel) {
    let bytes = pipe.contents();
    for line in String::from_utf8_lossy(&bytes).lines() {
        observer.log(level, line);
    }
}

pub use crate::step::units::humanize;

struct NullObserver;

impl StepObserver for NullObserver {
    fn log(&self, _: LogLevel, _: &str) {}
    fn progress(&self, _: &str, _: Option<f32>) {}
}

#[cfg(test)]
mod contract_version_tests {
    use super::*;
    use wasmtime::component::Component;

    /// A component importing the host interface at `version`, with one of
    /// its functions.
    fn importing(version: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                 (import "wfhost:plugin/host@{version}" (instance
                   (export "progress" (func (param "message" string) (param "fraction" (option f32)))))))"#
        ))
        .unwrap()
    }

    /// Plugins built against an older 0.1.x contract keep linking (the
    /// interfaces only grew); another minor version is refused.
    #[test]
    fn plugins_of_an_older_patch_version_link_and_another_minor_does_not() {
        let runtime = Runtime::new(None).unwrap();
        for version in ["0.1.0", "0.1.1", "0.1.2"] {
            let component = Component::new(&runtime.engine, importing(version)).unwrap();
            assert!(
                runtime.linker.instantiate_pre(&component).is_ok(),
                "{version}"
            );
        }
        let component = Component::new(&runtime.engine, importing("0.2.0")).unwrap();
        let error = runtime
            .linker
            .instantiate_pre(&component)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("wfhost:plugin/host@0.2.0"), "{error}");
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn invalid_output_quotes_its_first_bytes_and_any_json_value_is_accepted() {
        let error = parse_output("debug: 1\n{\"a\": 1}".into(), 1000).unwrap_err();
        assert!(
            error
                .message
                .contains("it starts \"debug: 1\\n{\\\"a\\\": 1}\""),
            "{}",
            error.message
        );
        let long = "x".repeat(500);
        let error = parse_output(long, 1000).unwrap_err();
        assert!(error.message.ends_with("…"), "{}", error.message);
        assert_eq!(parse_output("\"text\"".into(), 100).unwrap(), "text");
        assert_eq!(
            parse_output("[1]".into(), 100).unwrap(),
            serde_json::json!([1])
        );
    }
}
