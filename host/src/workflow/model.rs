//! The workflow document: serde types shared by the YAML and JSON front ends.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`). The seed
//! systems' spellings (`key`, `dependencies`, `argsSchema`, `retryPolicy`,
//! `timeoutMs`, string phases, `on_failure: continue`, …) are accepted here
//! and turned into the wfhost form by [`super::seeds::normalize`] before
//! validation, so nothing after it sees them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::step::units::{duration_text, string_or_number};

/// A whole workflow file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// An identifier of the workflow (CodeCafe's `id`); the name when
    /// `name` is missing.
    #[serde(default)]
    pub id: Option<String>,
    /// Human name of the workflow (defaults to `id`).
    #[serde(default)]
    pub name: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<String>,
    /// Labels for people and `wfhost workflows`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form version of the definition (a string or number in the file).
    #[serde(default, deserialize_with = "string_or_number")]
    pub version: Option<String>,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// Phases group steps for display; a step names its phase by id. A
    /// phase may be written as its id alone (`phases: [build, test]`).
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// JSON Schema of the run's arguments (an object schema); agentcmd's
    /// `argsSchema` is the same thing.
    #[serde(default, alias = "argsSchema")]
    pub args: Option<Value>,
    /// Seeds' spelling of the run's parallelism (`parallel: 3`, or
    /// `false` for one step at a time).
    #[serde(default)]
    pub parallel: Option<ParallelHint>,
    /// Run-wide settings.
    #[serde(default)]
    pub config: RunConfig,
    /// Defaults applied to every step (see [`Grants::inherit`] for the
    /// merge rule).
    #[serde(default)]
    pub defaults: Defaults,
    /// Extra step types: name → path of a `.wasm` component (relative to the
    /// workflow file).
    #[serde(default)]
    pub plugins: BTreeMap<String, String>,
    /// AI agents that `type: agent` steps can use.
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// The steps; order in the file does not matter, `needs` does.
    pub steps: Vec<Step>,
}

/// An AI agent: a model, a system prompt, the tools it may use and the
/// policies that check every tool call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Identifier steps refer to with `agent:`.
    #[serde(alias = "key")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its role, for people (and the default system prompt).
    #[serde(default)]
    pub role: Option<String>,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Which model answers it: a `provider:` block, or a
    /// `provider/model` string as the seeds write it (`openai/gpt-4o`).
    #[serde(deserialize_with = "super::forms::model_spec")]
    pub model: ModelSpec,
    /// System prompt (a template).
    #[serde(default)]
    pub system: Option<String>,
    /// Tools it may use: `read_file`, `write_file`, `edit_file`, `list_dir`,
    /// `search`, `exec`, `http_get` (or the short names `read`, `write`,
    /// `edit`, `list`, `search`, `exec`, `http`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Policies every tool call must pass, in order.
    #[serde(default)]
    pub policy: Vec<PolicySpec>,
}

/// Where an agent's model lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Replies (and tool calls) read from a file: deterministic, offline.
    Scripted {
        /// YAML or JSON file of replies, relative to the workflow file.
        script: String,
    },
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai {
        /// e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// Model name.
        model: String,
        /// Host environment variable holding the API key (never passed
        /// into a sandbox).
        #[serde(default)]
        api_key_env: Option<String>,
        /// Request timeout, e.g. `60s` (default 120s).
        #[serde(default, deserialize_with = "duration_text")]
        timeout: Option<String>,
    },
    /// A `provider/model` string naming a provider wfhost has no endpoint
    /// for: accepted when loading, refused (naming it) when a step uses it.
    Named {
        /// The provider as written (`github-copilot`).
        name: String,
        /// The model as written.
        model: String,
    },
}

/// One policy of an agent's chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// The built-in `rules` policy: `allow`, `ask`, `deny` lists of
    /// `tool(specifier)` rules.
    #[serde(default)]
    pub rules: Option<Rules>,
    /// A policy component (`tool-policy` world): a `.wasm` path.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Configuration handed to a policy component.
    #[serde(default)]
    pub config: Option<Value>,
}

