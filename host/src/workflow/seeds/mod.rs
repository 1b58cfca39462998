//! The seed systems' spellings, read as wfhost's own.
//!
//! Users of the run systems wfhost replaces (the run service, AutomatosX,
//! CodeCafe, agentcmd) bring their files as they are. The parser accepts
//! their keys (see `model`); [`normalize`] then rewrites each into the wfhost
//! form, before validation, and returns a [`Reading`] for each so that
//! `wfhost validate` can show how the file was read. After it, nothing in
//! wfhost sees a seed spelling.

use std::path::PathBuf;

use super::diag::{Diagnostic, Diagnostics};
use super::locate::Locator;
use super::model::{
    Agent, FailureWord, ModelSpec, ParallelHint, RetrySpec, SessionMode, Step, Workflow,
};

mod aliases;
mod order;
mod placeholders;

pub use aliases::readings as alias_readings;

pub use placeholders::seed_path;

/// How one seed spelling was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Where it is (`config.maxRetries`, `steps[2].retryPolicy`).
    pub place: String,
    /// What the file says.
    pub written: String,
    /// The wfhost form it was read as.
    pub read_as: String,
}

/// Agents defined outside the workflow, in `<home>/agents.yaml`.
#[derive(Debug, Clone, Default)]
pub struct HomeAgents {
    /// The file they came from (for messages).
    pub file: PathBuf,
    /// The agents, with relative paths already resolved against the home.
    pub agents: Vec<Agent>,
}

/// CodeCafe's `on_failure: retry` without a count: attempts in all.
const DEFAULT_RETRY_WORD_ATTEMPTS: u32 = 3;

/// Rewrites every seed spelling of `wf` into the wfhost form; `source` and
/// `file_name` place the errors. Agents a step names but the workflow does
/// not define are taken from `home_agents`.
pub fn normalize(
    wf: &mut Workflow,
    source: &str,
    file_name: &str,
    home_agents: Option<&HomeAgents>,
) -> Result<Vec<Reading>, Diagnostics> {
    let mut readings = Vec::new();
    let mut problems = Diagnostics::new();
    top_level(wf, &mut readings, &mut problems, source, file_name);
    for i in 0..wf.steps.len() {
        let continue_all = wf.config.continue_on_error == Some(true);
        step(i, &mut wf.steps[i], continue_all, &mut readings);
    }
    if wf.config.continue_on_error.take() == Some(true) {
        readings.push(Reading {
            place: "config.continueOnError".into(),
            written: "true".into(),
            read_as: "continue_on_error: true on every step".into(),
        });
    }
    agents_from_home(
        wf,
        home_agents,
        &mut readings,
        &mut problems,
        source,
        file_name,
    );
    order::implicit_order(wf, &mut readings);
    placeholders::rewrite(wf, &mut readings, &mut problems, source, file_name);
    problems.into_result(readings)
}

fn top_level(
    wf: &mut Workflow,
    readings: &mut Vec<Reading>,
    problems: &mut Diagnostics,
    source: &str,
    file_name: &str,
) {
    if wf.name.is_empty() {
        match &wf.id {
            Some(id) => {
                wf.name = id.clone();
                readings.push(Reading {
                    place: "id".into(),
                    written: id.clone(),
                    read_as: format!("name: {id}"),
                });
            }
            None => {
                let locator = Locator::new(source, file_name, wf);
                problems.push(
                    Diagnostic::new("missing field `name` (or `id`): every workflow has a name")
                        .at(locator.file()),
                );
            }
        }
    }
    for (place, hint) in [
        ("parallel", wf.parallel.take()),
        ("config.parallel", wf.config.parallel.take()),
    ] {
        let Some(hint) = hint else { continue };
        let parallelism = match hint {
            ParallelHint::Flag(false) => Some(1),
            ParallelHint::Flag(true) => None,
            ParallelHint::Count(n) => Some(n),
        };
        let read_as = match parallelism {
            Some(n) => {
                wf.config.parallelism.get_or_insert(n);
                format!("config.parallelism: {n}")
            }
            None => "the default parallelism".to_string(),
        };
        readings.push(Reading {
            place: place.into(),
            written: hint_text(hint),
            read_as,
        });
    }
    if let Some(retries) = wf.config.max_retries.take() {
        let attempts = retries.saturating_add(1);
        let retry = wf.defaults.retry.get_or_insert_with(RetrySpec::default);
        retry.max_attempts.get_or_insert(attempts);
        readings.push(Reading {
            place: "config.maxRetries".into(),
            written: retries.to_string(),
            read_as: format!("defaults.retry.max_attempts: {attempts} (any failure is retried)"),
        });
    }
    if let Some(interval) = wf.config.checkpoint_interval.take() {
        readings.push(Reading {
            place: "config.checkpointInterval".into(),
            written: interval,
            read_as: "not needed: every transition is committed before the next action".into(),
        });
    }
    if let Some(timeout) = &wf.config.timeout {
        milliseconds("config.timeout", timeout, readings);
    }
    if let Some(retry) = wf.defaults.retry.as_mut() {
        retry_spec("defaults.retry", retry, readings);
    }
    if wf.phases.iter().any(|p| p.written_as_string) {
        readings.push(Reading {
            place: "phases".into(),
            written: wf
                .phases
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            read_as: "phases with these ids".into(),
        });
    }
}

