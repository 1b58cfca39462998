//! `wfhost validate` and `wfhost graph`: static views of a workflow file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::run::load_workflow;
use crate::engine::driver::{component_of, effective_grants};

/// Arguments of `wfhost validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow file (`.yaml`, `.yml` or `.json`).
    file: PathBuf,
    /// Print the validated steps as JSON.
    #[arg(long)]
    json: bool,
}

/// Output format of `wfhost graph`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart (renders on GitHub).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

/// Arguments of `wfhost graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Workflow file (`.yaml`, `.yml` or `.json`).
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: GraphFormat,
}

/// `wfhost validate`.
pub fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let workflow = load_workflow(&args.file)?;
    let steps: Vec<_> = workflow
        .def
        .steps
        .iter()
        .map(|step| {
            let grants = effective_grants(&workflow, step);
            json!({
                "id": step.id,
                "phase": step.phase,
                "component": component_of(&workflow, step),
                "needs": step.needs,
                "timeout": step.timeout.as_ref().or(workflow.def.config.timeout.as_ref()),
                "grants": {
                    "files": grants.files.iter().map(|(path, writable)| json!({
                        "path": path,
                        "access": if *writable { "read-write" } else { "read" },
                    })).collect::<Vec<_>>(),
                    "env": grants.env,
                    "exec": grants.exec,
                },
            })
        })
        .collect();
    if args.json {
        let doc = json!({ "valid": true, "workflow": workflow.def.name, "file": workflow.file_name, "steps": steps });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: workflow '{}' is valid ({} steps)",
        workflow.file_name,
        workflow.def.name,
        workflow.def.steps.len()
    );
    for step in &steps {
        let needs = step["needs"].as_array().map(|n| n.len()).unwrap_or(0);
        println!(
            "  {:<24} {:<12} needs {needs}  grants: {}",
            step["id"].as_str().unwrap_or_default(),
            step["component"]
                .as_str()
                .map(|c| c.rsplit('/').next().unwrap_or(c))
                .unwrap_or_default(),
            grants_line(&step["grants"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn grants_line(grants: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for file in grants["files"].as_array().into_iter().flatten() {
        parts.push(format!(
            "{} ({})",
            file["path"].as_str().unwrap_or_default(),
            file["access"].as_str().unwrap_or_default()
        ));
    }
    for key in ["env", "exec"] {
        let names: Vec<&str> = grants[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        if !names.is_empty() {
            parts.push(format!("{key}: {}", names.join(", ")));
        }
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join("; ")
    }
}

/// `wfhost graph`.
pub fn graph(args: GraphArgs) -> Result<ExitCode> {
    let workflow = load_workflow(&args.file)?;
    let text = match args.format {
        GraphFormat::Mermaid => crate::workflow::graph::to_mermaid(&workflow.def),
        GraphFormat::Dot => crate::workflow::graph::to_dot(&workflow.def),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
