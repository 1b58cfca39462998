//! Checks of what each step type requires: script, function, plugin and
//! agent steps.

use serde_json::Value;

use super::{component_file, list, resolve, Checker, BUILTIN_TYPES};
use crate::workflow::model::Step;

impl Checker<'_> {
    pub(super) fn check_type(&mut self, i: usize, step: &Step) {
        let id = Some(step.id.as_str());
        let with_run = step
            .with
            .as_ref()
            .and_then(|w| w.get("run"))
            .is_some_and(Value::is_string);
        match step.step_type.as_deref() {
            None => {
                if step.run.is_none() {
                    let at = self.loc.step(i);
                    self.report(
                        at,
                        id,
                        "no `type` and no `run`: add `run: <command>` for a script step, or a `type`",
                    );
                }
            }
            Some("script") => {
                if step.run.is_none() && !with_run {
                    let at = self.loc.step_key(i, &["type"]);
                    self.report(
                        at,
                        id,
                        "a script step needs `run` (the command or script to run)",
                    );
                } else if step.run.is_some() && with_run {
                    let at = self.loc.step_key(i, &["run"]);
                    self.report(at, id, "both `run` and `with.run` are given: keep one");
                }
            }
            Some(other) => {
                if step.run.is_some() {
                    let at = self.loc.step_key(i, &["run"]);
                    self.report(
                        at,
                        id,
                        format!("`run` is only for script steps, but the type is '{other}'"),
                    );
                }
                if other == "function" {
                    self.check_component(i, step);
                } else if other == "agent" {
                    self.check_agent_step(i, step);
                } else if !self.wf.plugins.contains_key(other) {
                    let mut known: Vec<&str> = BUILTIN_TYPES.to_vec();
                    // A plugin named like a built-in type is reported on its own.
                    known.extend(
                        self.wf
                            .plugins
                            .keys()
                            .map(String::as_str)
                            .filter(|name| !BUILTIN_TYPES.contains(name)),
                    );
                    let at = self.loc.step_key(i, &["type"]);
                    self.report(
                        at,
                        id,
                        format!("unknown step type '{other}' (known: {})", known.join(", ")),
                    );
                }
            }
        }
        let agent_only = [
            ("agent", step.agent.is_some()),
            ("prompt", step.prompt.is_some()),
            ("session", step.session.is_some()),
            ("max_turns", step.max_turns.is_some()),
            ("output", step.output.is_some()),
            ("output_schema", step.output_schema.is_some()),
        ];
        if step.step_type.as_deref() != Some("agent") {
            for (key, present) in agent_only {
                if present {
                    let at = self.loc.step_key(i, &[key]);
                    self.report(at, id, format!("`{key}` is only for `type: agent` steps"));
                }
            }
        }
        if step.component.is_some() && step.step_type.as_deref() != Some("function") {
            let at = self.loc.step_key(i, &["component"]);
            self.report(at, id, "`component` is only for `type: function` steps");
        }
        if let Some(function) = &step.function {
            let at = self.loc.step_key(i, &["function"]);
            if step.step_type.as_deref() != Some("function") {
                self.report(at, id, "`function` is only for `type: function` steps");
            } else if function.is_empty()
                || function.len() > 256
                || function.split('#').count() > 2
                || function.split('#').any(str::is_empty)
            {
                self.report(
                    at,
                    id,
                    format!(
                        "`function: {function:?}` is not an export name: give `name` or \
                         `interface#name` (e.g. `acme:text/tools#shout`)"
                    ),
                );
            }
        }
    }

    pub(super) fn check_agent_step(&mut self, i: usize, step: &Step) {
        let id = Some(step.id.as_str());
        match &step.agent {
            None => {
                let at = self.loc.step_key(i, &["type"]);
                self.report(at, id, "an agent step needs `agent` (an id from `agents`)");
            }
            Some(name) if !self.wf.agents.iter().any(|a| &a.id == name) => {
                let known: Vec<&str> = self.wf.agents.iter().map(|a| a.id.as_str()).collect();
                let at = self.loc.step_key(i, &["agent"]);
                self.report(
                    at,
                    id,
                    format!("unknown agent '{name}' (declared: {})", list(&known)),
                );
            }
            Some(_) => {}
        }
        if step.prompt.is_none() {
            let at = self.loc.step_key(i, &["type"]);
            self.report(
                at,
                id,
                "an agent step needs `prompt` (the task for the agent)",
            );
        }
        if let Some(output) = &step.output {
            if output != "text" && output != "json" {
                let at = self.loc.step_key(i, &["output"]);
                self.report(
                    at,
                    id,
                    format!("output must be `text` or `json`, not '{output}'"),
                );
            }
        }
        if step.output_schema.is_some() && step.output.as_deref() != Some("json") {
            let at = self.loc.step_key(i, &["output_schema"]);
            self.report(at, id, "`output_schema` needs `output: json`");
        }
        if step.max_turns == Some(0) {
            let at = self.loc.step_key(i, &["max_turns"]);
            self.report(at, id, "max_turns must be at least 1");
        }
    }

    pub(super) fn check_component(&mut self, i: usize, step: &Step) {
        let id = Some(step.id.as_str());
        let Some(component) = &step.component else {
            let at = self.loc.step_key(i, &["type"]);
            self.report(
                at,
                id,
                "a function step needs `component` (a built-in component name or a path to a .wasm file)",
            );
            return;
        };
        if self.builtins.contains(&component.as_str()) {
            return;
        }
        let at = self.loc.step_key(i, &["component"]);
        if component.ends_with(".wasm") {
            let full = resolve(self.dir, component);
            if let Some(problem) = component_file::problem(&full) {
                self.report(at, id, format!("component file '{component}' {problem}"));
            }
        } else {
            self.report(
                at,
                id,
                format!(
                    "unknown component '{component}' (built-in: {}; or give a path to a .wasm file)",
                    list(self.builtins)
                ),
            );
        }
    }
}
