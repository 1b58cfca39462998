//! Effective grants: a step's grants merged with the workflow defaults
//! and what its step type implies, resolved by the capability units
//! ([`crate::step::grants`]) and checked against the operator's ceiling,
//! before any run starts. What needs the workflow (its defaults, its
//! agents' keys, the step's `sandbox` and `kill_grace`) is decided here.

use std::time::Duration;

use crate::workflow::locate::Locator;
use crate::workflow::model::{ModelSpec, Step};
use crate::workflow::reach::ModelReach;
use crate::workflow::{parse_duration, Diagnostic, Diagnostics, LoadedWorkflow};

use super::ceiling::Ceiling;
use super::step_types;

pub use crate::step::grants::*;

/// The grants a step declares, merged with the workflow defaults (see
/// [`Grants`] for the rule), plus what its step type implies (the shell of
/// a script step).
pub fn merged(workflow: &LoadedWorkflow, step: &Step) -> Grants {
    let own = &step.grants;
    let mut grants = if own.inherit == Some(false) {
        own.clone()
    } else {
        let base = &workflow.def.defaults.grants;
        let mut merged = base.clone();
        merged.inherit = own.inherit;
        for file in &own.files {
            if !merged.files.contains(file) {
                merged.files.push(file.clone());
            }
        }
        for (mine, theirs) in [
            (&own.env, &mut merged.env),
            (&own.exec, &mut merged.exec),
            (&own.network, &mut merged.network),
        ] {
            for item in mine {
                if !theirs.contains(item) {
                    theirs.push(item.clone());
                }
            }
        }
        merged.memory = own.memory.clone().or(merged.memory);
        merged.timeout = own.timeout.clone().or(merged.timeout);
        merged.max_output = own.max_output.clone().or(merged.max_output);
        merged
    };
    step_types::of(step).implied_grants(step, &mut grants);
    grants
}

