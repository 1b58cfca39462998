//! Checks of the workflow's declarations: `config`, `phases`, `agents`,
//! `plugins` and the `args` schema.

use std::collections::HashMap;

use super::{component_file, is_valid_id, resolve, Checker, BUILTIN_TYPES};
use crate::step::units::parse_duration;

impl Checker<'_> {
    pub(super) fn check_config(&mut self) {
        let config = &self.wf.config;
        if config.parallelism == Some(0) {
            let at = self
                .loc
                .key_value("parallelism", "0")
                .unwrap_or_else(|| self.key_loc("config"));
            self.report(at, None, "config.parallelism must be at least 1");
        }
        if let Some(timeout) = &config.timeout {
            if let Err(e) = parse_duration(timeout) {
                let at = self
                    .loc
                    .key_value("timeout", timeout)
                    .unwrap_or_else(|| self.key_loc("config"));
                self.report(at, None, format!("config.timeout: {e}"));
            }
        }
        if let Some(grace) = &config.kill_grace {
            if let Err(e) = crate::step::grants::check_kill_grace(grace) {
                let at = self
                    .loc
                    .key_value("kill_grace", grace)
                    .unwrap_or_else(|| self.key_loc("config"));
                self.report(at, None, format!("config.{e}"));
            }
        }
        if let Some(timeout) = &config.run_timeout {
            if let Err(e) = parse_duration(timeout) {
                let at = self
                    .loc
                    .key_value("run_timeout", timeout)
                    .unwrap_or_else(|| self.key_loc("config"));
                self.report(at, None, format!("config.run_timeout: {e}"));
            }
        }
    }

    pub(super) fn check_agents(&mut self) {
        let mut seen = std::collections::HashSet::new();
        for agent in &self.wf.agents {
            let at = self
                .loc
                .key_value("id", &agent.id)
                .unwrap_or_else(|| self.key_loc("agents"));
            if !is_valid_id(&agent.id) {
                self.report(
                    at.clone(),
                    None,
                    format!(
                        "agent id '{}' must be letters, digits, `_` or `-`",
                        agent.id
                    ),
                );
            }
            if !seen.insert(agent.id.as_str()) {
                self.report(
                    at.clone(),
                    None,
                    format!("duplicate agent id '{}'", agent.id),
                );
            }
            for tool in &agent.tools {
                if wfhost_tool_catalog::lookup(tool).is_none() {
                    let known: Vec<&str> =
                        wfhost_tool_catalog::TOOLS.iter().map(|t| t.name).collect();
                    self.report(
                        at.clone(),
                        None,
                        format!(
                            "agent '{}': unknown tool '{tool}' (known: {})",
                            agent.id,
                            known.join(", ")
                        ),
                    );
                }
            }
            if let crate::workflow::model::ModelSpec::Scripted { script } = &agent.model {
                if !self.dir.join(script).is_file() {
                    self.report(
                        at.clone(),
                        None,
                        format!(
                            "agent '{}': scripted model file '{script}' does not exist",
                            agent.id
                        ),
                    );
                }
            }
            if let Err(error) = crate::workflow::reach::reach(agent) {
                self.report(at.clone(), None, error);
            }
            for (n, policy) in agent.policy.iter().enumerate() {
                match (&policy.rules, &policy.plugin) {
                    (Some(_), None) => {}
                    (None, Some(path)) => {
                        let problem = if path.ends_with(".wasm") {
                            component_file::problem(&resolve(self.dir, path))
                        } else {
                            Some("is not a .wasm file".to_string())
                        };
                        if let Some(problem) = problem {
                            self.report(
                                at.clone(),
                                None,
                                format!("agent '{}': policy plugin '{path}' {problem}", agent.id),
                            );
                        }
                    }
                    _ => self.report(
                        at.clone(),
                        None,
                        format!(
                            "agent '{}': policy {} needs exactly one of `rules` or `plugin`",
                            agent.id,
                            n + 1
                        ),
                    ),
                }
            }
        }
    }

    pub(super) fn check_phases(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, phase) in self.wf.phases.iter().enumerate() {
            if phase.id.trim().is_empty() {
                let at = self.key_loc("phases");
                self.report(at, None, format!("phase #{} has an empty id", i + 1));
                continue;
            }
            if seen.insert(&phase.id, i).is_some() {
                let at = self
                    .loc
                    .key_value("id", &phase.id)
                    .or_else(|| self.loc.key_value("key", &phase.id))
                    .unwrap_or_else(|| self.key_loc("phases"));
                self.report(at, None, format!("duplicate phase id '{}'", phase.id));
            }
        }
    }

    pub(super) fn check_plugins(&mut self) {
        for (name, path) in &self.wf.plugins {
            let at = self
                .loc
                .key_value(name, path)
                .or_else(|| self.loc.key(name))
                .unwrap_or_else(|| self.key_loc("plugins"));
            if !is_valid_id(name) {
                self.report(
                    at.clone(),
                    None,
                    format!("plugin name '{name}' is invalid: use letters, digits, '_' and '-'"),
                );
            }
            if BUILTIN_TYPES.contains(&name.as_str()) {
                self.report(
                    at.clone(),
                    None,
                    format!("plugin '{name}' has the name of a built-in step type"),
                );
            }
            if !path.ends_with(".wasm") {
                self.report(
                    at,
                    None,
                    format!("plugin '{name}': path '{path}' is not a .wasm file"),
                );
                continue;
            }
            let full = resolve(self.dir, path);
            if let Some(problem) = component_file::problem(&full) {
                self.report(
                    at,
                    None,
                    format!("plugin '{name}': file '{path}' {problem}"),
                );
            }
        }
    }

    pub(super) fn check_args_schema(&mut self) {
        let Some(schema) = &self.wf.args else {
            return;
        };
        let at = self.key_loc("args");
        if !schema.is_object() {
            self.report(at, None, "args must be a JSON Schema object");
            return;
        }
        if let Some(t) = schema.get("type") {
            if t != "object" {
                self.report(
                    at.clone(),
                    None,
                    format!("args schema must have `type: object`, not {t}"),
                );
            }
        }
        if let Err(e) = jsonschema::validator_for(schema) {
            let path = e.schema_path().as_str().to_string();
            let message = if path.is_empty() {
                format!("args is not a valid JSON Schema: {e}")
            } else {
                format!("args is not a valid JSON Schema at '{path}': {e}")
            };
            self.report(at, None, message);
        }
    }
}
