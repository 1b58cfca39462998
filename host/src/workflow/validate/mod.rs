//! Semantic checks of a parsed workflow. Every problem is collected (not just
//! the first), each naming its step and, where the text can be found, its
//! `file:line:col`.
//!
//! This module checks ids, needs, phases and the graph; the workflow's
//! declarations (`declarations`), what each step type requires
//! (`step_types`) and templates (`templates`) have their own files.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

mod component_file;
mod declarations;
mod step_types;
mod templates;

pub use templates::MAX_CONDITION_CHARS;

use super::diag::{Diagnostic, Diagnostics, Location};
use super::graph::{cycle_text, Graph};
use super::locate::Locator;
use super::model::{Step, Workflow};
use crate::step::units::parse_duration;

/// The built-in step types (besides the workflow's `plugins`).
pub const BUILTIN_TYPES: &[&str] = &["script", "function", "agent"];

/// How a (validated) step is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The built-in script plugin (`run`, or `type: script`).
    Script,
    /// `type: function`: a call into `component` (a built-in name or a
    /// `.wasm` path as written in the file).
    Function {
        /// The component as written (built-in name or path).
        component: String,
    },
    /// `type: agent`: the built-in agent component, serving an agent of
    /// the workflow.
    Agent,
    /// A step type registered under `plugins`.
    Plugin {
        /// The key in `plugins`.
        name: String,
    },
}

/// The kind of `step`. Meant for validated workflows: it does not check
/// anything (a `function` step without `component` gets an empty one).
pub fn step_kind(step: &Step) -> StepKind {
    match step.step_type.as_deref() {
        None | Some("script") => StepKind::Script,
        Some("function") => StepKind::Function {
            component: step.component.clone().unwrap_or_default(),
        },
        Some("agent") => StepKind::Agent,
        Some(other) => StepKind::Plugin {
            name: other.to_string(),
        },
    }
}

/// True when `id` is a valid step id: non-empty, letters, digits, `_`, `-`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks `wf` (parsed from `source`, the content of `file_name`, found in
/// `workflow_dir`) and returns its graph, or every problem found.
///
/// `builtin_components` are the component names `type: function` steps may
/// use without a `.wasm` path.
pub fn validate(
    wf: &Workflow,
    source: &str,
    file_name: &str,
    workflow_dir: &Path,
    builtin_components: &[&str],
) -> Result<Graph, Diagnostics> {
    let mut checker = Checker {
        wf,
        loc: Locator::new(source, file_name, wf),
        dir: workflow_dir,
        builtins: builtin_components,
        out: Diagnostics::new(),
    };
    checker.check_top_level();
    checker.check_config();
    checker.check_phases();
    checker.check_agents();
    checker.check_plugins();
    checker.check_args_schema();
    let graph = checker.check_steps();
    checker.out.into_result(graph)
}

struct Checker<'a> {
    wf: &'a Workflow,
    loc: Locator<'a>,
    dir: &'a Path,
    builtins: &'a [&'a str],
    out: Diagnostics,
}

/// The path of a `.wasm` file as written in the workflow, resolved against
/// the workflow's directory.
fn resolve(dir: &Path, path: &str) -> std::path::PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

