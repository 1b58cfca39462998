//! Agent steps on the host side: model providers, built-in tools, the
//! policy chain, approvals, audit and replay.
//!
//! A `type: agent` step runs the built-in `agent` component, which talks
//! to its model and tools through the `model` and `tools` imports; the host
//! serves them through an [`AgentSession`] attached to the step.
//!
//! The engine calls [`open_session`] for each attempt of an agent step and
//! hands the returned [`AgentHandle`] to the runtime with the invocation;
//! for `session: reuse` it passes [`history`] to the component. Modules:
//!
//! - [`provider`]: `openai` (HTTP) and `scripted` (a file of replies);
//! - [`tools`]: `read_file`, `write_file`, `edit_file`, `list_dir`,
//!   `search`, `exec`, `http_get`, confined by the step's grants;
//! - [`policy`]: the chain every call passes (tools list → grants →
//!   policy components);
//! - [`approval`]: calls held for a person;
//! - [`record`]: audit events, and the recordings replayed after a crash.

pub mod approval;
pub mod policy;
mod policy_bindings;
pub mod provider;
pub mod record;
#[cfg(test)]
mod session_tests;
pub mod tools;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::step::bindings::model::{Completion, Message, ModelError, ToolSpec};
use crate::step::bindings::tools::ToolError;
use crate::step::executor::BoxFuture;
use crate::store::{AgentStore, StepStatus};

use crate::step::stop::StopSignal;
use policy::{Chain, PolicyRequest, Verdict};
use provider::{ModelProvider, ScriptPosition};
use record::{kinds, Recorder, Replay};
use tools::ToolEnv;

pub use crate::step::session::{AgentHandle, AgentSession};

pub use crate::engine::agents::SessionContext;

/// This host's agent sessions: the [`AgentSessions`] port the engine's
/// driver opens agent steps' sessions through.
///
/// [`AgentSessions`]: crate::engine::agents::AgentSessions
pub struct Sessions;

impl crate::engine::agents::AgentSessions for Sessions {
    fn history(&self, store: &dyn AgentStore, run_id: &str, agent_id: &str) -> Vec<Value> {
        history(store, run_id, agent_id)
    }

    fn open(&self, ctx: SessionContext) -> Result<AgentHandle, String> {
        open_session(ctx)
    }
}

/// Open the session serving one attempt of an agent step: its model
/// provider (a scripted provider continues where the recordings say), its
/// tools and policy chain, and whatever an earlier unfinished attempt of
/// the step recorded (replayed instead of calling the model or running
/// tools again). Fails with a one-line message for a configuration
/// problem (unreadable script or policy plugin, bad timeout).
pub fn open_session(ctx: SessionContext) -> Result<AgentHandle, String> {
    let SessionContext {
        run_id,
        step_id,
        attempt,
        iteration,
        agent,
        grants,
        workdir,
        store,
    } = ctx;
    let replay = Replay::load(&*store, &run_id, &step_id);
    let position = script_position(&*store, &run_id, &step_id, &agent.id);
    let provider = provider::from_spec(&agent.model, &workdir, &step_id, position)
        .map_err(|e| format!("agent '{}': {e}", agent.id))?;
    let chain = Chain::for_agent(&agent, &workdir)?;
    let scratch_dir = store.run_files(&run_id).scratch_dir(&step_id);
    let env = Arc::new(ToolEnv::new(
        grants,
        &workdir,
        scratch_dir,
        (&run_id, &step_id, attempt),
    ));
    let recorder = Recorder {
        store,
        run_id,
        step_id,
        agent_id: agent.id.clone(),
        attempt,
        iteration,
    };
    if replay.pending_completions() > 0 {
        recorder.event(
            "agent_replay",
            json!({
                "recorded_replies": replay.pending_completions(),
                "note": "replaying the recorded replies and tool results of the unfinished earlier attempt",
            }),
        );
    }
    let specs = tools::specs(&agent.tools);
    for name in &agent.tools {
        if tools::lookup(name).is_none() {
            recorder.warn(&format!(
                "agent '{}' lists an unknown tool '{name}' (built-in tools: read, write, edit, list, search, exec, http)",
                agent.id
            ));
        }
    }
    Ok(AgentHandle(Arc::new(Session {
        inner: Arc::new(Inner {
            provider,
            chain,
            env,
            recorder,
            specs,
            state: Mutex::new(State {
                replay,
                turns: 0,
                last_len: 0,
            }),
        }),
    })))
}

