//! The seeds' bare placeholders: `{{filePath}}` (a run argument) and
//! `{{parse-changes.functions}}` (a field of a step's output), rewritten
//! into wfhost templates when what they name is unambiguous.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::Reading;
use crate::workflow::diag::{Diagnostic, Diagnostics};
use crate::workflow::locate::Locator;
use crate::workflow::model::Workflow;

/// Names a wfhost template starts with; a placeholder starting with one of
/// these is wfhost's own and left alone.
const ROOTS: &[&str] = &[
    "args", "steps", "run", "workflow", "item", "index", "retry", "progress", "loop", "true",
    "false", "none",
];

/// Rewrites the seed placeholders of every step's `run`, `prompt`, `if`
/// and `with` strings. A workflow without an `args` block whose
/// placeholders name arguments gets one declaring them (required), so a
/// missing one is reported before the run starts.
pub fn rewrite(
    wf: &mut Workflow,
    readings: &mut Vec<Reading>,
    problems: &mut Diagnostics,
    source: &str,
    file_name: &str,
) {
    let step_ids: BTreeSet<String> = wf.steps.iter().map(|s| s.id.clone()).collect();
    let declared: Option<BTreeSet<String>> = wf.args.as_ref().map(|schema| {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    });
    let mut implied_args: BTreeSet<String> = BTreeSet::new();
    let mut ambiguous: Vec<(usize, String)> = Vec::new();
    for i in 0..wf.steps.len() {
        let label = format!(
            "steps[{i}] ({})",
            wf.steps[i].id.chars().take(64).collect::<String>()
        );
        let mut seen = BTreeSet::new();
        let mut visit = |text: &mut String, key: &str| {
            let rewritten = rewrite_text(text, &step_ids, declared.as_ref(), |name| {
                ambiguous.push((i, name.to_string()))
            });
            if let Some((new_text, found)) = rewritten {
                for (written, read_as, arg) in found {
                    if let Some(arg) = arg {
                        if declared.is_none() {
                            implied_args.insert(arg);
                        }
                    }
                    if seen.insert(written.clone()) {
                        readings.push(Reading {
                            place: format!("{label}.{key}"),
                            written,
                            read_as,
                        });
                    }
                }
                *text = new_text;
            }
        };
        let step = &mut wf.steps[i];
        if let Some(run) = step.run.as_mut() {
            visit(run, "run");
        }
        if let Some(prompt) = step.prompt.as_mut() {
            visit(prompt, "prompt");
        }
        if let Some(condition) = step.condition.as_mut() {
            visit(condition, "if");
        }
        if let Some(with) = step.with.as_mut() {
            walk_strings(with, &mut |text| visit(text, "with"));
        }
    }
    if !ambiguous.is_empty() {
        let locator = Locator::new(source, file_name, wf);
        for (i, name) in ambiguous {
            problems.push(
                Diagnostic::new(format!(
                    "placeholder '{name}' is ambiguous: '{name}' is both an argument (args.{name}) \
                     and a step id (steps['{name}']); write `{{{{ args.{name} }}}}` or \
                     `{{{{ steps['{name}'].output }}}}`"
                ))
                .at(locator.step_token(i, &[], &name))
                .for_step(&wf.steps[i].id),
            );
        }
    }
    if !implied_args.is_empty() {
        let properties: serde_json::Map<String, Value> = implied_args
            .iter()
            .map(|name| (name.clone(), json!({})))
            .collect();
        wf.args = Some(json!({
            "type": "object",
            "properties": properties,
            "required": implied_args.iter().collect::<Vec<_>>(),
        }));
        readings.push(Reading {
            place: "args".into(),
            written: "(none; placeholders name arguments)".into(),
            read_as: format!(
                "args: required {} (give them with --arg, --args-file or --context)",
                implied_args.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
}

fn walk_strings(value: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().for_each(|item| walk_strings(item, visit)),
        Value::Object(map) => map.values_mut().for_each(|item| walk_strings(item, visit)),
        _ => {}
    }
}

/// One rewritten placeholder: as written, as read, and the argument it
/// names (if it names one).
type Found = (String, String, Option<String>);

/// `text` with its seed placeholders rewritten, and what was rewritten;
/// `None` when nothing was. Templates with blocks (`{% … %}`) are wfhost's
/// own (the seeds have none) and left alone, since their loop variables
/// look like bare names.
fn rewrite_text(
    text: &str,
    step_ids: &BTreeSet<String>,
    declared_args: Option<&BTreeSet<String>>,
    mut ambiguous: impl FnMut(&str),
) -> Option<(String, Vec<Found>)> {
    if text.contains("{%") || !text.contains("{{") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(length) = rest[start + 2..].find("}}") else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + length];
        out.push_str(&rest[..start]);
        let whole = &rest[start..start + 2 + length + 2];
        match seed_reference(inner.trim(), step_ids, declared_args) {
            Some(Reference::Ambiguous(name)) => {
                ambiguous(&name);
                out.push_str(whole);
            }
            Some(Reference::Step { id, path }) => {
                let template = format!(
                    "{{{{ steps[{}].output | seed_path({}) }}}}",
                    quoted(&id),
                    quoted(&path)
                );
                found.push((whole.to_string(), template.clone(), None));
                out.push_str(&template);
            }
            Some(Reference::Arg { name, path }) => {
                let mut template = format!("{{{{ args[{}]", quoted(&name));
                for segment in path.split('.').filter(|s| !s.is_empty()) {
                    template.push_str(&format!("[{}]", quoted(segment)));
                }
                template.push_str(" }}");
                found.push((whole.to_string(), template.clone(), Some(name)));
                out.push_str(&template);
            }
            None => out.push_str(whole),
        }
        rest = &rest[start + 2 + length + 2..];
    }
    out.push_str(rest);
    (!found.is_empty()).then_some((out, found))
}

/// A JSON/minijinja string literal.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

enum Reference {
    Step { id: String, path: String },
    Arg { name: String, path: String },
    Ambiguous(String),
}

/// What a bare `name.path` placeholder names, if it is a seed placeholder.
fn seed_reference(
    expression: &str,
    step_ids: &BTreeSet<String>,
    declared_args: Option<&BTreeSet<String>>,
) -> Option<Reference> {
    let valid = !expression.is_empty()
        && expression.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        && expression
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid {
        return None;
    }
    let (first, path) = expression.split_once('.').unwrap_or((expression, ""));
    if ROOTS.contains(&first) {
        return None;
    }
    let is_step = step_ids.contains(first);
    let is_arg = declared_args.is_some_and(|args| args.contains(first));
    match (is_step, is_arg) {
        (true, true) => Some(Reference::Ambiguous(first.to_string())),
        (true, false) => Some(Reference::Step {
            id: first.to_string(),
            path: path.to_string(),
        }),
        (false, true) => Some(Reference::Arg {
            name: first.to_string(),
            path: path.to_string(),
        }),
        // Without an args block, a bare name (no dots) is an argument the
        // seeds' `--context` gives; with one, only a declared name is.
        // Anything else is left for validation to report.
        (false, false) if declared_args.is_none() && path.is_empty() => Some(Reference::Arg {
            name: first.to_string(),
            path: path.to_string(),
        }),
        (false, false) => None,
    }
}

/// The `seed_path` filter: a field of a step's output as the seeds look it
/// up. `path` is dotted; each segment is taken from the output, or, when
/// the output has no such field, from its `result` (an agent's JSON answer)
/// or from its `text` when that text is a JSON object. The empty path and a
/// missing `result` give the agent's answer (`result`, else `text`), else
/// the whole output. A field found nowhere is an error naming the fields
/// there are.
pub fn seed_path(output: &Value, path: &str) -> Result<Value, String> {
    let answer = || {
        output
            .get("result")
            .or_else(|| output.get("text"))
            .cloned()
            .unwrap_or_else(|| output.clone())
    };
    if path.is_empty() {
        return Ok(answer());
    }
    let parsed_text = output
        .get("text")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text.trim()).ok())
        .filter(Value::is_object);
    let mut segments = path.split('.');
    let first = segments.next().unwrap_or_default();
    let mut current = match output.get(first) {
        Some(value) => value.clone(),
        None => match output
            .get("result")
            .and_then(|r| r.get(first))
            .or_else(|| parsed_text.as_ref().and_then(|p| p.get(first)))
        {
            Some(value) => value.clone(),
            None if first == "result" => answer(),
            None => return Err(missing(first, output)),
        },
    };
    for segment in segments {
        current = match &current {
            Value::Object(map) => map
                .get(segment)
                .cloned()
                .ok_or_else(|| missing(segment, &current))?,
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|n| items.get(n).cloned())
                .ok_or_else(|| format!("no item '{segment}' in a list of {}", items.len()))?,
            _ => return Err(format!("'{segment}': not a field of a {}", kind(&current))),
        };
    }
    Ok(current)
}

