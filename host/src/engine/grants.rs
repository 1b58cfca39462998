//! Effective grants: a step's grants merged with the workflow defaults,
//! resolved (absolute paths, programs found on `PATH`, sizes parsed) and
//! checked against the operator's ceiling, before any run starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::workflow::locate::Locator;
use crate::workflow::model::{Access, Grants, ModelSpec, Step};
use crate::workflow::reach::{reach, ModelReach};
use crate::workflow::{
    parse_duration, step_kind, Diagnostic, Diagnostics, LoadedWorkflow, StepKind,
};

use super::ceiling::Ceiling;

pub use crate::step::grants::*;
pub use crate::step::units::parse_size;

/// The grants a step declares, merged with the workflow defaults (see
/// [`Grants`] for the rule), plus the implicit shell of a script step.
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
    if step_kind(step) == StepKind::Script {
        let shell = step
            .with
            .as_ref()
            .and_then(|with| with.get("shell"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("sh")
            .to_string();
        if !grants.exec.contains(&shell) {
            grants.exec.push(shell);
        }
    }
    grants
}

/// The directories of wfhost's own state: the home (run store, run
/// folders) and the compiled-component cache. No step may be granted write
/// access to them, nor to a directory containing them.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    dirs: Vec<(&'static str, PathBuf)>,
}

impl HostState {
    /// The state under `home`, and the component cache `cache` if any.
    /// Paths are made canonical as far as they exist.
    pub fn new(home: &Path, cache: Option<&Path>) -> HostState {
        let mut dirs = vec![("the wfhost home", canonical_as_far_as_exists(home))];
        if let Some(cache) = cache {
            dirs.push((
                "the compiled-component cache",
                canonical_as_far_as_exists(cache),
            ));
        }
        HostState { dirs }
    }