impl Checker<'_> {
    fn report(&mut self, location: Location, step: Option<&str>, message: impl Into<String>) {
        let mut d = Diagnostic::new(message).at(location);
        if let Some(step) = step {
            d = d.for_step(step);
        }
        self.out.push(d);
    }

    fn key_loc(&self, key: &str) -> Location {
        self.loc.key(key).unwrap_or_else(|| self.loc.file())
    }

    fn check_top_level(&mut self) {
        if self.wf.name.trim().is_empty() {
            let at = self.key_loc("name");
            self.report(at, None, "the workflow `name` is empty");
        }
        if self.wf.steps.is_empty() {
            let at = self.key_loc("steps");
            self.report(at, None, "the workflow has no steps");
        }
    }

    fn check_steps(&mut self) -> Graph {
        let wf = self.wf;
        // ids
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, step) in wf.steps.iter().enumerate() {
            if step.id.is_empty() {
                let at = self.loc.step(i);
                self.report(at, None, format!("step #{} has an empty id", i + 1));
                continue;
            }
            if !is_valid_id(&step.id) {
                let at = self.loc.step(i);
                self.report(
                    at,
                    Some(&step.id),
                    "invalid step id: use only letters, digits, '_' and '-'",
                );
            }
            if let Some(&j) = first.get(step.id.as_str()) {
                let at = self.loc.step(i);
                let prev = self.loc.step(j);
                self.report(
                    at,
                    Some(&step.id),
                    format!("duplicate step id '{}' (first defined at {prev})", step.id),
                );
            } else {
                first.insert(&step.id, i);
            }
        }
        let graph = Graph::new(wf);
        for (i, step) in wf.steps.iter().enumerate() {
            self.check_needs(i, step, &first);
            self.check_phase(i, step);
            self.check_type(i, step);
            if let Some(timeout) = &step.timeout {
                if let Err(e) = parse_duration(timeout) {
                    let at = self.loc.step_key(i, &["timeout"]);
                    self.report(at, Some(&step.id), format!("timeout: {e}"));
                }
            }
            if let Some(grace) = &step.kill_grace {
                if let Err(e) = crate::step::grants::check_kill_grace(grace) {
                    let at = self.loc.step_key(i, &["kill_grace"]);
                    self.report(at, Some(&step.id), e);
                }
            }
            self.check_labels(i, step);
            self.check_templates(i, step, &graph, &first);
        }
        if let Some(cycle) = graph.find_cycle() {
            let i = graph.index_of(&cycle[0]).unwrap_or(0);
            let at = self.loc.step(i);
            self.report(
                at,
                Some(&cycle[0]),
                format!("cycle: {} (each step needs the next)", cycle_text(&cycle)),
            );
        }
        graph
    }

    fn check_needs(&mut self, i: usize, step: &Step, ids: &HashMap<&str, usize>) {
        let mut seen = BTreeSet::new();
        for need in &step.needs {
            let problem = if need == &step.id {
                "needs itself".to_string()
            } else if !ids.contains_key(need.as_str()) {
                format!("needs unknown step '{need}'")
            } else if !seen.insert(need.as_str()) {
                format!("needs '{need}' more than once")
            } else {
                continue;
            };
            // Located only when reported: searching a long `needs` list
            // for each of its entries is quadratic.
            let at = self.loc.step_token(i, &["needs", "dependencies"], need);
            self.report(at, Some(&step.id), problem);
        }
    }

    fn check_labels(&mut self, i: usize, step: &Step) {
        if step.runs_on.len() > MAX_LABELS {
            let at = self.loc.step_key(i, &["runs_on", "runs-on"]);
            self.report(
                at,
                Some(&step.id),
                format!("runs_on: at most {MAX_LABELS} labels"),
            );
        }
        for label in &step.runs_on {
            if !is_label(label) {
                let at = self.loc.step_token(i, &["runs_on", "runs-on"], label);
                self.report(
                    at,
                    Some(&step.id),
                    "runs_on: a label is 1 to 64 letters, digits, '_', '-' or '.'",
                );
            }
        }
    }

    fn check_phase(&mut self, i: usize, step: &Step) {
        let Some(phase) = &step.phase else { return };
        if self.wf.phases.is_empty() {
            return;
        }
        if !self.wf.phases.iter().any(|p| &p.id == phase) {
            let declared: Vec<&str> = self.wf.phases.iter().map(|p| p.id.as_str()).collect();
            let at = self.loc.step_key(i, &["phase"]);
            self.report(
                at,
                Some(&step.id),
                format!("unknown phase '{phase}' (declared: {})", list(&declared)),
            );
        }
    }
}