fn hint_text(hint: ParallelHint) -> String {
    match hint {
        ParallelHint::Flag(flag) => flag.to_string(),
        ParallelHint::Count(n) => n.to_string(),
    }
}

/// A reading for a duration written as a bare number of milliseconds.
fn milliseconds(place: &str, text: &str, readings: &mut Vec<Reading>) {
    let Some(digits) = text.strip_suffix("ms") else {
        return;
    };
    let Ok(ms) = digits.parse::<u64>() else {
        return;
    };
    if ms >= 1000 {
        readings.push(Reading {
            place: place.into(),
            written: digits.to_string(),
            read_as: format!(
                "{} (a number is milliseconds)",
                crate::step::units::humanize(std::time::Duration::from_millis(ms))
            ),
        });
    }
}

/// `retryPolicy.maxRetries` inside a retry block.
fn retry_spec(place: &str, retry: &mut RetrySpec, readings: &mut Vec<Reading>) {
    if let Some(retries) = retry.max_retries.take() {
        let attempts = retries.saturating_add(1);
        retry.max_attempts.get_or_insert(attempts);
        readings.push(Reading {
            place: format!("{place}.maxRetries"),
            written: retries.to_string(),
            read_as: format!("{place}.max_attempts: {attempts}"),
        });
    }
    for (name, value) in [
        ("initial_interval", &retry.initial_interval),
        ("max_interval", &retry.max_interval),
    ] {
        if let Some(text) = value {
            milliseconds(&format!("{place}.{name}"), text, readings);
        }
    }
}

