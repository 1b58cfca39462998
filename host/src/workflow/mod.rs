//! Workflow files: model, parsing, validation, graph, templates.
//!
//! Pure code: the only I/O is reading the workflow file ([`load`]) and
//! checking that the `.wasm` files it names exist.
//!
//! Data flow: [`load()`] reads a file, [`parse_str`] turns it into the
//! [`Workflow`] model, [`validate()`] checks it and builds its [`Graph`];
//! [`Templates`] render step configuration at run time, and
//! [`resolve_args`] checks a run's arguments against the `args` schema.

pub mod args;
pub mod diag;
pub mod graph;
pub mod load;
mod locate;
pub mod model;
pub mod parse;
pub mod template;
pub mod validate;

pub use args::{coerce_cli_arg, resolve_args};
pub use diag::{Diagnostic, Diagnostics, Location};
pub use graph::{to_dot, to_mermaid, Graph};
pub use load::{load, load_from_source, parse_duration, LoadedWorkflow};
pub use model::{Access, FileGrant, Grants, Phase, RunConfig, Step, Workflow};
pub use parse::{parse_str, Format};
pub use template::{references, Templates};
pub use validate::{step_kind, validate, StepKind};
#[cfg(test)]
mod scratch {
    #[test]
    fn show() {
        for (f, src) in [
            (
                "a.yaml",
                "name: x\nsteps:\n  - id: a\n    run: x\n    bad: 1\n",
            ),
            ("a.yaml", "name: x\nsteps:\n  - id: a\n  run: [\n"),
            (
                "a.yaml",
                "name: x\nsteps:\n  - id: a\n    run: x\n    needs: b\n",
            ),
            (
                "a.yaml",
                "name: x\nsteps:\n  - id: a\n    grants: {files: [{path: x, access: rwx}]}\n",
            ),
            (
                "a.json",
                "{\"name\": \"x\", \"steps\": [{\"id\": \"a\", \"bad\": 1}]}",
            ),
            ("a.json", "{\"name\": \"x\", \"steps\": [{\"id\": \"a\"}]"),
            ("a.json", "{\"name\": \"x\"}"),
        ] {
            let fmt = super::Format::from_path(std::path::Path::new(f));
            println!("{}", super::parse_str(src, f, fmt).unwrap_err());
        }
        let t = super::Templates::new();
        println!(
            "{}",
            t.render_str(
                "{{ steps.a.output | foo }}",
                &serde_json::json!({"steps": {"a": {"output": 1}}})
            )
            .unwrap_err()
        );
        println!(
            "{}",
            t.render_str("{{ 1 / 0 }}", &serde_json::json!({}))
                .unwrap_err()
        );
        println!(
            "{}",
            t.render_str("{{ x.y.z }}", &serde_json::json!({"x": {"y": null}}))
                .unwrap_err()
        );
        println!(
            "{}",
            t.render_str("{{ x.y.z }}", &serde_json::json!({"x": {"y": "s"}}))
                .unwrap_err()
        );
        println!(
            "{}",
            t.render_str(
                "{% for a in x %}{{ a }}{% endfor %}",
                &serde_json::json!({"x": 5})
            )
            .unwrap_err()
        );
        let wf = super::parse_str(
            "name: x\nsteps:\n  - {id: a, run: x}\n",
            "w.yaml",
            super::Format::Yaml,
        )
        .unwrap();
        println!("{}", super::to_mermaid(&wf));
    }
}
