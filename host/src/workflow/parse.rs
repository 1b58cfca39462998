//! Parsing a workflow document (YAML or JSON) into the [`Workflow`] model,
//! with `file:line:col` diagnostics for syntax errors and unknown keys.

use std::path::Path;

use super::diag::{Diagnostic, Diagnostics, Location};
use super::model::Workflow;

/// The syntax of a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML 1.2 (the default for any extension other than `.json`).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// Chooses the format by extension: `.json` (any case) is JSON, anything
    /// else is YAML.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses `source` (the content of `file_name`) as a workflow.
///
/// Errors carry `file:line:col` when the parser reports a position. Only the
/// document structure is checked here; see [`super::validate::validate`] for
/// the semantic checks.
pub fn parse_str(source: &str, file_name: &str, format: Format) -> Result<Workflow, Diagnostics> {
    if is_blank(source, format) {
        return Err(Diagnostic::new(
            "the workflow file is empty: expected a document with `name` and `steps`",
        )
        .at(Location::file(file_name))
        .into());
    }
    match format {
        Format::Yaml => serde_yaml::from_str(source).map_err(|e| yaml_error(&e, file_name)),
        Format::Json => serde_json::from_str(source).map_err(|e| json_error(&e, file_name)),
    }
}

/// True when the document has no content (only whitespace, or only comments
/// and document markers in YAML).
fn is_blank(source: &str, format: Format) -> bool {
    match format {
        Format::Json => source.trim().is_empty(),
        Format::Yaml => source.lines().all(|line| {
            let t = line.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        }),
    }
}

fn yaml_error(err: &serde_yaml::Error, file_name: &str) -> Diagnostics {
    let message = err.to_string();
    let location = match err.location() {
        Some(loc) => Location::new(file_name, loc.line(), loc.column()),
        None => Location::file(file_name),
    };
    let message = clean_message(&message, location.line, location.col);
    Diagnostic::new(message).at(location).into()
}

fn json_error(err: &serde_json::Error, file_name: &str) -> Diagnostics {
    let message = err.to_string();
    let (line, col) = (err.line(), err.column());
    let location = if line == 0 {
        Location::file(file_name)
    } else {
        Location::new(file_name, line, col)
    };
    let message = clean_message(&message, line, col);
    Diagnostic::new(message).at(location).into()
}