fn step(i: usize, step: &mut Step, continue_all: bool, readings: &mut Vec<Reading>) {
    let label = format!("steps[{i}] ({})", step_label(&step.id));
    let mut push = |key: &str, written: String, read_as: String| {
        readings.push(Reading {
            place: format!("{label}.{key}"),
            written,
            read_as,
        })
    };
    if continue_all {
        step.continue_on_error = true;
    }
    if let Some(timeout) = &step.timeout {
        let mut found = Vec::new();
        milliseconds("timeout", timeout, &mut found);
        for r in found {
            push("timeout", r.written, r.read_as);
        }
    }
    // The run service's on_failure.retry / retry_delay_ms, CodeCafe's words.
    let mut attempts_from_word = None;
    if let Some(on_failure) = step.on_failure.as_mut() {
        if let Some(retries) = on_failure.retry.take() {
            step.max_retries.get_or_insert(retries);
        }
        if let Some(ms) = on_failure.retry_delay_ms.take() {
            step.retry_delay_ms.get_or_insert(ms);
        }
        match on_failure.word.take() {
            Some(FailureWord::Stop) => {
                on_failure.escalate = Some(super::model::Escalation::Fail);
                push(
                    "on_failure",
                    "stop".into(),
                    "on_failure: {escalate: fail}".into(),
                );
            }
            Some(FailureWord::Continue) => {
                step.continue_on_error = true;
                push(
                    "on_failure",
                    "continue".into(),
                    "continue_on_error: true".into(),
                );
            }
            Some(FailureWord::Retry) => attempts_from_word = Some(()),
            None => {}
        }
    }
    if step
        .on_failure
        .as_ref()
        .is_some_and(|o| o.escalate.is_none() && o.retry_step.is_none() && o.max_loops.is_none())
    {
        step.on_failure = None;
    }
    // Flat retry spellings (maxRetries, retries, retryDelayMs, …).
    let flat = step.max_retries.is_some()
        || step.retry_delay_ms.is_some()
        || step.retry_backoff_multiplier.is_some()
        || attempts_from_word.is_some();
    if flat {
        let retry = step.retry.get_or_insert_with(RetrySpec::default);
        let mut read_as = Vec::new();
        if let Some(retries) = step.max_retries.take() {
            retry.max_attempts.get_or_insert(retries.saturating_add(1));
        }
        if attempts_from_word.is_some() {
            retry
                .max_attempts
                .get_or_insert(DEFAULT_RETRY_WORD_ATTEMPTS);
        }
        if let Some(attempts) = retry.max_attempts {
            read_as.push(format!("max_attempts: {attempts}"));
        }
        if let Some(ms) = step.retry_delay_ms.take() {
            let text = format!("{ms}ms");
            retry.initial_interval.get_or_insert(text.clone());
            read_as.push(format!("initial_interval: {text}"));
        }
        if let Some(multiplier) = step.retry_backoff_multiplier.take() {
            retry.backoff_coefficient.get_or_insert(multiplier);
            read_as.push(format!("backoff_coefficient: {multiplier}"));
        }
        let written = if attempts_from_word.is_some() {
            "on_failure: retry".to_string()
        } else {
            "maxRetries / retries / retryDelayMs / retryBackoffMultiplier".to_string()
        };
        push(
            "retry",
            written,
            format!("retry: {{{}}}", read_as.join(", ")),
        );
    }
    if let Some(retry) = step.retry.as_mut() {
        let mut found = Vec::new();
        retry_spec("retry", retry, &mut found);
        for r in found {
            push(&r.place, r.written, r.read_as);
        }
    }
    match step.parallel.take() {
        Some(ParallelHint::Flag(false)) | Some(ParallelHint::Count(1))
            if step.for_each.is_none() =>
        {
            step.exclusive = true;
            push(
                "parallel",
                "false".into(),
                "exclusive: true (runs with no other step running)".into(),
            );
        }
        Some(ParallelHint::Count(n)) if step.for_each.is_some() => {
            step.parallelism.get_or_insert(n);
            push("parallel", n.to_string(), format!("parallelism: {n}"));
        }
        Some(hint) => push(
            "parallel",
            hint_text(hint),
            "the default: runs alongside other ready steps".into(),
        ),
        None => {}
    }
    if let Some(fresh) = step.fresh_session.take() {
        let mode = if fresh {
            SessionMode::Fresh
        } else {
            SessionMode::Reuse
        };
        step.session.get_or_insert(mode);
        push(
            "fresh_session",
            fresh.to_string(),
            format!("session: {}", if fresh { "fresh" } else { "reuse" }),
        );
    }
    if step.step_type.is_none() && step.run.is_none() && step.agent.is_some() {
        step.step_type = Some("agent".into());
        push(
            "agent",
            step.agent.clone().unwrap_or_default(),
            "type: agent".into(),
        );
    }
}

fn step_label(id: &str) -> String {
    id.chars().take(64).collect()
}

