//! Checking plugin components before anything runs them: the world a
//! component implements, its imports against what wfhost provides, its
//! `describe` (name, version, config schema), and a step's `with:` against
//! that schema. `wfhost plugin check` prints one component's report;
//! `wfhost validate` checks every component a workflow names.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::runtime::inspect::{Inspection, World};
use crate::runtime::Runtime;
use crate::workflow::locate::Locator;
use crate::workflow::{Diagnostic, Diagnostics, LoadedWorkflow, StepKind};

/// The largest config schema a plugin's `describe` may return.
const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// What checking one component found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The component as named (built-in name or path).
    pub component: String,
    /// Its size in bytes (files only).
    pub size: Option<u64>,
    /// World, imports, exports.
    pub inspection: Inspection,
    /// What `describe` returned (step plugins): name, version,
    /// description, config schema.
    pub info: Option<Value>,
    /// Everything that keeps it from running as `expected`, one line each.
    pub problems: Vec<String>,
}

impl Report {
    /// The report as JSON (`wfhost plugin check --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "component": self.component,
            "size": self.size,
            "world": self.inspection.world.name(),
            "imports": self.inspection.imports.iter().map(|import| json!({
                "name": import.name,
                "provided": import.missing.is_none(),
                "why": import.missing,
            })).collect::<Vec<_>>(),
            "exports": self.inspection.exports,
            "plugin": self.info,
            "valid": self.problems.is_empty(),
            "problems": self.problems,
        })
    }

    /// The config schema `describe` gave, if any (and not `true`/empty).
    pub fn config_schema(&self) -> Option<&Value> {
        self.info
            .as_ref()
            .and_then(|info| info.get("config_schema"))
            .filter(|schema| {
                schema.is_object() && schema.as_object().is_some_and(|o| !o.is_empty())
            })
    }
}

/// Check `component` (a built-in name or a path): compile it into the
/// cache, tell its world and imports, link it as `expected` (or as the
/// world it implements) and, for a step plugin, call `describe`. An
/// unreadable file or one that is no component is an error; everything
/// else that is wrong is in the report's `problems`.
pub fn check(
    runtime: &Runtime,
    tokio: &tokio::runtime::Runtime,
    component: &str,
    expected: Option<World>,
) -> anyhow::Result<Report> {
    let inspection = runtime.inspect(component)?;
    let size = std::fs::metadata(component).ok().map(|meta| meta.len());
    let mut problems = inspection.problems();
    let world = inspection.world;
    if let Some(expected) = expected {
        if expected != world {
            problems.push(wrong_world(world, expected));
        }
    }
    let mut info = None;
    let linked_as = expected.unwrap_or(world);
    if linked_as == world {
        match world {
            World::Step => match runtime.load(component) {
                Ok(_) => match tokio.block_on(runtime.describe(component)) {
                    Ok(described) if described.config_schema.len() > MAX_SCHEMA_BYTES => {
                        problems.push(format!(
                            "its config schema is {} bytes, more than the {MAX_SCHEMA_BYTES} wfhost reads",
                            described.config_schema.len()
                        ));
                    }
                    Ok(described) => {
                        info = Some(json!({
                            "name": cut(&described.name),
                            "version": cut(&described.version),
                            "description": cut(&described.description),
                            "config_schema": serde_json::from_str::<Value>(&described.config_schema)
                                .unwrap_or(Value::Null),
                        }));
                    }
                    Err(error) => problems.push(format!("its `describe` failed: {error:#}")),
                },
                Err(error) if problems.is_empty() => problems.push(format!("{error:#}")),
                Err(_) => {}
            },
            World::ToolPolicy => {
                let bytes = std::fs::read(component);
                let checked = match &bytes {
                    Ok(bytes) => crate::agent::policy::check_component(bytes),
                    Err(error) => Err(format!("cannot read '{component}': {error}")),
                };
                if let Err(error) = checked {
                    if problems.is_empty() {
                        problems.push(error);
                    }
                }
            }
            World::Functions => {}
        }
    }
    Ok(Report {
        component: component.to_string(),
        size,
        inspection,
        info,
        problems,
    })
}