/// Removes the parser's own ` at line L column C` (or ` at position N`) text
/// when it repeats the location we print in front, and the root path `.: `
/// prefix serde_yaml sometimes adds.
fn clean_message(message: &str, line: usize, col: usize) -> String {
    let mut out = message.replace(&format!(" at line {line} column {col}"), "");
    if let Some(start) = out.find(" at position ") {
        let rest = &out[start + " at position ".len()..];
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            out.replace_range(start..start + " at position ".len() + digits, "");
        }
    }
    let out = out.trim();
    out.strip_prefix(".: ").unwrap_or(out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::grants::files::Access;

    fn yaml_err(src: &str) -> Diagnostic {
        let mut ds = parse_str(src, "wf.yaml", Format::Yaml).expect_err("should fail");
        assert_eq!(ds.len(), 1);
        ds.0.remove(0)
    }

    fn json_err(src: &str) -> Diagnostic {
        let mut ds = parse_str(src, "wf.json", Format::Json).expect_err("should fail");
        assert_eq!(ds.len(), 1);
        ds.0.remove(0)
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("B.JSON")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a.yaml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.yml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("noext")), Format::Yaml);
    }

    #[test]
    fn parses_full_yaml() {
        let src = r#"
name: demo
version: 1.2
description: a demo
phases:
  - id: build
    name: Build
args:
  type: object
  properties:
    who: {type: string, default: world}
config:
  parallelism: 2
  timeout: 30s
plugins:
  upper: plugins/upper.wasm
steps:
  - id: a
    name: Step A
    phase: build
    run: echo hi
    grants:
      files:
        - path: ./src
        - path: ./out
          access: read-write
      env: [HOME]
      exec: [echo]
    timeout: 5s
  - id: b
    type: upper
    needs: [a]
    with:
      text: "{{ steps.a.output.stdout }}"
"#;
        let wf = parse_str(src, "wf.yaml", Format::Yaml).unwrap();
        assert_eq!(wf.name, "demo");
        assert_eq!(wf.version.as_deref(), Some("1.2"));
        assert_eq!(wf.phases[0].id, "build");
        assert_eq!(wf.config.parallelism, Some(2));
        assert_eq!(wf.config.timeout.as_deref(), Some("30s"));
        assert_eq!(wf.plugins["upper"], "plugins/upper.wasm");
        assert_eq!(wf.steps.len(), 2);
        let a = &wf.steps[0];
        assert_eq!(a.run.as_deref(), Some("echo hi"));
        assert_eq!(a.grants.files[0].access, Access::Read);
        assert_eq!(a.grants.files[1].access, Access::ReadWrite);
        assert_eq!(a.grants.env, vec!["HOME"]);
        assert_eq!(a.grants.exec, vec!["echo"]);
        let b = &wf.steps[1];
        assert_eq!(b.step_type.as_deref(), Some("upper"));
        assert_eq!(b.needs, vec!["a"]);
        assert_eq!(
            b.with.as_ref().unwrap()["text"],
            "{{ steps.a.output.stdout }}"
        );
    }

    #[test]
    fn parses_json() {
        let src = r#"{
  "name": "j",
  "version": 3,
  "steps": [
    {"id": "a", "run": "true"},
    {"id": "b", "needs": ["a"], "type": "function", "component": "wordcount"}
  ]
}"#;
        let wf = parse_str(src, "wf.json", Format::Json).unwrap();
        assert_eq!(wf.name, "j");
        assert_eq!(wf.version.as_deref(), Some("3"));
        assert_eq!(wf.steps[1].component.as_deref(), Some("wordcount"));
        assert_eq!(wf.steps[1].needs, vec!["a"]);
    }

    #[test]
    fn accepts_key_and_dependencies_aliases() {
        let src = "name: x\nphases:\n  - key: p1\nsteps:\n  - key: a\n    run: 'true'\n  - key: b\n    dependencies: [a]\n    run: 'true'\n";
        let wf = parse_str(src, "wf.yaml", Format::Yaml).unwrap();
        assert_eq!(wf.phases[0].id, "p1");
        assert_eq!(wf.steps[0].id, "a");
        assert_eq!(wf.steps[1].id, "b");
        assert_eq!(wf.steps[1].needs, vec!["a"]);
    }

    #[test]
    fn yaml_syntax_error_has_line_and_col_and_no_duplicate_position() {
        let d = yaml_err("name: x\nsteps:\n  - id: a\n   bad: [\n");
        let loc = d.location.clone().unwrap();
        assert_eq!(loc.file, "wf.yaml");
        assert!(loc.line >= 3, "{loc:?}");
        assert!(loc.col >= 1);
        let text = d.to_string();
        assert!(text.starts_with(&format!("wf.yaml:{}:{}: ", loc.line, loc.col)));
        assert!(
            !d.message
                .contains(&format!("at line {} column {}", loc.line, loc.col)),
            "{text}"
        );
    }

    #[test]
    fn yaml_unknown_key_names_key_and_location() {
        let d = yaml_err("name: x\nsteps:\n  - id: a\n    run: 'true'\n    nedds: [b]\n");
        assert_eq!(d.location, Some(Location::new("wf.yaml", 5, 5)));
        assert!(d.message.contains("unknown field `nedds`"), "{}", d.message);
        assert!(d.message.contains("steps[0]"), "{}", d.message);
        assert!(!d.message.contains("line 5"), "{}", d.message);
    }

    #[test]
    fn yaml_unknown_top_level_key() {
        let d = yaml_err("name: x\nstesp: []\nsteps: []\n");
        assert_eq!(d.location, Some(Location::new("wf.yaml", 2, 1)));
        assert!(d.message.contains("unknown field `stesp`"), "{}", d.message);
    }

    #[test]
    fn yaml_unknown_grant_key() {
        let d =
            yaml_err("name: x\nsteps:\n  - id: a\n    run: 'true'\n    grants:\n      net: [x]\n");
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(6));
        assert!(d.message.contains("unknown field `net`"), "{}", d.message);
    }

    #[test]
    fn yaml_missing_steps() {
        let d = yaml_err("name: x\n");
        assert!(d.message.contains("missing field `steps`"), "{}", d.message);
        assert_eq!(d.location.as_ref().unwrap().file, "wf.yaml");
    }

    #[test]
    fn yaml_wrong_type() {
        let d = yaml_err("name: x\nsteps:\n  - id: a\n    needs: 5\n");
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(4));
        assert!(d.message.contains("invalid type"), "{}", d.message);
    }

    #[test]
    fn json_syntax_error_has_line_and_col() {
        let d = json_err("{\n  \"name\": \"x\",\n  \"steps\": [\n    {\"id\": \"a\",, }\n  ]\n}");
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(4));
        assert!(d.location.as_ref().unwrap().col > 1);
        assert!(!d.message.contains("at line"), "{}", d.message);
        assert!(d.to_string().starts_with("wf.json:4:"), "{d}");
    }

    #[test]
    fn json_unknown_key_names_key_and_location() {
        let d = json_err(
            "{\n  \"name\": \"x\",\n  \"steps\": [\n    {\"id\": \"a\", \"bogus\": 1}\n  ]\n}",
        );
        assert!(d.message.contains("unknown field `bogus`"), "{}", d.message);
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(4));
        assert!(!d.message.contains("line 4"), "{}", d.message);
    }

    #[test]
    fn empty_files_are_a_clear_error() {
        for src in ["", "   \n", "# only a comment\n---\n"] {
            let d = yaml_err(src);
            assert_eq!(d.location, Some(Location::file("wf.yaml")));
            assert!(d.message.contains("empty"), "{}", d.message);
            assert_eq!(
                d.to_string(),
                "wf.yaml: the workflow file is empty: expected a document with `name` and `steps`"
            );
        }
        let d = json_err("\n");
        assert!(d.message.contains("empty"), "{}", d.message);
    }

    #[test]
    fn non_mapping_document_is_an_error() {
        let d = yaml_err("- a\n- b\n");
        assert!(d.message.contains("invalid type"), "{}", d.message);
    }

    #[test]
    fn bad_version_type_is_reported() {
        let d = yaml_err("name: x\nversion: [1]\nsteps: []\n");
        assert!(
            d.message.contains("expected a string or number"),
            "{}",
            d.message
        );
    }

    #[test]
    fn clean_message_strips_repeated_position() {
        assert_eq!(
            clean_message("oops at line 3 column 4", 3, 4),
            "oops".to_string()
        );
        assert_eq!(
            clean_message(
                "oops at line 3 column 4, while parsing at line 1 column 1",
                3,
                4
            ),
            "oops, while parsing at line 1 column 1".to_string()
        );
        assert_eq!(clean_message("oops at position 12", 0, 0), "oops");
        assert_eq!(clean_message(".: bad", 0, 0), "bad");
    }
}