/// At most this many `runs_on` labels per step.
const MAX_LABELS: usize = 16;

/// Whether `label` can name a worker's label (`worker --labels`).
pub fn is_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::parse::{parse_str, Format};

    const BUILTINS: &[&str] = &["wordcount", "json-transform"];

    fn check_in(src: &str, format: Format, dir: &Path) -> Result<Graph, Vec<String>> {
        let file = if format == Format::Json {
            "wf.json"
        } else {
            "wf.yaml"
        };
        let wf = parse_str(src, file, format).map_err(|d| vec![d.to_string()])?;
        validate(&wf, src, file, dir, BUILTINS)
            .map_err(|ds| ds.iter().map(ToString::to_string).collect())
    }

    fn check(src: &str) -> Result<Graph, Vec<String>> {
        check_in(src, Format::Yaml, Path::new("/nonexistent-dir"))
    }

    fn errors(src: &str) -> Vec<String> {
        match check(src) {
            Ok(_) => panic!("expected errors for:\n{src}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_condition_has_a_length_limit() {
        let long = vec!["1 > 0"; 1000].join(" and ");
        let src = format!("name: x\nsteps:\n  - id: a\n    run: x\n    if: \"{long}\"\n");
        assert_eq!(
            one_error(&src),
            "wf.yaml:5:5: step 'a': `if` is 9995 characters long; a condition may have at most \
             4096 (compute a long one in an earlier step and test its output)"
        );
    }

    fn one_error(src: &str) -> String {
        let e = errors(src);
        assert_eq!(e.len(), 1, "{e:#?}");
        e.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn valid_workflow_gives_graph() {
        let g = check(
            "name: ok\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: [a]\n    run: echo {{ steps.a.output.stdout }}\n",
        )
        .unwrap();
        assert_eq!(g.topo_order(), vec![0, 1]);
    }

    #[test]
    fn valid_json_workflow() {
        let src = r#"{
  "name": "j",
  "args": {"type": "object", "properties": {"who": {"type": "string"}}},
  "steps": [
    {"id": "a", "run": "echo {{ args.who }}"},
    {"id": "b", "type": "function", "component": "wordcount", "needs": ["a"],
     "with": {"text": "{{ steps.a.output.stdout }}", "n": 3}}
  ]
}"#;
        let g = check_in(src, Format::Json, Path::new("/")).unwrap();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn invalid_and_empty_ids() {
        let e = errors("name: x\nsteps:\n  - id: 'a b'\n    run: x\n  - id: ''\n    run: x\n");
        assert_eq!(
            e,
            vec![
                "wf.yaml:3:5: step 'a b': invalid step id: use only letters, digits, '_' and '-'",
                "wf.yaml:5:5: step #2 has an empty id",
            ]
        );
    }

    #[test]
    fn duplicate_id_names_both_locations() {
        let e = one_error("name: x\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: x\n  - key: a\n    run: y\n");
        assert_eq!(
            e,
            "wf.yaml:7:5: step 'a': duplicate step id 'a' (first defined at wf.yaml:3:5)"
        );
    }

    #[test]
    fn unknown_need_points_at_the_name() {
        let e = one_error("name: x\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: x\n    needs:\n      - a\n      - zz\n");
        assert_eq!(e, "wf.yaml:9:9: step 'b': needs unknown step 'zz'");
    }

    #[test]
    fn unknown_need_in_json() {
        let src = "{\"name\": \"x\", \"steps\": [\n  {\"id\": \"a\", \"run\": \"x\"},\n  {\"id\": \"b\", \"run\": \"x\", \"dependencies\": [\"a\", \"zz\"]}\n]}";
        let e = check_in(src, Format::Json, Path::new("/")).unwrap_err();
        assert_eq!(e, vec!["wf.json:3:50: step 'b': needs unknown step 'zz'"]);
    }

    #[test]
    fn self_and_repeated_needs() {
        let e = errors(
            "name: x\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: x\n    needs: [b, a, a]\n",
        );
        assert_eq!(
            e,
            vec![
                "wf.yaml:7:13: step 'b': needs itself",
                "wf.yaml:7:16: step 'b': needs 'a' more than once",
            ]
        );
    }

    #[test]
    fn cycle_prints_the_path() {
        let e = one_error("name: x\nsteps:\n  - id: a\n    run: x\n    needs: [b]\n  - id: b\n    run: x\n    needs: [a]\n  - id: c\n    run: x\n");
        assert_eq!(
            e,
            "wf.yaml:3:5: step 'a': cycle: a → b → a (each step needs the next)"
        );
    }

    #[test]
    fn all_problems_are_collected() {
        let e =
            errors("name: x\nsteps:\n  - id: a\n    needs: [nope]\n  - id: a\n    type: weird\n");
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].ends_with("step 'a': duplicate step id 'a' (first defined at wf.yaml:3:5)"));
        assert!(e[1].ends_with("step 'a': needs unknown step 'nope'"));
        assert!(e[2].ends_with(
            "step 'a': no `type` and no `run`: add `run: <command>` for a script step, or a `type`"
        ));
        assert!(
            e[3].ends_with("step 'a': unknown step type 'weird' (known: script, function, agent)")
        );
    }

    #[test]
    fn phases_must_be_declared_and_unique() {
        let e = errors("name: x\nphases:\n  - id: p\n  - id: q\n  - id: p\nsteps:\n  - id: a\n    run: x\n    phase: r\n  - id: b\n    run: x\n    phase: q\n");
        assert_eq!(
            e,
            vec![
                "wf.yaml:3:5: duplicate phase id 'p'",
                "wf.yaml:9:5: step 'a': unknown phase 'r' (declared: p, q, p)",
            ]
        );
        // without declared phases, any phase name is fine
        assert!(check("name: x\nsteps:\n  - id: a\n    run: x\n    phase: anything\n").is_ok());
    }

    #[test]
    fn unknown_type_lists_known_types() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("up.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let src = "name: x\nplugins:\n  upper: up.wasm\nsteps:\n  - id: a\n    type: lower\n  - id: b\n    type: upper\n    with: {text: hi}\n";
        let e = check_in(src, Format::Yaml, dir.path()).unwrap_err();
        assert_eq!(
            e,
            vec![
                "wf.yaml:6:5: step 'a': unknown step type 'lower' (known: script, function, agent, upper)"
            ]
        );
        // A plugin named like a built-in is reported once, not listed twice.
        let src = "name: x\nplugins:\n  script: up.wasm\nsteps:\n  - id: a\n    type: scrpt\n";
        let e = check_in(src, Format::Yaml, dir.path()).unwrap_err();
        assert!(
            e.iter()
                .any(|line| line
                    .ends_with("unknown step type 'scrpt' (known: script, function, agent)")),
            "{e:?}"
        );
    }

    #[test]
    fn script_type_rules() {
        assert_eq!(
            one_error("name: x\nsteps:\n  - id: a\n    type: script\n"),
            "wf.yaml:4:5: step 'a': a script step needs `run` (the command or script to run)"
        );
        assert!(
            check("name: x\nsteps:\n  - id: a\n    type: script\n    with: {run: echo}\n").is_ok()
        );
        assert_eq!(
            one_error("name: x\nsteps:\n  - id: a\n    type: script\n    run: echo\n    with: {run: echo}\n"),
            "wf.yaml:5:5: step 'a': both `run` and `with.run` are given: keep one"
        );
        assert_eq!(
            one_error("name: x\nsteps:\n  - id: a\n    type: function\n    component: wordcount\n    run: echo\n"),
            "wf.yaml:6:5: step 'a': `run` is only for script steps, but the type is 'function'"
        );
    }

    #[test]
    fn function_component_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c/f.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let abs = dir.path().join("c/f.wasm");
        let ok = format!(
            "name: x\nsteps:\n  - {{id: a, type: function, component: wordcount}}\n  - {{id: b, type: function, component: c/f.wasm}}\n  - {{id: c, type: function, component: '{}'}}\n",
            abs.display()
        );
        assert!(check_in(&ok, Format::Yaml, dir.path()).is_ok());

        let bad = "name: x\nsteps:\n  - id: a\n    type: function\n  - id: b\n    type: function\n    component: nope\n  - id: c\n    type: function\n    component: missing.wasm\n  - id: d\n    run: x\n    component: wordcount\n";
        let e = check_in(bad, Format::Yaml, dir.path()).unwrap_err();
        let looked = dir.path().join("missing.wasm");
        assert_eq!(
            e,
            vec![
                "wf.yaml:4:5: step 'a': a function step needs `component` (a built-in component name or a path to a .wasm file)".to_string(),
                "wf.yaml:7:5: step 'b': unknown component 'nope' (built-in: wordcount, json-transform; or give a path to a .wasm file)".to_string(),
                format!("wf.yaml:10:5: step 'c': component file 'missing.wasm' not found (looked for {})", looked.display()),
                "wf.yaml:13:5: step 'd': `component` is only for `type: function` steps".to_string(),
            ]
        );
    }

    #[test]
    fn plugin_paths_must_exist_and_be_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let src = "name: x\nplugins:\n  a: a.wasm\n  b: b.txt\n  script: s.wasm\nsteps:\n  - {id: s, run: x}\n";
        let e = check_in(src, Format::Yaml, dir.path()).unwrap_err();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert_eq!(
            e[0],
            format!(
                "wf.yaml:3:3: plugin 'a': file 'a.wasm' not found (looked for {})",
                dir.path().join("a.wasm").display()
            )
        );
        assert_eq!(
            e[1],
            "wf.yaml:4:3: plugin 'b': path 'b.txt' is not a .wasm file"
        );
        assert_eq!(
            e[2],
            "wf.yaml:5:3: plugin 'script' has the name of a built-in step type"
        );
        assert!(e[3].starts_with("wf.yaml:5:3: plugin 'script': file 's.wasm' not found"));
    }

    #[test]
    fn kill_grace_is_a_bounded_duration() {
        let e = errors("name: x\nconfig:\n  kill_grace: 2h\nsteps:\n  - id: a\n    run: x\n    kill_grace: soon\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!(
            e[0],
            "wf.yaml:3:3: config.kill_grace: '2h' is more than the most allowed, 1m"
        );
        assert!(
            e[1].starts_with("wf.yaml:7:5: step 'a': kill_grace: invalid duration 'soon': "),
            "{}",
            e[1]
        );
        assert!(check(
            "name: x\nconfig: {kill_grace: 5s}\nsteps:\n  - {id: a, run: x, kill_grace: 100ms}\n"
        )
        .is_ok());
    }

    #[test]
    fn timeouts_and_parallelism() {
        let e = errors("name: x\nconfig:\n  parallelism: 0\n  timeout: 5 parsecs\nsteps:\n  - id: a\n    run: x\n    timeout: soon\n");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert_eq!(e[0], "wf.yaml:3:3: config.parallelism must be at least 1");
        assert!(
            e[1].starts_with("wf.yaml:4:3: config.timeout: invalid duration '5 parsecs': "),
            "{}",
            e[1]
        );
        assert!(
            e[2].starts_with("wf.yaml:8:5: step 'a': timeout: invalid duration 'soon': "),
            "{}",
            e[2]
        );
        assert!(check("name: x\nconfig: {parallelism: 2, timeout: 1m}\nsteps:\n  - {id: a, run: x, timeout: 30s}\n").is_ok());
    }

    #[test]
    fn template_referencing_non_ancestor_step() {
        let e = errors("name: x\nsteps:\n  - id: a\n    run: x\n  - id: x\n    run: y\n  - id: report\n    needs: [a]\n    with:\n      run: |\n        echo {{ steps.a.output.stdout }}\n        echo {{ steps.x.output.stdout }}\n    type: script\n");
        assert_eq!(
            e,
            vec!["wf.yaml:12:17: step 'report': template references step 'x' which is not among its needs (add it to `needs`)"]
        );
    }

    #[test]
    fn template_transitive_need_is_fine() {
        assert!(check("name: x\nsteps:\n  - {id: a, run: x}\n  - {id: b, run: x, needs: [a]}\n  - {id: c, needs: [b], run: 'echo {{ steps.a.output.stdout }} {{ steps.b.status }}'}\n").is_ok());
    }

    #[test]
    fn template_reference_errors() {
        let e = errors("name: x\nargs:\n  type: object\n  properties:\n    who: {type: string}\nsteps:\n  - id: a\n    run: x\n  - id: b\n    needs: [a]\n    run: 'echo {{ steps.zz.output }} {{ args.whom }} {{ run.idd }} {{ foo }} {{ steps.a.outptu.x }} {{ steps.b.output }} {{ args.who }} {{ run.id }}'\n");
        assert_eq!(
            e,
            vec![
                "wf.yaml:11:41: step 'b': template references unknown arg 'whom' (declared: who)",
                "wf.yaml:11:71: step 'b': template references unknown variable 'foo' (known: args, steps, run, workflow, retry, progress)",
                "wf.yaml:11:57: step 'b': template references unknown run field 'idd' (known: id, workflow)",
                "wf.yaml:11:81: step 'b': template references 'steps.a.outptu.x': a step has only `output` and `status`",
                "wf.yaml:11:104: step 'b': template references step 'b' which is not among its needs (add it to `needs`)",
                "wf.yaml:11:19: step 'b': template references unknown step 'zz'",
            ]
        );
    }

    #[test]
    fn template_hyphenated_step_id_hint() {
        let e = errors("name: x\nsteps:\n  - {id: a-b, run: x}\n  - {id: c, needs: [a-b], run: 'echo {{ steps.a-b.output.x }}'}\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].ends_with(
                "step 'c': template references unknown variable 'b' (known: args, steps, run, workflow, retry, progress)"
            ),
            "{}",
            e[0]
        );
        assert!(e[1].ends_with("step 'c': template references unknown step 'a' (for an id with '-', write steps['a-b'])"), "{}", e[1]);
        assert!(check("name: x\nsteps:\n  - {id: a-b, run: x}\n  - {id: c, needs: [a-b], run: \"echo {{ steps['a-b'].output.x }}\"}\n").is_ok());
    }

    #[test]
    fn template_args_without_an_args_block_are_errors() {
        let e = one_error("name: x\nsteps:\n  - {id: a, run: 'echo {{ args.anything }}'}\n");
        assert!(
            e.contains("template references arg 'anything', but the workflow has no `args` block"),
            "{e}"
        );
        // A schema without `properties` is open: not checked.
        assert!(check(
            "name: x\nargs: {type: object}\nsteps:\n  - {id: a, run: 'echo {{ args.anything }}'}\n"
        )
        .is_ok());
    }

    #[test]
    fn template_syntax_error_is_reported() {
        let e = one_error(
            "name: x\nsteps:\n  - id: a\n    type: script\n    with:\n      run: 'echo {{ oops'\n",
        );
        assert!(
            e.starts_with(
                "wf.yaml:6:7: step 'a': with.run: template `echo {{ oops`: syntax error: "
            ),
            "{e}"
        );
    }

    #[test]
    fn templates_in_nested_with_values() {
        let e = one_error("name: x\nsteps:\n  - id: a\n    type: function\n    component: wordcount\n    with:\n      list: [ok, {deep: '{{ nope.x }}'}]\n");
        assert_eq!(
            e,
            "wf.yaml:7:29: step 'a': template references unknown variable 'nope' (known: args, steps, run, workflow, retry, progress)"
        );
    }

    #[test]
    fn args_schema_must_be_valid() {
        let e = one_error("name: x\nargs:\n  type: object\n  properties:\n    n: {type: numbr}\nsteps:\n  - {id: a, run: x}\n");
        assert!(
            e.starts_with("wf.yaml:2:1: args is not a valid JSON Schema"),
            "{e}"
        );
        let e = one_error("name: x\nargs: {type: string}\nsteps:\n  - {id: a, run: x}\n");
        assert_eq!(
            e,
            "wf.yaml:2:1: args schema must have `type: object`, not \"string\""
        );
        let e = one_error("name: x\nargs: 5\nsteps:\n  - {id: a, run: x}\n");
        assert_eq!(e, "wf.yaml:2:1: args must be a JSON Schema object");
    }

    #[test]
    fn empty_name_and_no_steps() {
        let e = errors("name: ''\nsteps: []\n");
        assert_eq!(
            e,
            vec![
                "wf.yaml:1:1: the workflow `name` is empty",
                "wf.yaml:2:1: the workflow has no steps",
            ]
        );
    }

    #[test]
    fn step_kinds() {
        let wf = parse_str(
            "name: x\nsteps:\n  - {id: a, run: x}\n  - {id: b, type: script, run: x}\n  - {id: c, type: function, component: wc}\n  - {id: d, type: upper}\n",
            "wf.yaml",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(step_kind(&wf.steps[0]), StepKind::Script);
        assert_eq!(step_kind(&wf.steps[1]), StepKind::Script);
        assert_eq!(
            step_kind(&wf.steps[2]),
            StepKind::Function {
                component: "wc".into()
            }
        );
        assert_eq!(
            step_kind(&wf.steps[3]),
            StepKind::Plugin {
                name: "upper".into()
            }
        );
    }

    #[test]
    fn valid_ids() {
        assert!(is_valid_id("a-B_9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a.b"));
        assert!(!is_valid_id("é"));
    }
}