/// A plugin-chosen text, at most [`MAX_INFO_CHARS`] characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_INFO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The longest name, version or description shown of a plugin.
const MAX_INFO_CHARS: usize = 300;

fn wrong_world(found: World, expected: World) -> String {
    let what = |world: World| match world {
        World::Step => "a step plugin (world `step`: exports `describe` and `run`)",
        World::ToolPolicy => "a tool policy (world `tool-policy`: exports `decide`)",
        World::Functions => "neither a step plugin nor a tool policy",
    };
    format!("it is {}, not {}", what(found), what(expected))
}

/// Check every component `workflow` names: each step's component (a step
/// plugin) and each agent's policy plugins (tool policies), once each; then
/// each step's `with:` against its plugin's config schema. Problems come
/// back as diagnostics naming the step (or agent) and its place in the file.
pub fn check_workflow(
    runtime: &Runtime,
    tokio: &tokio::runtime::Runtime,
    workflow: &LoadedWorkflow,
) -> Diagnostics {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let mut diagnostics = Diagnostics::new();
    let mut reports: BTreeMap<String, Result<Report, String>> = BTreeMap::new();
    let mut report_of = |component: &str, expected: World| {
        reports
            .entry(component.to_string())
            .or_insert_with(|| {
                check(runtime, tokio, component, Some(expected)).map_err(|e| format!("{e:#}"))
            })
            .clone()
    };
    for (index, step) in workflow.def.steps.iter().enumerate() {
        let component = crate::engine::step_types::component_of(workflow, step);
        let problem = |message: String| {
            Diagnostic::new(message)
                .for_step(&step.id)
                .at(locator.step(index))
        };
        if let Some(function) = &step.function {
            let with = step.with.clone().unwrap_or_else(|| json!({}));
            if let Err(message) = runtime.check_function(&component, function, &with) {
                diagnostics.push(
                    Diagnostic::new(format!("component '{}': {message}", short(&component)))
                        .for_step(&step.id)
                        .at(locator.step_key(index, &["function"])),
                );
            }
            continue;
        }
        match report_of(&component, World::Step) {
            Err(error) => diagnostics.push(problem(error)),
            Ok(report) if !report.problems.is_empty() => {
                for line in &report.problems {
                    diagnostics.push(problem(format!(
                        "component '{}': {line}",
                        short(&component)
                    )));
                }
            }
            Ok(report) => {
                // Script and agent steps build their config from other keys.
                let takes_with = matches!(
                    crate::workflow::step_kind(step),
                    StepKind::Function { .. } | StepKind::Plugin { .. }
                );
                if let Some(schema) = report.config_schema().filter(|_| takes_with) {
                    let with = step.with.clone().unwrap_or_else(|| json!({}));
                    for message in config_problems(schema, &with) {
                        diagnostics.push(
                            Diagnostic::new(format!(
                                "`with:` does not fit the config schema of '{}': {message}",
                                short(&component)
                            ))
                            .for_step(&step.id)
                            .at(locator.step_key(index, &["with"])),
                        );
                    }
                }
            }
        }
    }
    for diagnostic in check_policies(workflow, &mut |path| {
        report_of(path, World::ToolPolicy).and_then(|report| match report.problems.first() {
            Some(first) => Err(first.clone()),
            None => Ok(()),
        })
    })
    .0
    {
        diagnostics.push(diagnostic);
    }
    diagnostics
}