fn missing(field: &str, value: &Value) -> String {
    match value.as_object() {
        Some(map) => format!(
            "the output has no field '{field}' (it has: {})",
            map.keys()
                .take(20)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("the output has no field '{field}': it is a {}", kind(value)),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bare_names_become_args_and_step_fields() {
        let (text, found) = rewrite_text(
            "Scan {{parse-changes.functions}} in {{ filePath }} for {{ args.x }}",
            &ids(&["parse-changes"]),
            None,
            |_| panic!("not ambiguous"),
        )
        .unwrap();
        assert_eq!(
            text,
            "Scan {{ steps[\"parse-changes\"].output | seed_path(\"functions\") }} in {{ args[\"filePath\"] }} for {{ args.x }}"
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].2.as_deref(), Some("filePath"));
    }

    #[test]
    fn declared_args_only_and_ambiguity_is_reported() {
        let declared = ids(&["plan", "who"]);
        let mut ambiguous = Vec::new();
        let (text, _) = rewrite_text(
            "{{who}} {{plan}} {{other}}",
            &ids(&["plan"]),
            Some(&declared),
            |name| ambiguous.push(name.to_string()),
        )
        .unwrap();
        assert_eq!(ambiguous, vec!["plan"]);
        assert_eq!(text, "{{ args[\"who\"] }} {{plan}} {{other}}");
    }

    #[test]
    fn wfhost_templates_are_left_alone() {
        for text in [
            "{{ steps.a.output.x }}",
            "{% for x in args.list %}{{ x }}{% endfor %}",
            "{{ a - b }}",
            "{{ args.n + 1 }}",
            "plain",
            "{{ retry.error }} {{ progress }}",
        ] {
            assert!(
                rewrite_text(text, &ids(&["a"]), None, |_| {}).is_none(),
                "{text}"
            );
        }
    }

    #[test]
    fn seed_path_looks_where_the_seeds_keep_results() {
        let text_answer = json!({ "text": "{\"functions\": [\"f\"]}", "turns": 1 });
        assert_eq!(seed_path(&text_answer, "functions").unwrap(), json!(["f"]));
        assert_eq!(
            seed_path(&text_answer, "result").unwrap(),
            json!("{\"functions\": [\"f\"]}")
        );
        let json_answer = json!({ "result": { "issues": 2 }, "turns": 1 });
        assert_eq!(seed_path(&json_answer, "issues").unwrap(), json!(2));
        assert_eq!(seed_path(&json_answer, "").unwrap(), json!({ "issues": 2 }));
        let script = json!({ "functions": "a b", "exit_code": 0 });
        assert_eq!(seed_path(&script, "functions").unwrap(), json!("a b"));
        let error = seed_path(&script, "nothing").unwrap_err();
        assert_eq!(
            error,
            "the output has no field 'nothing' (it has: exit_code, functions)"
        );
        let nested = json!({ "a": { "b": [1, 2] } });
        assert_eq!(seed_path(&nested, "a.b.1").unwrap(), json!(2));
        assert!(seed_path(&nested, "a.b.5").is_err());
    }
}