/// Where a scripted provider continues: live replies (and errors) recorded
/// so far in the run for the agent, and for the step.
fn script_position(
    store: &dyn AgentStore,
    run_id: &str,
    step_id: &str,
    agent_id: &str,
) -> ScriptPosition {
    let records = store
        .agent_records(run_id, None, Some(agent_id))
        .unwrap_or_default();
    let live = |r: &&crate::store::AgentRecord| {
        r.kind == kinds::COMPLETION || r.kind == kinds::MODEL_ERROR
    };
    ScriptPosition {
        agent: records.iter().filter(live).count(),
        step: records
            .iter()
            .filter(live)
            .filter(|r| r.step_id == step_id)
            .count(),
    }
}

/// The latest recorded conversation of `agent_id` in the run, for
/// `session: reuse`: the `messages` of the output of the latest completed
/// step that used the agent, else the conversation rebuilt from the
/// recordings of the latest step that used it. Messages are
/// `{role, content, tool_calls: [{id, name, arguments}], tool_call_id}`.
pub fn history(store: &dyn AgentStore, run_id: &str, agent_id: &str) -> Vec<Value> {
    let records = store
        .agent_records(run_id, None, Some(agent_id))
        .unwrap_or_default();
    // Steps that used the agent, most recent first.
    let mut steps: Vec<&str> = Vec::new();
    for record in records.iter().rev() {
        if !steps.contains(&record.step_id.as_str()) {
            steps.push(&record.step_id);
        }
    }
    let step_rows = store.steps(run_id).unwrap_or_default();
    for step in &steps {
        let row = step_rows.iter().find(|s| s.id == *step);
        if let Some(Value::Array(messages)) = row
            .filter(|s| s.status == StepStatus::Completed)
            .and_then(|s| s.output.as_ref())
            .and_then(|o| o.get("messages"))
        {
            return messages.clone();
        }
    }
    steps
        .first()
        .map(|step| transcript(store, run_id, step))
        .unwrap_or_default()
}

/// The conversation of one agent step: the `messages` of its output when
/// it completed with them, else rebuilt from its recordings (the latest
/// unfinished or finished run of the step).
pub fn transcript(store: &dyn AgentStore, run_id: &str, step_id: &str) -> Vec<Value> {
    let step = store
        .steps(run_id)
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.id == step_id);
    if let Some(Value::Array(messages)) = step
        .as_ref()
        .filter(|s| s.status == StepStatus::Completed)
        .and_then(|s| s.output.as_ref())
        .and_then(|o| o.get("messages"))
    {
        return messages.clone();
    }
    let records = store
        .agent_records(run_id, Some(step_id), None)
        .unwrap_or_default();
    // Only the latest run of the step: the attempts after its last
    // completion, or else those that led to that completion.
    let completed = store.last_completed_attempt(run_id, step_id).unwrap_or(0);
    let unfinished: Vec<_> = records
        .iter()
        .filter(|r| r.attempt > completed)
        .cloned()
        .collect();
    if !unfinished.is_empty() {
        return record::transcript_from_records(&unfinished);
    }
    let since = previous_completion(store, run_id, step_id, completed);
    let last: Vec<_> = records
        .into_iter()
        .filter(|r| r.attempt > since && r.attempt <= completed)
        .collect();
    record::transcript_from_records(&last)
}

