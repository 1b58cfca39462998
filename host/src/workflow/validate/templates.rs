//! Checks of the `${{ … }}` templates in a step: syntax, and that each
//! reference names an ancestor step, a declared arg, a run or a workflow field.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::{list, Checker};
use crate::workflow::graph::Graph;
use crate::workflow::model::{Step, Workflow};
use crate::workflow::template::references;

/// Fields of the `run` object in the template context.
const RUN_FIELDS: &[&str] = &["id", "workflow"];

/// Fields of the `retry` object in the template context.
const RETRY_FIELDS: &[&str] = &["error", "attempt", "from"];

/// Fields of the `workflow` object in the template context.
const WORKFLOW_FIELDS: &[&str] = &["name", "dir"];

/// The longest `if:` condition, in characters: each comparison in it is
/// checked by evaluating its operands (see `workflow::compare`), which must
/// stay cheap however the condition is written.
pub const MAX_CONDITION_CHARS: usize = 4096;

/// Fields of each `steps.<id>` object in the template context.
const STEP_FIELDS: &[&str] = &["output", "status"];

impl Checker<'_> {
    pub(super) fn check_templates(
        &mut self,
        i: usize,
        step: &Step,
        graph: &Graph,
        ids: &HashMap<&str, usize>,
    ) {
        let mut strings: Vec<(String, &str)> = Vec::new();
        if let Some(condition) = step.condition.as_deref() {
            let length = condition.chars().count();
            if length > MAX_CONDITION_CHARS {
                let at = self.loc.step_key(i, &["if"]);
                self.report(
                    at,
                    Some(&step.id),
                    format!(
                        "`if` is {length} characters long; a condition may have at most \
                         {MAX_CONDITION_CHARS} (compute a long one in an earlier step and test \
                         its output)"
                    ),
                );
                return;
            }
        }
        let condition = step
            .condition
            .as_deref()
            .map(crate::workflow::template::condition_template);
        if let Some(condition) = &condition {
            strings.push(("if".to_string(), condition.as_str()));
        }
        if let Some(run) = &step.run {
            strings.push(("run".to_string(), run));
        }
        if let Some(prompt) = &step.prompt {
            strings.push(("prompt".to_string(), prompt));
        }
        if let Some(with) = &step.with {
            collect_strings(with, "with".to_string(), &mut strings);
        }
        let declared = declared_args(self.wf);
        let mut reported = BTreeSet::new();
        for (path, text) in strings {
            let refs = match references(text) {
                Ok(refs) => refs,
                Err(e) => {
                    let key = path.split(['.', '[']).nth(1).unwrap_or(&path).to_string();
                    let at = self.loc.step_key(i, &[key.as_str(), "with", "run"]);
                    self.report(at, Some(&step.id), format!("{path}: {e}"));
                    continue;
                }
            };
            for reference in refs {
                let Some(message) =
                    self.check_reference(&reference, (i, step), graph, ids, declared.as_deref())
                else {
                    continue;
                };
                if reported.insert(message.clone()) {
                    let at = self.loc.step_token(i, &[], &reference);
                    self.report(at, Some(&step.id), message);
                }
            }
        }
    }

    /// Explains what is wrong with one dotted reference, if anything.
    pub(super) fn check_reference(
        &self,
        reference: &str,
        (i, step): (usize, &Step),
        graph: &Graph,
        ids: &HashMap<&str, usize>,
        declared_args: Option<&[&str]>,
    ) -> Option<String> {
        let segments: Vec<&str> = reference.split('.').collect();
        let second = segments.get(1).copied();
        match segments[0] {
            "args" => {
                let name = second?;
                if self.wf.args.is_none() {
                    return Some(format!(
                        "template references arg '{name}', but the workflow has no `args` block \
                         (declare it: `args: {{ type: object, properties: {{ {name}: {{ type: string }} }} }}`)"
                    ));
                }
                let declared = declared_args?;
                if declared.contains(&name) {
                    None
                } else {
                    Some(format!(
                        "template references unknown arg '{name}' (declared: {})",
                        list(declared)
                    ))
                }
            }
            "steps" => {
                let name = second?;
                let Some(&j) = ids.get(name) else {
                    let hyphenated = ids
                        .keys()
                        .find(|id| id.strip_prefix(name).is_some_and(|r| r.starts_with('-')));
                    return Some(match hyphenated {
                        Some(id) => format!(
                            "template references unknown step '{name}' (for an id with '-', write steps['{id}'])"
                        ),
                        None => format!("template references unknown step '{name}'"),
                    });
                };
                if name == step.id || !graph.needs(i, j) {
                    return Some(format!(
                        "template references step '{name}' which is not among its needs (add it to `needs`)"
                    ));
                }
                match segments.get(2) {
                    Some(field) if !STEP_FIELDS.contains(field) => Some(format!(
                        "template references '{reference}': a step has only {}",
                        STEP_FIELDS
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )),
                    _ => None,
                }
            }
            "run" => unknown_field("run", second?, RUN_FIELDS),
            "workflow" => unknown_field("workflow", second?, WORKFLOW_FIELDS),
            "retry" => unknown_field("retry", second?, RETRY_FIELDS),
            "progress" => second.map(|field| {
                format!("template references 'progress.{field}': progress is text (the run's progress log)")
            }),
            "item" | "index" if step.for_each.is_some() => None,
            other => Some(format!(
                "template references unknown variable '{other}' (known: args, steps, run, workflow, retry, progress{})",
                if step.for_each.is_some() {
                    ", item, index"
                } else {
                    ""
                }
            )),
        }
    }
}

/// The error for `object.name` when `name` is not among `fields`.
fn unknown_field(object: &str, name: &str, fields: &[&str]) -> Option<String> {
    (!fields.contains(&name)).then(|| {
        format!(
            "template references unknown {object} field '{name}' (known: {})",
            fields.join(", ")
        )
    })
}

/// Declared arg names, when the args schema lists `properties`.
fn declared_args(wf: &Workflow) -> Option<Vec<&str>> {
    let props = wf.args.as_ref()?.get("properties")?.as_object()?;
    Some(props.keys().map(String::as_str).collect())
}

/// Collects every string in `value` with its path (`with.a.b[2]`).
fn collect_strings<'v>(value: &'v Value, path: String, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                collect_strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}