/// Resolve one step's grants; every problem is a message.
pub fn resolve(
    workflow: &LoadedWorkflow,
    step: &Step,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> Result<ResolvedGrants, Vec<String>> {
    let (resolved, problems) = resolve_with_problems(workflow, step, ceiling, host);
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// One step's grants as far as they resolve here, and every problem: for
/// a driver whose step runs on another worker (which resolves them again
/// on its machine), only the limits matter.
pub fn resolve_with_problems(
    workflow: &LoadedWorkflow,
    step: &Step,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> (ResolvedGrants, Vec<String>) {
    let grants = merged(workflow, step);
    let cx = ResolveContext {
        base: &workflow.dir,
        host,
    };
    let (mut resolved, mut problems) = crate::step::grants::resolve(&grants, &cx);
    resolved.sandbox = step
        .sandbox
        .or(workflow.def.defaults.sandbox)
        .unwrap_or_default();
    match kill_grace(workflow, step) {
        Ok(grace) => resolved.kill_grace = grace,
        Err(error) => problems.push(error),
    }
    problems.extend(provider_key_problems(workflow, &resolved));
    problems.extend(ceiling_problems(workflow, step, ceiling, &resolved));
    (resolved, problems)
}

/// How the step exceeds the operator's ceiling: its grants, then what its
/// model reaches (a model that cannot be reached is a problem even without
/// a ceiling).
fn ceiling_problems(
    workflow: &LoadedWorkflow,
    step: &Step,
    ceiling: Option<&Ceiling>,
    resolved: &ResolvedGrants,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(ceiling) = ceiling {
        let timeout = step_timeout(workflow, step, resolved);
        problems.extend(ceiling.check(resolved, timeout));
    }
    match model_reach(workflow, step) {
        Some(Ok(reach)) => {
            if let Some(ceiling) = ceiling {
                problems.extend(ceiling.check_model(&reach));
            }
        }
        Some(Err(error)) => problems.push(error),
        None => {}
    }
    problems
}

/// What the model of an agent step reaches (its endpoint and key
/// variable); `None` for other steps and unknown agents (reported by
/// validation).
pub fn model_reach(workflow: &LoadedWorkflow, step: &Step) -> Option<Result<ModelReach, String>> {
    step_types::of(step).model_reach(workflow, step)
}

/// A step may not pass the host value of a variable that any agent of the
/// workflow uses as its model's key: the key never enters a sandbox.
fn provider_key_problems(workflow: &LoadedWorkflow, resolved: &ResolvedGrants) -> Vec<String> {
    let mut problems = Vec::new();
    // wfhost's own store URL carries the database's credentials: a step
    // that had it could rewrite any run of the store.
    for grant in resolved.env.iter().filter(|g| g.value.is_none()) {
        if grant.name == STORE_URL_VARIABLE {
            problems.push(format!(
                "env grant '{STORE_URL_VARIABLE}' would pass wfhost's store URL (with its \
                 credentials) into the step; the store's address never enters a sandbox"
            ));
        }
    }
    for grant in resolved.env.iter().filter(|g| g.value.is_none()) {
        for agent in &workflow.def.agents {
            if let ModelSpec::Openai {
                api_key_env: Some(key),
                ..
            } = &agent.model
            {
                if *key == grant.name {
                    problems.push(format!(
                        "env grant '{key}' would pass the API key of agent '{}' (openai model, api_key_env) into the step; a model's key never enters a sandbox",
                        agent.id
                    ));
                }
            }
        }
    }
    problems
}

/// The variable that names wfhost's store (`--store`'s environment).
pub const STORE_URL_VARIABLE: &str = "WFHOST_STORE";

/// The step's `kill_grace`, else `config.kill_grace`, else 2 s; at most
/// [`MAX_KILL_GRACE`].
pub fn kill_grace(workflow: &LoadedWorkflow, step: &Step) -> Result<Duration, String> {
    let text = step
        .kill_grace
        .as_deref()
        .or(workflow.def.config.kill_grace.as_deref());
    let Some(text) = text else {
        return Ok(DEFAULT_KILL_GRACE);
    };
    check_kill_grace(text)
}

/// The per-attempt timeout of a step: its `timeout`, else its grants',
/// else `config.timeout`, else 10 minutes.
pub fn step_timeout(workflow: &LoadedWorkflow, step: &Step, grants: &ResolvedGrants) -> Duration {
    step.timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .or(grants.timeout)
        .or_else(|| {
            workflow
                .def
                .config
                .timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
        })
        .unwrap_or(super::driver::DEFAULT_STEP_TIMEOUT)
}

/// Resolve every step's grants, in step order, or report every problem
/// with its step and location.
pub fn resolve_all(
    workflow: &LoadedWorkflow,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> Result<Vec<ResolvedGrants>, Diagnostics> {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let mut all = Vec::new();
    let mut diagnostics = Diagnostics::new();
    for (index, step) in workflow.def.steps.iter().enumerate() {
        match resolve(workflow, step, ceiling, host) {
            Ok(grants) => all.push(grants),
            Err(problems) => {
                for problem in problems {
                    diagnostics.push(
                        Diagnostic::new(problem)
                            .at(locator.step_key(index, &["grants"]))
                            .for_step(&step.id),
                    );
                }
            }
        }
    }
    diagnostics.into_result(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_output_has_a_host_limit() {
        let dir = tempfile::tempdir().unwrap();
        let source =
            "name: x\nsteps:\n  - id: a\n    run: 'true'\n    grants: {max_output: 300MiB}\n";
        let workflow = crate::workflow::load_from_source(
            source,
            "wf.yaml",
            dir.path(),
            crate::workflow::Format::Yaml,
            &[],
        )
        .unwrap();
        let problems = resolve(
            &workflow,
            &workflow.def.steps[0],
            None,
            &HostState::new(&dir.path().join("home"), None),
        )
        .unwrap_err();
        assert!(
            problems[0].contains("max_output grant '300MiB' is over the host's limit of 256 MiB"),
            "{problems:?}"
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        use crate::step::units::parse_size;
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("0").is_err());
    }

    fn load(source: &str, dir: &std::path::Path) -> LoadedWorkflow {
        crate::workflow::load_from_source(
            source,
            "wf.yaml",
            dir,
            crate::workflow::Format::Yaml,
            &["echo"],
        )
        .unwrap()
    }

    #[test]
    fn a_script_step_implies_its_shell_and_other_kinds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let workflow = load(
            "name: x\ndefaults:\n  grants: {exec: [cat]}\nsteps:\n  - id: plain\n    run: 'true'\n  - id: bash\n    run: 'true'\n    with: {shell: bash}\n    grants: {exec: [bash]}\n  - id: fn\n    type: function\n    component: echo\n",
            dir.path(),
        );
        let exec = |index: usize| merged(&workflow, &workflow.def.steps[index]).exec;
        assert_eq!(exec(0), ["cat", "sh"]);
        assert_eq!(exec(1), ["cat", "bash"], "the shell is not added twice");
        assert_eq!(exec(2), ["cat"]);
    }

    #[test]
    fn only_agent_steps_reach_a_model() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("replies.yaml"), "").unwrap();
        let workflow = load(
            "name: x\nagents:\n  - id: helper\n    name: Helper\n    role: You help.\n    model: {provider: scripted, script: replies.yaml}\nsteps:\n  - id: ask\n    type: agent\n    agent: helper\n    prompt: Hi.\n  - id: plain\n    run: 'true'\n",
            dir.path(),
        );
        let reach = model_reach(&workflow, &workflow.def.steps[0])
            .unwrap()
            .unwrap();
        assert_eq!(reach.agent, "helper");
        assert!(model_reach(&workflow, &workflow.def.steps[1]).is_none());
    }
}