/// Agents a step names that the workflow does not define come from the
/// home's agents file; a name in neither place is an error naming both.
fn agents_from_home(
    wf: &mut Workflow,
    home: Option<&HomeAgents>,
    readings: &mut Vec<Reading>,
    problems: &mut Diagnostics,
    source: &str,
    file_name: &str,
) {
    let mut wanted: Vec<(usize, String)> = Vec::new();
    for (i, step) in wf.steps.iter().enumerate() {
        if let Some(agent) = &step.agent {
            if !wf.agents.iter().any(|a| &a.id == agent) && !wanted.iter().any(|(_, w)| w == agent)
            {
                wanted.push((i, agent.clone()));
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let locator = Locator::new(source, file_name, wf);
    let mut located = Vec::new();
    for (i, name) in wanted {
        match home.and_then(|h| h.agents.iter().find(|a| a.id == name)) {
            Some(agent) => {
                readings.push(Reading {
                    place: format!("steps[{i}] ({}).agent", step_label(&wf.steps[i].id)),
                    written: name.clone(),
                    read_as: format!(
                        "agent '{name}' from {}",
                        home.map(|h| h.file.display().to_string())
                            .unwrap_or_default()
                    ),
                });
                located.push(agent.clone());
            }
            None => {
                let home_text = match home {
                    Some(h) if h.agents.is_empty() => {
                        format!("{} (defines none)", h.file.display())
                    }
                    Some(h) => format!(
                        "{} (defines {})",
                        h.file.display(),
                        h.agents
                            .iter()
                            .map(|a| a.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "the home's agents.yaml (there is none)".to_string(),
                };
                let workflow_text = if wf.agents.is_empty() {
                    "the workflow's `agents:` (none)".to_string()
                } else {
                    format!(
                        "the workflow's `agents:` ({})",
                        wf.agents
                            .iter()
                            .map(|a| a.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                problems.push(
                    Diagnostic::new(format!(
                        "unknown agent '{name}': it is neither in {workflow_text} nor in {home_text}"
                    ))
                    .at(locator.step_token(i, &["agent"], &name))
                    .for_step(&wf.steps[i].id),
                );
            }
        }
    }
    wf.agents.extend(located);
}

/// The providers a `provider/model` string may name.
pub fn known_providers() -> Vec<&'static str> {
    super::forms::KNOWN_PROVIDERS
        .iter()
        .map(|(name, ..)| *name)
        .collect()
}

/// The name of the agents file in a wfhost home.
pub const HOME_AGENTS_FILE: &str = "agents.yaml";

/// Reads the agents file `file` (a list of agents, as a workflow's
/// `agents:`, or a document with an `agents:` list); `None` when there is
/// no such file. Relative paths in it (scripted models, policy plugins)
/// are resolved against its directory.
pub fn load_home_agents(file: &std::path::Path) -> Result<Option<HomeAgents>, Diagnostics> {
    use super::diag::Location;
    if !file.exists() {
        return Ok(None);
    }
    let name = file.display().to_string();
    let text = super::load::read_bounded(file)
        .map_err(|problem| Diagnostics::from(Diagnostic::new(problem).at(Location::file(&name))))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Document {
        agents: Vec<Agent>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<Agent>),
        Document(Document),
    }
    let located = |e: serde_yaml::Error| -> Diagnostics {
        let location = match e.location() {
            Some(at) => Location::new(&name, at.line(), at.column()),
            None => Location::file(&name),
        };
        Diagnostic::new(e.to_string()).at(location).into()
    };
    // Parsed as a list first, so its errors (with positions) are the ones
    // shown for a list; a mapping is read as `agents: [...]`.
    let starts_as_list = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && *l != "---")
        .is_some_and(|l| l.starts_with('-') || l.starts_with('['));
    let mut agents = if text.trim().is_empty() {
        Vec::new()
    } else if starts_as_list {
        serde_yaml::from_str::<Vec<Agent>>(&text).map_err(located)?
    } else {
        match serde_yaml::from_str::<Form>(&text) {
            Ok(Form::List(agents)) | Ok(Form::Document(Document { agents })) => agents,
            Err(_) => {
                serde_yaml::from_str::<Document>(&text)
                    .map_err(located)?
                    .agents
            }
        }
    };
    let dir = file.parent().unwrap_or(std::path::Path::new("/"));
    for agent in &mut agents {
        if let ModelSpec::Scripted { script } = &mut agent.model {
            if std::path::Path::new(script.as_str()).is_relative() {
                *script = dir.join(&*script).display().to_string();
            }
        }
        for policy in &mut agent.policy {
            if let Some(plugin) = policy.plugin.as_mut() {
                if std::path::Path::new(plugin.as_str()).is_relative() {
                    *plugin = dir.join(&*plugin).display().to_string();
                }
            }
        }
    }
    Ok(Some(HomeAgents {
        file: file.to_path_buf(),
        agents,
    }))
}
