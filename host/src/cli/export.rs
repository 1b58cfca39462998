//! `wfhost export`: a run's whole folder (per-step input, output, events
//! and summary) written from the store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::engine::export::export_run;

/// Arguments of `wfhost export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Folder to write (created; must be empty or absent unless `--force`):
    /// run.json, definition.yaml, events.jsonl and
    /// steps/<step>/{input.json,output.json,events.jsonl,summary.md}.
    dir: PathBuf,
    /// Write into a folder that already holds files (same names are replaced).
    #[arg(long)]
    force: bool,
    /// Print what was written as JSON: `{"run_id", "dir", "steps", "events"}`.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost export`.
pub fn export(home: &Path, args: ExportArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    if !args.force && holds_files(&args.dir)? {
        return Err(super::Invalid(format!(
            "{} exists and is not empty (pass --force to write into it)",
            args.dir.display()
        ))
        .into());
    }
    let workflow = match super::control::pinned_workflow(&store, &run_id) {
        Ok(workflow) => Some(workflow),
        Err(error) => {
            eprintln!("warning: {error:#}; summaries leave out the step kinds' sections");
            None
        }
    };
    let exported = export_run(&*store, workflow.as_ref(), &run_id, &args.dir)?;
    if args.json {
        let done = serde_json::json!({
            "run_id": run_id,
            "dir": args.dir,
            "steps": exported.steps,
            "events": exported.events,
        });
        super::say::out_line(&done.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "exported run {run_id} to {}: {} steps, {} events",
        args.dir.display(),
        exported.steps,
        exported.events
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `dir` exists and holds anything (a file in its place counts).
fn holds_files(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", dir.display())),
    }
}
