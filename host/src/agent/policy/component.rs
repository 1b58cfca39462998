//! Policy components (`tool-policy` world): the built-in `rules-policy`
//! and plugins, run in the process's one wasmtime engine
//! ([`crate::runtime::engine::shared`]) with an empty WASI context, a memory
//! limit and a time budget per decision (see [`super`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Policy, PolicyRequest, Verdict};
use crate::agent::policy_bindings::{Decision, ToolCallRequest, ToolPolicyPre};
use crate::runtime::cache::{self, shared_disk_dir, ComponentCache};
use crate::runtime::engine;

/// Time a policy may compute per decision (checked at each epoch tick of
/// the shared engine); past it the decision traps and the call is denied.
const POLICY_TIME: Duration = Duration::from_secs(2);
/// Linear memory a policy may use.
const POLICY_MEMORY: usize = 64 * 1024 * 1024;

/// A `tool-policy` component.
pub struct ComponentPolicy {
    label: String,
    source: Source,
    config: String,
    /// Prepared on the first decision; later ones reuse it without hashing
    /// the component's bytes again.
    prepared: OnceLock<PolicyPre>,
}

enum Source {
    Builtin(&'static str),
    Bytes(Arc<[u8]>),
}

impl ComponentPolicy {
    /// The embedded component `name` (e.g. `rules-policy`).
    pub fn builtin(name: &'static str, label: &str, config: String) -> ComponentPolicy {
        ComponentPolicy {
            label: label.to_string(),
            source: Source::Builtin(name),
            config,
            prepared: OnceLock::new(),
        }
    }

    /// A component from its bytes (binary or, for tests, WAT text).
    pub fn from_bytes(label: String, bytes: Arc<[u8]>, config: String) -> ComponentPolicy {
        ComponentPolicy {
            label,
            source: Source::Bytes(bytes),
            config,
            prepared: OnceLock::new(),
        }
    }

    fn prepared(&self) -> Result<PolicyPre, String> {
        if let Some(found) = self.prepared.get() {
            return Ok(found.clone());
        }
        let runtime = policy_runtime()?;
        let prepared = match &self.source {
            Source::Builtin(name) => {
                let builtin = crate::step::builtin::policy(name).ok_or_else(|| {
                    format!("the built-in component '{name}' is not part of this wfhost build")
                })?;
                runtime.load(builtin.wasm)
            }
            Source::Bytes(bytes) => runtime.load(bytes),
        }?;
        Ok(self.prepared.get_or_init(|| prepared).clone())
    }
}

/// Whether `bytes` make a usable `tool-policy` component: compiled (and
/// cached) and linked the way a decision would, so a step component given
/// as a policy is refused before any run instead of denying every call.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    policy_runtime()?.load(bytes).map(|_| ())
}

impl Policy for ComponentPolicy {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn decide(&self, request: &PolicyRequest) -> Result<Verdict, String> {
        let pre = self.prepared()?;
        let runtime = policy_runtime()?;
        let call = ToolCallRequest {
            run_id: request.run_id.clone(),
            step_id: request.step_id.clone(),
            agent: request.agent.clone(),
            tool: request.tool.clone(),
            arguments: request.arguments.clone(),
            grants: request.grants.clone(),
            config: self.config.clone(),
        };
        // A small runtime of its own: decisions are asked from blocking
        // threads, and the deadline must hold even while the guest waits.
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the policy: {e}"))?;
        let decision = executor.block_on(async {
            tokio::time::timeout(POLICY_TIME, runtime.call(&pre, &call))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the policy component did not decide within {}s",
                        POLICY_TIME.as_secs()
                    ))
                })
        })?;
        Ok(match decision {
            Decision::Allow => Verdict::Allow,
            Decision::Deny(reason) => Verdict::Deny(reason),
            Decision::Ask(prompt) => Verdict::Ask(prompt),
        })
    }
}

/// Store data of a policy instance: an empty WASI context.
pub struct PolicyState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A policy component, pre-instantiated for the `tool-policy` world.
type PolicyPre = Arc<ToolPolicyPre<PolicyState>>;

/// The engine policies run in, and their compiled components (in the
/// host's one component cache, [`ComponentCache`]).
struct PolicyRuntime {
    engine: Engine,
    linker: Linker<PolicyState>,
    cache: ComponentCache<PolicyPre>,
}

fn policy_runtime() -> Result<&'static PolicyRuntime, String> {
    static RUNTIME: OnceLock<Result<PolicyRuntime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let engine = engine::shared()?.clone();
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)
                .map_err(|e| format!("policy engine: {e}"))?;
            Ok(PolicyRuntime {
                cache: ComponentCache::new(&engine, shared_disk_dir()),
                engine,
                linker,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl PolicyRuntime {
    /// One decision, in a fresh store: computing past [`POLICY_TIME`]
    /// traps at the next epoch tick.
    async fn call(&self, pre: &PolicyPre, call: &ToolCallRequest) -> Result<Decision, String> {
        let mut store = Store::new(
            &self.engine,
            PolicyState {
                wasi: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
                limits: StoreLimitsBuilder::new()
                    .memory_size(POLICY_MEMORY)
                    .instances(100)
                    .build(),
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(engine::ticks(POLICY_TIME));
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("cannot start the policy component: {e:#}"))?;
        instance
            .call_decide(&mut store, call)
            .await
            .map_err(|e| format!("the policy component failed: {}", e.root_cause()))
    }

    fn load(&self, bytes: &[u8]) -> Result<PolicyPre, String> {
        self.cache
            .get_or_prepare(&self.engine, cache::Source::Bytes(bytes), "a policy component", |component| {
                let pre = self.linker.instantiate_pre(component).map_err(|e| {
                    anyhow::anyhow!("the policy component imports what policies do not get: {e:#}")
                })?;
                Ok(Arc::new(ToolPolicyPre::new(pre).map_err(|e| {
                    anyhow::anyhow!(
                        "the component does not implement the wfhost:plugin/tool-policy world: {e:#}"
                    )
                })?))
            })
            .map_err(|e| format!("{e:#}"))
    }
}
