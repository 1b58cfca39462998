//! `wfhost validate` and `wfhost graph`: static views of a workflow file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::run::load_workflow;
use crate::engine::grants::{model_reach, step_timeout};
use crate::engine::step_types::component_of;

/// Arguments of `wfhost validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow file (`.yaml`, `.yml` or `.json`).
    file: PathBuf,
    /// Print the validated steps as JSON.
    #[arg(long)]
    json: bool,
    /// Compile every component the workflow names into the cache, so the
    /// first run starts at once. Validation always does (it checks each
    /// component's world and imports on the compiled component); the flag
    /// says so explicitly.
    #[arg(long)]
    precompile: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Output format of `wfhost graph`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart (renders on GitHub).
    Mermaid,
    /// Graphviz dot.
    Dot,
    /// Indented text for a terminal: steps in run order, each with its
    /// phase and needs.
    Text,
    /// JSON: the steps in run order with their phase, needs and depth.
    Json,
}

/// Arguments of `wfhost graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Workflow file (`.yaml`, `.yml` or `.json`).
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: GraphFormat,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

/// `wfhost validate`.
pub fn validate(home: &Path, config: Option<&Path>, args: ValidateArgs) -> Result<ExitCode> {
    let workflow = load_workflow(Some(home), &args.file)?;
    let ceiling = super::load_ceiling(home, config)?;
    let grants = super::check_grants(home, &workflow, ceiling.as_ref())?;
    // Every component the workflow names, checked (and compiled into the
    // cache) the way `wfhost plugin check` does.
    let runtime = crate::app::runtime(home)?;
    let tokio = super::tokio_runtime()?;
    // `--precompile` is what this does in any case (see its doc).
    let _ = args.precompile;
    let problems = crate::app::plugins::check_workflow(&runtime, &tokio, &workflow);
    if !problems.is_empty() {
        return Err(crate::app::InvalidWorkflow(problems).into());
    }
    let warnings = crate::workflow::lint::shell_warnings(&workflow);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let steps: Vec<_> = workflow
        .def
        .steps
        .iter()
        .zip(&grants)
        .map(|(step, grants)| {
            json!({
                "id": step.id,
                "phase": step.phase,
                "component": component_of(&workflow, step),
                "needs": step.needs,
                "timeout_ms": step_timeout(&workflow, step, grants).as_millis() as u64,
                "grants": grants.to_json(),
                "model": model_reach(&workflow, step)
                    .and_then(Result::ok)
                    .map(|reach| reach.to_json()),
            })
        })
        .collect();
    if args.json {
        let doc = json!({
            "valid": true,
            "workflow": workflow.def.name,
            "file": workflow.file_name,
            "ceiling": ceiling.as_ref().map(|c| c.source.clone()),
            "warnings": warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "read_as": workflow.readings.iter().map(|r| json!({
                "place": r.place,
                "written": r.written,
                "read_as": r.read_as,
            })).collect::<Vec<_>>(),
            "steps": steps,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: workflow '{}' is valid ({} steps)",
        workflow.file_name,
        workflow.def.name,
        workflow.def.steps.len()
    );
    if !workflow.readings.is_empty() {
        println!("read as (seed spellings → the wfhost form):");
        for reading in &workflow.readings {
            println!(
                "  {}: {} → {}",
                reading.place,
                crate::cli::terminal::safe_line(&reading.written, 120),
                crate::cli::terminal::safe_line(&reading.read_as, 200)
            );
        }
    }
    if let Some(ceiling) = &ceiling {
        println!("operator ceiling: {}", ceiling.source.display());
    }
    println!("effective grants:");
    for (step, grants) in workflow.def.steps.iter().zip(&grants) {
        let component = component_of(&workflow, step);
        let component = component
            .rsplit('/')
            .next()
            .unwrap_or(&component)
            .to_string();
        println!("  {:<20} {:<10} {}", step.id, component, grants.summary());
        if let Some(Ok(reach)) = model_reach(&workflow, step) {
            println!("  {:<20} {:<10} model: {}", "", "", reach.summary());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wfhost graph`.
pub fn graph(home: &Path, args: GraphArgs) -> Result<ExitCode> {
    let workflow = load_workflow(Some(home), &args.file)?;
    let format = if args.json {
        GraphFormat::Json
    } else {
        args.format
    };
    let text = match format {
        GraphFormat::Mermaid => crate::workflow::graph::to_mermaid(&workflow.def),
        GraphFormat::Dot => crate::workflow::graph::to_dot(&workflow.def),
        GraphFormat::Text => crate::workflow::graph::to_text(&workflow.def),
        GraphFormat::Json => {
            serde_json::to_string_pretty(&crate::workflow::graph::to_json(&workflow.def))?
        }
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