    /// Why a files grant of `path` (`writable`) would reach host state.
    fn check(&self, path: &Path, writable: bool) -> Vec<String> {
        if !writable {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (what, dir) in &self.dirs {
            if dir.starts_with(path) {
                problems.push(format!(
                    "files grant '{}' (read-write) contains {what} '{}': a step could rewrite wfhost's own state; grant a narrower directory that does not contain it",
                    path.display(),
                    dir.display()
                ));
            } else if path.starts_with(dir) {
                problems.push(format!(
                    "files grant '{}' (read-write) lies inside {what} '{}': a step could rewrite wfhost's own state; grant a directory outside it",
                    path.display(),
                    dir.display()
                ));
            }
        }
        problems
    }
}

/// `path` made absolute with its longest existing prefix canonicalised
/// (symbolic links resolved) and the rest appended.
fn canonical_as_far_as_exists(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(found) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(found, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Resolve one step's grants; every problem is a message.
pub fn resolve(
    workflow: &LoadedWorkflow,
    step: &Step,
    ceiling: Option<&Ceiling>,
    host: &HostState,
) -> Result<ResolvedGrants, Vec<String>> {
    let grants = merged(workflow, step);
    let mut problems = Vec::new();
    let mut resolved = ResolvedGrants {
        sandbox: step
            .sandbox
            .or(workflow.def.defaults.sandbox)
            .unwrap_or_default(),
        ..ResolvedGrants::default()
    };
    for file in &grants.files {
        let joined = workflow.dir.join(&file.path);
        match std::fs::canonicalize(&joined) {
            Ok(path) if path.is_dir() => {
                let writable = file.access == Access::ReadWrite;
                problems.extend(host.check(&path, writable));
                match DirHandle::open(&path) {
                    Ok(handle) => resolved.handles.push(handle),
                    Err(error) => problems.push(format!(
                        "files grant '{}' cannot be opened: {error}",
                        file.path
                    )),
                }
                resolved.files.push((path, writable));
            }
            Ok(_) => problems.push(format!(
                "files grant '{}' is not a directory (grant a directory)",
                file.path
            )),
            Err(_) => problems.push(format!(
                "files grant '{}' does not exist ({})",
                file.path,
                joined.display()
            )),
        }
    }
    for line in &grants.env {
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (line.as_str(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(format!("env grant '{line}': expected NAME or NAME=value"));
            continue;
        }
        resolved.env.push(EnvGrant {
            name: name.to_string(),
            value,
        });
    }
    for line in &grants.exec {
        let names = match exec_line_programs(line) {
            Ok(names) => names,
            Err(error) => {
                problems.push(error);
                continue;
            }
        };
        let set = line.starts_with('@');
        for name in names {
            match resolve_program(name) {
                Some(path)
                    if !resolved
                        .exec
                        .iter()
                        .any(|g| g.path == path && g.name == name) =>
                {
                    resolved.exec.push(ExecGrant {
                        name: name.to_string(),
                        path,
                    })
                }
                Some(_) => {}
                // A set grants the members this machine has.
                None if set => {}
                None => problems.push(format!("exec grant '{name}': no such program on PATH")),
            }
        }
    }
    for line in &grants.network {
        match NetworkGrant::parse(line) {
            Ok(grant) => resolved.network.push(grant),
            Err(error) => problems.push(format!("network grant {error}")),
        }
    }
    if let Some(text) = &grants.memory {
        match parse_size(text) {
            Ok(bytes) => resolved.memory = bytes,
            Err(error) => problems.push(format!("memory grant {error}")),
        }
    }
    if let Some(text) = &grants.max_output {
        match parse_size(text) {
            Ok(bytes) if bytes > MAX_MAX_OUTPUT => problems.push(format!(
                "max_output grant '{text}' is over the host's limit of {} MiB (what a step hands the host is held in memory)",
                MAX_MAX_OUTPUT >> 20
            )),
            Ok(bytes) => resolved.max_output = bytes,
            Err(error) => problems.push(format!("max_output grant {error}")),
        }
    }
    if let Some(text) = &grants.timeout {
        match parse_duration(text) {
            Ok(timeout) => resolved.timeout = Some(timeout),
            Err(error) => problems.push(format!("timeout grant: {error}")),
        }
    }
    match kill_grace(workflow, step) {
        Ok(grace) => resolved.kill_grace = grace,
        Err(error) => problems.push(error),
    }
    problems.extend(provider_key_problems(workflow, &resolved));
    if let Some(ceiling) = ceiling {
        let timeout = step_timeout(workflow, step, &resolved);
        problems.extend(ceiling.check(&resolved, timeout));
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
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// What the model of an agent step reaches (its endpoint and key
/// variable); `None` for other steps and unknown agents (reported by
/// validation).
pub fn model_reach(workflow: &LoadedWorkflow, step: &Step) -> Option<Result<ModelReach, String>> {
    if step_kind(step) != StepKind::Agent {
        return None;
    }
    let name = step.agent.as_deref()?;
    let agent = workflow.def.agents.iter().find(|a| a.id == name)?;
    Some(reach(agent))
}

/// A step may not pass the host value of a variable that any agent of the
/// workflow uses as its model's key: the key never enters a sandbox.
fn provider_key_problems(workflow: &LoadedWorkflow, resolved: &ResolvedGrants) -> Vec<String> {
    let mut problems = Vec::new();
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

    #[test]
    fn network_grants_parse_and_match() {
        let exact = NetworkGrant::parse("api.github.com:443").unwrap();
        assert!(exact.allows("api.github.com", 443));
        assert!(exact.allows("API.github.com", 443));
        assert!(!exact.allows("api.github.com", 80));
        assert!(!exact.allows("github.com", 443));
        let wild = NetworkGrant::parse("*.example.com").unwrap();
        assert!(wild.allows("a.example.com", 1) && wild.allows("a.b.example.com", 2));
        assert!(!wild.allows("example.com", 1) && !wild.allows("badexample.com", 1));
        let v6 = NetworkGrant::parse("[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert!(NetworkGrant::parse("a.*.com").is_err());
        assert!(NetworkGrant::parse("host:http")
            .unwrap_err()
            .contains("bad port"));
        assert!(NetworkGrant::parse("http://x").is_err());
    }

    #[test]
    fn ceiling_lines_cover_narrower_grants() {
        let ceiling = NetworkGrant::parse("*.github.com").unwrap();
        assert!(ceiling.covers(&NetworkGrant::parse("api.github.com:443").unwrap()));
        assert!(!ceiling.covers(&NetworkGrant::parse("github.io").unwrap()));
        let port = NetworkGrant::parse("127.0.0.1:80").unwrap();
        assert!(
            !port.covers(&NetworkGrant::parse("127.0.0.1").unwrap()),
            "any port exceeds one port"
        );
    }

    #[test]
    fn write_grants_may_not_reach_host_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let host = HostState::new(&root.join(".wfhost"), Some(&root.join("cache/wfhost")));
        let above = host.check(&root, true);
        assert_eq!(above.len(), 2, "{above:?}");
        assert!(above[0].contains(&format!(
            "files grant '{}' (read-write) contains the wfhost home '{}'",
            root.display(),
            root.join(".wfhost").display()
        )));
        assert!(above[0].contains("grant a narrower directory"));
        assert!(above[1].contains("the compiled-component cache"));
        let inside = host.check(&root.join(".wfhost/runs"), true);
        assert!(
            inside[0].contains("lies inside the wfhost home"),
            "{inside:?}"
        );
        assert!(host.check(&root, false).is_empty(), "reading is allowed");
        assert!(host.check(&root.join("work"), true).is_empty());
    }

    #[test]
    fn exec_sets_expand_and_unknown_sets_are_named() {
        let coreutils = exec_line_programs("@coreutils").unwrap();
        assert!(coreutils.contains(&"cat") && coreutils.contains(&"sleep"));
        assert_eq!(exec_line_programs("git").unwrap(), ["git"]);
        assert_eq!(
            exec_line_programs("@everything").unwrap_err(),
            "exec grant '@everything': unknown set (the sets are: @coreutils)"
        );
    }

    #[test]
    fn programs_resolve_on_path() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute());
        assert!(resolve_program("definitely-not-a-program-wfhost").is_none());
        assert_eq!(resolve_program(sh.to_str().unwrap()).unwrap(), sh);
    }
}