#[cfg(test)]
mod agent_tests {
    use super::*;
    use crate::workflow::parse::{parse_str, Format};

    fn problems(src: &str, dir: &Path) -> Vec<String> {
        let wf = parse_str(src, "wf.yaml", Format::Yaml).unwrap();
        match validate(&wf, src, "wf.yaml", dir, &["echo"]) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn agent_steps_and_agents_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("replies.yaml"), "[]").unwrap();
        let ok = "name: a\nagents:\n  - id: rev\n    model: {provider: scripted, script: replies.yaml}\n    tools: [read, write_file]\n    policy: [{rules: {allow: ['read(**)']}}]\nsteps:\n  - id: s\n    type: agent\n    agent: rev\n    prompt: review {{ run.id }}\n";
        assert_eq!(problems(ok, dir.path()), Vec::<String>::new());

        let bad = "name: a\nagents:\n  - id: rev\n    model: {provider: scripted, script: missing.yaml}\n    tools: [teleport]\n    policy: [{}]\n  - id: rev\n    model: {provider: openai, base_url: 'http://x', model: m}\nsteps:\n  - id: s\n    type: agent\n    agent: nobody\n    output: yaml\n  - id: t\n    run: 'true'\n    prompt: hi\n";
        let all = problems(bad, dir.path()).join("\n");
        for expected in [
            "unknown tool 'teleport'",
            "scripted model file 'missing.yaml' does not exist",
            "policy 1 needs exactly one of `rules` or `plugin`",
            "duplicate agent id 'rev'",
            "step 's': unknown agent 'nobody' (declared: rev, rev)",
            "step 's': an agent step needs `prompt`",
            "step 's': output must be `text` or `json`, not 'yaml'",
            "step 't': `prompt` is only for `type: agent` steps",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }
}