fn previous_completion(store: &dyn AgentStore, run_id: &str, step_id: &str, completed: u32) -> u32 {
    store
        .events(run_id, Some(step_id))
        .unwrap_or_default()
        .iter()
        .filter(|e| e.kind == "step_completed")
        .filter_map(|e| e.data.get("attempt").and_then(Value::as_u64))
        .map(|a| a as u32)
        .filter(|a| *a < completed)
        .max()
        .unwrap_or(0)
}

struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Box<dyn ModelProvider>,
    chain: Chain,
    env: Arc<ToolEnv>,
    recorder: Recorder,
    specs: Vec<ToolSpec>,
    state: Mutex<State>,
}

struct State {
    replay: Replay,
    turns: u32,
    /// Messages already sent at the previous completion.
    last_len: usize,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn complete(
        &self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> Result<Completion, ModelError> {
        let hash = record::request_hash(&messages, &tools);
        let (turn, replayed, new_messages) = {
            let mut state = self.state();
            state.turns += 1;
            let from = state.last_len.min(messages.len());
            let new_messages: Vec<Value> = messages[from..]
                .iter()
                .map(record::message_to_json)
                .collect();
            state.last_len = messages.len();
            let replayed = match state.replay.next_completion(&hash) {
                record::NextReply::Recorded(found) => Some(found),
                record::NextReply::Live => None,
                record::NextReply::Diverged => {
                    self.recorder.event(
                        "replay_diverged",
                        json!({
                            "turn": state.turns,
                            "note": "the conversation differs from the recording: the model is called from here on",
                        }),
                    );
                    None
                }
            };
            (state.turns, replayed, new_messages)
        };
        if let Some(completion) = replayed {
            self.model_event(turn, &messages, &completion, true, 0);
            return Ok(completion);
        }
        let started = Instant::now();
        let result = self.provider.complete(messages.clone(), tools).await;
        let elapsed = started.elapsed().as_millis() as u64;
        match &result {
            Ok(completion) => {
                self.recorder.record(
                    kinds::COMPLETION,
                    &hash,
                    &json!({
                        "turn": turn,
                        "completion": record::completion_to_json(completion),
                        "new_messages": new_messages,
                    }),
                );
                self.model_event(turn, &messages, completion, false, elapsed);
            }
            Err(error) => {
                let data = record::model_error_to_json(error);
                self.recorder.record(
                    kinds::MODEL_ERROR,
                    &hash,
                    &json!({ "turn": turn, "error": data }),
                );
                self.recorder.event(
                    "model_error",
                    json!({
                        "turn": turn,
                        "provider": self.provider.describe(),
                        "kind": data["kind"],
                        "message": data["message"],
                        "duration_ms": elapsed,
                    }),
                );
            }
        }
        result
    }

    fn model_event(
        &self,
        turn: u32,
        messages: &[Message],
        completion: &Completion,
        replayed: bool,
        elapsed_ms: u64,
    ) {
        self.recorder.event(
            "model_call",
            json!({
                "turn": turn,
                "provider": self.provider.describe(),
                "replayed": replayed,
                "messages": messages.len(),
                "usage": {
                    "prompt_tokens": completion.usage.prompt_tokens,
                    "completion_tokens": completion.usage.completion_tokens,
                },
                "finish_reason": completion.finish_reason,
                "content": record::truncate(&completion.message.content, 2000),
                "tool_calls": completion.message.tool_calls.iter().map(|c| json!({
                    "id": c.id,
                    "name": c.name,
                    "arguments": record::truncate(&c.arguments, 2000),
                })).collect::<Vec<_>>(),
                "duration_ms": elapsed_ms,
            }),
        );
    }

    async fn invoke(
        self: Arc<Self>,
        call_id: String,
        name: String,
        arguments: String,
        stop: StopSignal,
    ) -> Result<String, ToolError> {
        // Canonical JSON text of the arguments (what is recorded, checked
        // and shown to people); arguments that are not JSON stay as given.
        let parsed = tools::canonical_arguments(&arguments);
        let (value, canonical) = match &parsed {
            Ok((value, text)) => (Some(value.clone()), text.clone()),
            Err(_) => (None, arguments.clone()),
        };
        let tool_name = tools::lookup(&name)
            .map(|t| t.name)
            .unwrap_or(&name)
            .to_string();
        self.recorder.event(
            "tool_call",
            json!({
                "call_id": call_id,
                "tool": tool_name,
                "arguments": value.as_ref().map(tools::audit_arguments).unwrap_or(Value::String(record::truncate(&arguments, 2000))),
            }),
        );

        // A call an earlier attempt already answered is not run again.
        let (recorded, interrupted) = {
            let state = self.state();
            (
                state.replay.tool_result(&call_id, &tool_name, &canonical),
                state
                    .replay
                    .started_without_result(&call_id, &tool_name, &canonical),
            )
        };
        if let Some(outcome) = recorded {
            self.result_event(&call_id, &tool_name, &outcome, true);
            return outcome;
        }
        let tool = tools::lookup(&tool_name);
        if interrupted && tool.is_some_and(|t| t.effectful) {
            let outcome = Err(ToolError::Failed(format!(
                "this {tool_name} call started before wfhost stopped and its result was not recorded, \
                 so it was not run again: check whether it took effect before repeating it"
            )));
            return self.finish(&call_id, &tool_name, &canonical, outcome);
        }

        let outcome = self
            .check_and_run(&call_id, &tool_name, &canonical, value, parsed.err(), stop)
            .await;
        self.finish(&call_id, &tool_name, &canonical, outcome)
    }

    async fn check_and_run(
        self: &Arc<Self>,
        call_id: &str,
        tool_name: &str,
        canonical: &str,
        value: Option<Value>,
        parse_error: Option<String>,
        stop: StopSignal,
    ) -> Result<String, ToolError> {
        // 1. The agent's tool list.
        let tool = match self.chain.check_listed(tool_name) {
            Ok(tool) => tool,
            Err(outcome) => return self.decided(call_id, tool_name, outcome),
        };
        let value = match (value, parse_error) {
            (Some(value), _) => value,
            (None, error) => {
                return Err(ToolError::Failed(format!(
                    "{tool_name}: {}",
                    error.unwrap_or_default()
                )))
            }
        };
        let call = tools::parse_call(tool, &value).map_err(ToolError::Failed)?;
        // Grants and policies check the path the call will really touch.
        let call = match self.env.resolve_call(call) {
            Ok(call) => call,
            Err(reason) => {
                let outcome = policy::Outcome::single(Verdict::Deny(reason), "grants");
                return self.decided(call_id, tool_name, outcome);
            }
        };
        // 2. The step's grants, 3. the policies (blocking: wasm).
        let request = PolicyRequest {
            run_id: self.recorder.run_id.clone(),
            step_id: self.recorder.step_id.clone(),
            agent: self.recorder.agent_id.clone(),
            tool: tool.name.to_string(),
            arguments: policy::policy_arguments(&value, &call, &self.env.workdir),
            grants: {
                let mut grants = self.env.grants.to_json();
                grants["workdir"] = json!(self.env.workdir);
                grants.to_string()
            },
        };
        let outcome = {
            let inner = self.clone();
            let call = call.clone();
            tokio::task::spawn_blocking(move || inner.chain.decide(&inner.env, &call, &request))
                .await
                .map_err(|e| ToolError::Failed(format!("the policy chain did not finish: {e}")))?
        };
        let verdict = outcome.verdict.clone();
        self.recorder.event(
            "tool_decision",
            with_call(outcome.to_json(), call_id, tool_name),
        );
        match verdict {
            Verdict::Deny(reason) => return Err(ToolError::Denied(reason)),
            Verdict::Ask(prompt) => {
                match approval::ask(&self.recorder, call_id, tool_name, canonical, &prompt).await {
                    Ok(approval::Answer::Approved { id, note }) => {
                        self.recorder.event(
                            "tool_decision",
                            json!({
                                "call_id": call_id,
                                "tool": tool_name,
                                "decision": "allow",
                                "decided_by": "person",
                                "approval": id,
                                "note": note,
                            }),
                        );
                    }
                    Ok(approval::Answer::Denied { id, reason }) => {
                        self.recorder.event(
                            "tool_decision",
                            json!({
                                "call_id": call_id,
                                "tool": tool_name,
                                "decision": "deny",
                                "decided_by": "person",
                                "approval": id,
                                "reason": reason,
                            }),
                        );
                        return Err(ToolError::Denied(format!("denied by a person: {reason}")));
                    }
                    Err(message) => return Err(ToolError::Denied(message)),
                }
            }
            Verdict::Allow => {}
        }
        if tool.effectful {
            // Without this record a crash could run the call twice: no
            // record, no effect.
            self.recorder
                .try_record(
                    kinds::TOOL_STARTED,
                    call_id,
                    &json!({ "tool": tool_name, "arguments": canonical }),
                )
                .map_err(|error| {
                    ToolError::Failed(format!(
                        "{tool_name} was not run: wfhost could not record that it started \
                         ({error}), so a crash could not tell whether it took effect"
                    ))
                })?;
        }
        tools::run(self.env.clone(), call, stop).await
    }

    /// Record a decision that ends the call.
    fn decided(
        &self,
        call_id: &str,
        tool_name: &str,
        outcome: policy::Outcome,
    ) -> Result<String, ToolError> {
        self.recorder.event(
            "tool_decision",
            with_call(outcome.to_json(), call_id, tool_name),
        );
        match outcome.verdict {
            Verdict::Deny(reason) => Err(ToolError::Denied(reason)),
            Verdict::Ask(prompt) => Err(ToolError::Denied(prompt)),
            Verdict::Allow => Err(ToolError::Failed("nothing to run".into())),
        }
    }

    /// Record the result for replay and audit it.
    fn finish(
        &self,
        call_id: &str,
        tool_name: &str,
        canonical: &str,
        outcome: Result<String, ToolError>,
    ) -> Result<String, ToolError> {
        self.recorder.record(
            kinds::TOOL_RESULT,
            call_id,
            &json!({
                "tool": tool_name,
                "arguments": canonical,
                "outcome": record::tool_outcome_to_json(&outcome),
            }),
        );
        self.result_event(call_id, tool_name, &outcome, false);
        outcome
    }

    fn result_event(
        &self,
        call_id: &str,
        tool_name: &str,
        outcome: &Result<String, ToolError>,
        replayed: bool,
    ) {
        let (status, text) = match outcome {
            Ok(text) => ("ok", text),
            Err(ToolError::Denied(reason)) => ("denied", reason),
            Err(ToolError::Failed(message)) => ("failed", message),
        };
        self.recorder.event(
            "tool_result",
            json!({
                "call_id": call_id,
                "tool": tool_name,
                "status": status,
                "replayed": replayed,
                "bytes": text.len(),
                "text": record::truncate(text, 2000),
            }),
        );
    }
}

fn with_call(mut data: Value, call_id: &str, tool: &str) -> Value {
    data["call_id"] = json!(call_id);
    data["tool"] = json!(tool);
    data
}

impl AgentSession for Session {
    fn complete(
        &self,
        messages: Vec<Message>,
        tools: Vec<ToolSpec>,
    ) -> BoxFuture<Result<Completion, ModelError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.complete(messages, tools).await })
    }

    fn available(&self) -> Vec<ToolSpec> {
        self.inner.specs.clone()
    }

    fn invoke_until(
        &self,
        call_id: String,
        name: String,
        arguments: String,
        stop: StopSignal,
    ) -> BoxFuture<Result<String, ToolError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.invoke(call_id, name, arguments, stop).await })
    }
}
