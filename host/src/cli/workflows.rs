//! `wfhost workflows`: the workflows that have runs (or the workflow files
//! of a directory), each with its executions, success rate and average
//! duration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use super::say::out_line;
use super::terminal::safe_line;
use crate::app::registry;

/// Arguments of `wfhost workflows`.
#[derive(Debug, clap::Args)]
pub struct WorkflowsArgs {
    /// List the workflow files (`.yaml`, `.yml`, `.json`) of this directory
    /// instead, with the stats of their runs (matched by name).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print JSON: a list of {name, path, version, description,
    /// executions, completed, failed, success_rate, average_duration_ms,
    /// last_run_at}.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost workflows`.
pub fn workflows(home: &Path, args: WorkflowsArgs) -> Result<ExitCode> {
    let runs = if super::store_exists(home)? {
        super::open_store(home)?.runs()?
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = match &args.dir {
        Some(dir) => registry::files_with_stats(dir, &runs)?,
        None => registry::stats(&runs),
    };
    if args.json {
        out_line(&serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        match &args.dir {
            Some(dir) => eprintln!("no workflow files in {}", dir.display()),
            None => eprintln!(
                "no runs recorded in {} yet (`wfhost workflows --dir DIR` lists the workflow files of a directory)",
                home.display()
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    out_line(&format!(
        "{:<32} {:>10} {:>8} {:>12}  {}",
        "WORKFLOW", "EXECUTIONS", "SUCCESS", "AVG TIME", "FILE"
    ));
    for row in &rows {
        let rate = row["success_rate"]
            .as_f64()
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let average = row["average_duration_ms"]
            .as_u64()
            .map(|ms| crate::step::units::humanize(std::time::Duration::from_millis(ms)))
            .unwrap_or_else(|| "-".into());
        out_line(&format!(
            "{:<32} {:>10} {:>8} {:>12}  {}",
            safe_line(row["name"].as_str().unwrap_or_default(), 32),
            row["executions"],
            rate,
            average,
            safe_line(row["path"].as_str().unwrap_or_default(), 200)
        ));
    }
    Ok(ExitCode::SUCCESS)
}
