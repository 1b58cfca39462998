//! Warnings about workflows that are valid but risky: today, values put
//! into a shell script without quoting.
//!
//! A step output may come from a model or a hostile program, and an
//! argument from whoever starts the run; `{{ steps.x.output.y }}` pasted
//! into a `run:` script is shell code. The `shq` filter quotes it as one
//! word: `{{ steps.x.output.y | shq }}`.

use super::diag::Diagnostic;
use super::load::LoadedWorkflow;
use super::locate::Locator;
use super::template::references;
use super::validate::{step_kind, StepKind};

/// Every `{{ … }}` of a script step's `run:` that reads a step output or a
/// run argument and does not end with `| shq`, one warning each.
pub fn shell_warnings(workflow: &LoadedWorkflow) -> Vec<Diagnostic> {
    let locator = Locator::new(&workflow.source, &workflow.file_name, &workflow.def);
    let mut warnings = Vec::new();
    for (index, step) in workflow.def.steps.iter().enumerate() {
        if step_kind(step) != StepKind::Script {
            continue;
        }
        let script = step.run.as_deref().or_else(|| {
            step.with
                .as_ref()
                .and_then(|with| with.get("script"))
                .and_then(serde_json::Value::as_str)
        });
        let Some(script) = script else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for expression in unquoted_expressions(script) {
            if !seen.insert(expression) {
                continue;
            }
            let Ok(refs) = references(&format!("{{{{ {expression} }}}}")) else {
                continue;
            };
            let Some(source) = refs.iter().find_map(|r| risky_source(r)) else {
                continue;
            };
            let at = locator.step_token(index, &["run", "script"], expression.trim());
            warnings.push(
                Diagnostic::new(format!(
                    "`{{{{ {expr} }}}}` puts {source} into a shell script unquoted; \
                     write `{{{{ {expr} | shq }}}}` so it stays one word (outputs may come \
                     from a model or another program)",
                    expr = expression.trim()
                ))
                .at(at)
                .for_step(&step.id),
            );
        }
    }
    warnings
}

fn risky_source(reference: &str) -> Option<&'static str> {
    if reference.starts_with("steps.") {
        Some("a step output")
    } else if reference.starts_with("args.") {
        Some("a run argument")
    } else {
        None
    }
}

/// The expressions of the `{{ … }}` blocks of `template` whose last filter
/// is not `shq`.
fn unquoted_expressions(template: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let expression = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        let last_filter = expression
            .rsplit_once('|')
            .map(|(_, filter)| filter.trim())
            .unwrap_or("");
        if last_filter != "shq" && !last_filter.starts_with("shq(") {
            found.push(expression);
        }
        rest = &after[end + 2..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(yaml: &str) -> Vec<String> {
        let workflow = crate::workflow::load_from_source(
            yaml,
            "wf.yaml",
            std::path::Path::new("."),
            crate::workflow::Format::Yaml,
            &["echo", "wordcount"],
        )
        .unwrap();
        shell_warnings(&workflow)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn unquoted_outputs_and_args_in_scripts_are_named() {
        let found = warnings(
            "name: w\nargs: {type: object, properties: {who: {type: string}}}\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: [a]\n    run: |\n      echo {{ steps.a.output.stdout }}\n      echo {{ args.who | shq }} {{ run.id }}\n      echo {{ args.who|upper }}\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("wf.yaml:9:")
                && found[0].contains("step 'b'")
                && found[0].contains("a step output")
                && found[0].contains("{{ steps.a.output.stdout | shq }}"),
            "{found:?}"
        );
        assert!(found[1].contains("a run argument"), "{found:?}");
    }

    #[test]
    fn quoted_values_and_function_steps_are_fine() {
        assert!(warnings(
            "name: w\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: [a]\n    run: echo {{ steps.a.output.stdout | shq }}\n  - id: c\n    needs: [a]\n    type: function\n    component: echo\n    with: {text: '{{ steps.a.output.stdout }}'}\n",
        )
        .is_empty());
    }
}