/// Rules in the style of coding agents: deny before ask before allow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Calls allowed without asking, e.g. `exec(cargo test *)`, `read(src/**)`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Calls that need a person's approval.
    #[serde(default)]
    pub ask: Vec<String>,
    /// Calls always refused.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Whether an agent step starts a new conversation or continues the
/// agent's conversation from an earlier step of the run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// A new conversation.
    #[default]
    Fresh,
    /// Continue the same agent's latest conversation in this run.
    Reuse,
}

/// Workflow-wide defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Grants every step starts from.
    #[serde(default)]
    pub grants: Grants,
    /// Default sandbox mode for started programs.
    #[serde(default)]
    pub sandbox: Option<SandboxMode>,
    /// Default retry policy.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Default working directory of the programs steps start (relative
    /// to the workflow file's directory).
    #[serde(default, alias = "working-directory")]
    pub working_directory: Option<String>,
}

pub use crate::step::grants::{Grants, SandboxMode};

/// A `retry:` block as written (per step, or under `defaults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = never retry).
    #[serde(default, alias = "maxAttempts")]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, e.g. `1s` (default 1s; a bare number
    /// is milliseconds).
    #[serde(
        default,
        alias = "initialInterval",
        alias = "initialDelayMs",
        alias = "retryDelayMs",
        deserialize_with = "duration_text"
    )]
    pub initial_interval: Option<String>,
    /// Each wait is the previous one times this (default 2.0).
    #[serde(
        default,
        alias = "backoffCoefficient",
        alias = "backoffMultiplier",
        alias = "retryBackoffMultiplier"
    )]
    pub backoff_coefficient: Option<f64>,
    /// Longest wait between attempts (default 100 × initial_interval).
    #[serde(
        default,
        alias = "maxInterval",
        alias = "maxDelayMs",
        deserialize_with = "duration_text"
    )]
    pub max_interval: Option<String>,
    /// Random spread of each wait, as a fraction: 0.1 means ±10% (default 0.1).
    #[serde(default)]
    pub jitter: Option<f64>,
    /// Which kinds of failure are retried (default: every failure).
    #[serde(default)]
    pub on: Option<Vec<RetryOn>>,
    /// Retry only failures whose error text contains one of these
    /// (case-insensitive), e.g. `ETIMEDOUT`, `exit code 75`, `rate limit`.
    #[serde(default, alias = "retryableErrors")]
    pub errors: Option<Vec<String>>,
    /// Seeds' spelling (`retryPolicy.maxRetries`): retries after the first
    /// attempt; read as `max_attempts` = this + 1.
    #[serde(default, rename = "maxRetries", skip_serializing)]
    pub max_retries: Option<u32>,
}

/// A kind of failure a policy may retry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The plugin said the failure is transient.
    Transient,
    /// The attempt ran out of time.
    Timeout,
    /// The plugin said the failure is permanent.
    Permanent,
}

/// A named group of steps.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Phase {
    /// Identifier steps refer to in `phase:`.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// What happens in this phase.
    pub description: Option<String>,
    /// Written as its id alone (`phases: [build, test]`), as agentcmd does.
    #[serde(skip)]
    pub written_as_string: bool,
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Phase, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Block {
            #[serde(alias = "key")]
            id: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            description: Option<String>,
        }
        super::forms::word_or_block(
            de,
            "a phase id or a block with `id`",
            |id: &str| {
                Ok(Phase {
                    id: id.to_string(),
                    name: None,
                    description: None,
                    written_as_string: true,
                })
            },
            |b: Block| Phase {
                id: b.id,
                name: b.name,
                description: b.description,
                written_as_string: false,
            },
        )
    }
}