/// Check that every policy plugin of the workflow's agents is a usable
/// `tool-policy` component (with `check`, or, when `None`, by linking it as
/// a decision would): a step component given as a policy would otherwise
/// deny every call of a run that still succeeds.
pub fn check_policies(
    workflow: &LoadedWorkflow,
    check: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Diagnostics {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let mut diagnostics = Diagnostics::new();
    for agent in &workflow.def.agents {
        for policy in &agent.policy {
            let Some(plugin) = &policy.plugin else {
                continue;
            };
            let path = workflow.dir.join(plugin);
            if let Err(line) = check(&path.to_string_lossy()) {
                diagnostics.push(
                    Diagnostic::new(format!("agent '{}': policy '{plugin}': {line}", agent.id))
                        .at_opt(locator.key_value("plugin", plugin)),
                );
            }
        }
    }
    diagnostics
}

/// [`check_policies`] by linking each policy the way its first decision
/// would (no `describe`, no step components): what `wfhost run` checks.
pub fn link_policies(workflow: &LoadedWorkflow) -> Diagnostics {
    check_policies(workflow, &mut |path| {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read '{path}': {e}"))?;
        crate::agent::policy::check_component(&bytes)
    })
}

/// The last part of a component path, for messages.
fn short(component: &str) -> &str {
    Path::new(component)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(component)
}

/// What in `with` does not fit `schema`. Values holding templates are
/// rendered only at run time, so they (and a `required` rule about them)
/// are not judged here.
pub fn config_problems(schema: &Value, with: &Value) -> Vec<String> {
    let Ok(validator) = jsonschema::validator_for(schema) else {
        return vec!["the plugin's config schema is not a valid JSON Schema".to_string()];
    };
    let templated: Vec<String> = match with {
        Value::Object(map) => map
            .iter()
            .filter(|(_, value)| crate::workflow::template::holds_template(value))
            .map(|(key, _)| key.clone())
            .collect(),
        _ => Vec::new(),
    };
    let mut concrete = with.clone();
    if let Value::Object(map) = &mut concrete {
        map.retain(|key, _| !templated.contains(key));
    }
    validator
        .iter_errors(&concrete)
        .filter(|error| {
            // With templated keys left out, a rule about the whole object
            // (`required`, `anyOf`, ...) may fail only for their absence:
            // judged at run time. Unknown keys are typos all the same, and
            // an error about a concrete value stands.
            templated.is_empty()
                || !error.instance_path().to_string().is_empty()
                || matches!(
                    error.kind(),
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
                )
        })
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() {
                error.to_string()
            } else {
                format!("{path}: {error}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_against_the_schema_but_templates_wait_for_the_run() {
        let schema = json!({
            "type": "object",
            "required": ["ms", "name"],
            "properties": { "ms": { "type": "integer" }, "name": { "type": "string" } },
            "additionalProperties": false
        });
        assert!(config_problems(&schema, &json!({ "ms": 5, "name": "x" })).is_empty());
        let wrong = config_problems(&schema, &json!({ "ms": "soon", "name": "x" }));
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].starts_with("/ms: "), "{wrong:?}");
        let missing = config_problems(&schema, &json!({ "ms": 5 }));
        assert!(
            missing[0].contains("\"name\" is a required property"),
            "{missing:?}"
        );
        assert!(
            config_problems(&schema, &json!({ "ms": "{{ args.ms }}", "name": "x" })).is_empty()
        );
        let extra = config_problems(&schema, &json!({ "ms": 1, "name": "x", "nmae": 2 }));
        assert!(extra[0].contains("nmae"), "{extra:?}");
        let typo = config_problems(&schema, &json!({ "ms": "{{ x }}", "name": "x", "nmae": 2 }));
        assert_eq!(
            typo.len(),
            1,
            "a typo is reported with templates around: {typo:?}"
        );
        let any_of = json!({ "anyOf": [{ "required": ["a"] }, { "required": ["b"] }] });
        assert!(config_problems(&any_of, &json!({ "a": "{{ x }}" })).is_empty());
        assert!(!config_problems(&any_of, &json!({ "c": 1 })).is_empty());
    }
}