/// Run-wide settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// How many steps may run at once (default: 4).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// Default per-step timeout, e.g. `30s`, `10m` (default: 10m; a bare
    /// number is milliseconds, as the seeds write it).
    #[serde(default, alias = "timeoutMs", deserialize_with = "duration_text")]
    pub timeout: Option<String>,
    /// Time for the whole run (measured by the driving process); when it
    /// passes, the run is cancelled (cleanup steps still run).
    #[serde(default, deserialize_with = "duration_text")]
    pub run_timeout: Option<String>,
    /// Default time a started program gets between SIGTERM and SIGKILL when
    /// its step times out or is cancelled, e.g. `5s` (default 2s, at most 1m).
    #[serde(default, deserialize_with = "duration_text")]
    pub kill_grace: Option<String>,
    /// Seeds' spelling (AutomatosX): retries of every step after its first
    /// attempt; read as `defaults.retry.max_attempts` = this + 1.
    #[serde(default, rename = "maxRetries", skip_serializing)]
    pub max_retries: Option<u32>,
    /// Seeds' spelling: a failing step does not fail the run; read as
    /// `continue_on_error` on every step.
    #[serde(default, rename = "continueOnError", skip_serializing)]
    pub continue_on_error: Option<bool>,
    /// Seeds' spelling: how often to checkpoint. Accepted and not needed:
    /// wfhost commits every transition before its next action.
    #[serde(
        default,
        rename = "checkpointInterval",
        deserialize_with = "duration_text",
        skip_serializing
    )]
    pub checkpoint_interval: Option<String>,
    /// Seeds' spelling of `parallelism`.
    #[serde(default, skip_serializing)]
    pub parallel: Option<ParallelHint>,
}

/// `parallel:` as the seeds write it: `true`/`false` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ParallelHint {
    /// `true`: may run alongside others (the default); `false`: alone.
    Flag(bool),
    /// How many at once.
    Count(usize),
}

/// One node of the DAG.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id: letters, digits, `_` and `-`.
    #[serde(alias = "key")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What the step does.
    #[serde(default)]
    pub description: Option<String>,
    /// The phase this step belongs to (an id from `phases`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Step type: `script`, `function`, or a name from `plugins`. Defaults to
    /// `script` when `run` is given.
    #[serde(default, rename = "type")]
    pub step_type: Option<String>,
    /// For `type: function`: a built-in component name or a `.wasm` path.
    #[serde(default)]
    pub component: Option<String>,
    /// For `type: function`: the exported function to call (`name` or
    /// `interface#name`) instead of the `step` world's `run`; `with:` gives
    /// its parameters by name, its result is the output.
    #[serde(default)]
    pub function: Option<String>,
    /// Steps that must complete before this one starts (`needs: a` is
    /// `needs: [a]`, as in GitHub Actions).
    #[serde(default, alias = "dependencies", deserialize_with = "one_or_many")]
    pub needs: Vec<String>,
    /// Plugin configuration; string values are templates.
    #[serde(default, rename = "with")]
    pub with: Option<Value>,
    /// Shorthand for a script step: the shell script to run (a template);
    /// agentcmd's `command` is the same thing.
    #[serde(default, alias = "command")]
    pub run: Option<String>,
    /// What the step may touch; nothing by default.
    #[serde(default)]
    pub grants: Grants,
    /// Files to keep after the step completes: globs (`*`, `?`, `**`)
    /// relative to the workflow file's directory, inside the step's
    /// read-write grants. Kept in the run folder with size, SHA-256 and
    /// media type (`wfhost artifacts`).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Per-attempt timeout, e.g. `30s`; overrides `config.timeout`. A bare
    /// number is milliseconds (`timeoutMs: 5000`, as the seeds write it).
    #[serde(default, alias = "timeoutMs", deserialize_with = "duration_text")]
    pub timeout: Option<String>,
    /// Confinement of started programs: `strict` (default) or `best-effort`.
    #[serde(default)]
    pub sandbox: Option<SandboxMode>,
    /// Time a started program gets between SIGTERM and SIGKILL when the
    /// step times out or is cancelled; overrides `config.kill_grace`.
    #[serde(default, deserialize_with = "duration_text")]
    pub kill_grace: Option<String>,
    /// Working directory of the programs this step starts, relative to the
    /// workflow file's directory (default: that directory). It changes
    /// where programs run, not what they may access (that is `grants`).
    #[serde(default, alias = "working-directory")]
    pub working_directory: Option<String>,
    /// How failed attempts are retried (fields missing here come from
    /// `defaults.retry`); AutomatosX's `retryPolicy` block is the same.
    #[serde(default, alias = "retryPolicy")]
    pub retry: Option<RetrySpec>,
    /// Seeds' spelling: retries after the first attempt (CodeCafe:
    /// `retries`).
    #[serde(default, rename = "maxRetries", alias = "retries", skip_serializing)]
    pub max_retries: Option<u32>,
    /// Seeds' spelling: wait before the first retry, in milliseconds.
    #[serde(
        default,
        rename = "retryDelayMs",
        alias = "retry_delay_ms",
        skip_serializing
    )]
    pub retry_delay_ms: Option<u64>,
    /// Seeds' spelling: backoff coefficient (CodeCafe: `retry_backoff`).
    #[serde(
        default,
        rename = "retryBackoffMultiplier",
        alias = "retry_backoff",
        skip_serializing
    )]
    pub retry_backoff_multiplier: Option<f64>,
    /// Safe to run again after a crash interrupted it (its effects are
    /// idempotent), so `resume` re-runs it without asking.
    #[serde(default)]
    pub idempotent: bool,
    /// A failure of this step does not fail the run: it is recorded as
    /// failed (its raw outcome), concluded as tolerated, its dependents run,
    /// and the run ends `completed_with_errors`.
    #[serde(default)]
    pub optional: bool,
    /// The seeds' / GitHub's spelling of `optional`.
    #[serde(default, alias = "continueOnError")]
    pub continue_on_error: bool,
    /// Run with no other step running: it starts when the running steps
    /// have finished, and nothing starts until it ends (AutomatosX's
    /// `parallel: false`).
    #[serde(default)]
    pub exclusive: bool,
    /// Labels a worker must have to drive a run with this step
    /// (`wfhost worker --labels gpu,linux`): a run goes only to workers
    /// that have every label any of its steps asks for. A run driven by
    /// `wfhost run` itself ignores them. GitHub's spelling `runs-on` works.
    #[serde(default, alias = "runs-on")]
    pub runs_on: Vec<String>,
    /// Seeds' spelling: `parallel: false` is `exclusive: true`; a number is
    /// the `parallelism` of a `for_each`.
    #[serde(default, skip_serializing)]
    pub parallel: Option<ParallelHint>,
    /// A condition (minijinja expression, strict): when false the step is
    /// skipped, and so are the steps that need it.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// A cleanup step: runs after every other step has finished, whether the
    /// run succeeded, failed or was cancelled.
    #[serde(default)]
    pub finally: bool,
    /// Time for all attempts together, retries and waits included.
    #[serde(default, deserialize_with = "duration_text")]
    pub total_timeout: Option<String>,
    /// What a failure (after retries) leads to; CodeCafe's words `stop`,
    /// `continue` and `retry` are accepted too.
    #[serde(default, deserialize_with = "super::forms::on_failure")]
    pub on_failure: Option<OnFailure>,
    /// Run the step once per item of a list (an expression over `args` and
    /// earlier outputs); `{{ item }}` and `{{ index }}` are the current one.
    #[serde(default)]
    pub for_each: Option<String>,
    /// Items of a `for_each` running at once (default 4).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// Stop a `for_each` at the first failed item (default true).
    #[serde(default)]
    pub fail_fast: Option<bool>,
    /// Repeat a stage: after this step completes, unless `until` holds, the
    /// listed earlier steps, this one and what depends on them run again.
    #[serde(default, rename = "loop")]
    pub stage_loop: Option<StageLoop>,
    /// For `type: agent`: the agent (an id from `agents`).
    #[serde(default)]
    pub agent: Option<String>,
    /// For `type: agent`: the task (a template); the run service's `input`.
    #[serde(default, alias = "input")]
    pub prompt: Option<String>,
    /// For `type: agent`: `fresh` (default) or `reuse`.
    #[serde(default)]
    pub session: Option<SessionMode>,
    /// Seeds' spelling: `fresh_session: false` is `session: reuse`.
    #[serde(default, skip_serializing)]
    pub fresh_session: Option<bool>,
    /// For `type: agent`: most model turns (default 20).
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// For `type: agent`: `text` (default) or `json` (the final message is
    /// parsed, and checked against `output_schema` when given).
    #[serde(default)]
    pub output: Option<String>,
    /// For `type: agent` with `output: json`: JSON Schema of the result.
    #[serde(default)]
    pub output_schema: Option<Value>,
}

/// `on_failure:` of a step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OnFailure {
    /// `fail` (default: the run fails), `skip` (the step counts as
    /// skipped, and so do its dependents) or `block` (the run parks as
    /// `blocked` until `wfhost resume`, which runs the step again).
    #[serde(default, alias = "escalation")]
    pub escalate: Option<Escalation>,
    /// The run service's `retry` / `retry_count`: retries after the first
    /// attempt (read as the step's `retry.max_attempts` = this + 1).
    #[serde(default, alias = "retry_count", skip_serializing)]
    pub retry: Option<u32>,
    /// The run service's wait before a retry, in milliseconds (read as
    /// `retry.initial_interval`).
    #[serde(default, skip_serializing)]
    pub retry_delay_ms: Option<u64>,
    /// The CodeCafe word this was written as (`stop`, `continue`,
    /// `retry`), when it was one.
    #[serde(skip)]
    pub word: Option<FailureWord>,
    /// Go back to this earlier step: it and everything after it run again.
    #[serde(default)]
    pub retry_step: Option<String>,
    /// How many times `retry_step` may go back (default 3).
    #[serde(default)]
    pub max_loops: Option<u32>,
}

/// CodeCafe's `on_failure` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureWord {
    /// `stop`: the run fails (`escalate: fail`).
    Stop,
    /// `continue`: the failure is tolerated (`continue_on_error: true`).
    Continue,
    /// `retry`: the step is retried (`retry.max_attempts`, default 3).
    Retry,
}

/// Where a failure escalates to.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// The run fails.
    #[default]
    Fail,
    /// The step counts as skipped.
    Skip,
    /// The run waits for an operator.
    Block,
}

/// `loop:` of a step: repeat a stage until a condition holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageLoop {
    /// Earlier steps that start the stage (with this step and what depends
    /// on them, they run again).
    #[serde(default)]
    pub steps: Vec<String>,
    /// Stop looping when this expression holds (it sees this step's output);
    /// CodeCafe's `stop_when`.
    #[serde(alias = "stop_when")]
    pub until: String,
    /// Most iterations (default 10); reaching it fails the step, unless
    /// `fallback` names where to go instead. CodeCafe's `max_iters`.
    #[serde(default, alias = "max_iters")]
    pub max_iterations: Option<u32>,
    /// When the iterations run out: instead of failing, this step
    /// completes (its output gets `"loop_exhausted": true`), the steps that
    /// need it are skipped, and the named step runs (a later step that
    /// does not need this one, or an earlier one, which then runs again
    /// with what follows it). CodeCafe's `fallback_next_stage`.
    #[serde(default, alias = "fallback_next_stage")]
    pub fallback: Option<String>,
}

/// A list of strings, or one string for a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a step id or a list of step ids")
        }

        fn visit_str<E: serde::de::Error>(self, one: &str) -> Result<Vec<String>, E> {
            Ok(vec![one.to_string()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut many = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                many.push(one);
            }
            Ok(many)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}
