//! `wfhost workflows`: the workflows that have runs (or the workflow files
//! of a directory), each with its executions, success rate and average
//! duration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use super::say::out_line;
use super::terminal::safe_line;
use super::Invalid;
use crate::store::{RunRecord, RunStatus};

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

/// The runs of one workflow, summed up.
#[derive(Default)]
struct Stats {
    executions: u64,
    completed: u64,
    failed: u64,
    finished: u64,
    total_ms: u64,
    timed: u64,
    last_run_at: Option<String>,
    path: Option<String>,
}

impl Stats {
    fn add(&mut self, run: &RunRecord) {
        self.executions += 1;
        match run.status {
            RunStatus::Completed | RunStatus::CompletedWithErrors => {
                self.completed += 1;
                self.finished += 1;
            }
            RunStatus::Failed | RunStatus::Cancelled => {
                self.failed += 1;
                self.finished += 1;
            }
            _ => {}
        }
        if let (Some(start), Some(end)) = (&run.started_at, &run.finished_at) {
            if let (Ok(start), Ok(end)) = (
                chrono::DateTime::parse_from_rfc3339(start),
                chrono::DateTime::parse_from_rfc3339(end),
            ) {
                self.total_ms += (end - start).num_milliseconds().max(0) as u64;
                self.timed += 1;
            }
        }
        if self.last_run_at.as_deref() < Some(run.created_at.as_str()) {
            self.last_run_at = Some(run.created_at.clone());
            self.path = Some(run.workflow_path.clone());
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "executions": self.executions,
            "completed": self.completed,
            "failed": self.failed,
            "success_rate": (self.finished > 0).then(|| self.completed as f64 / self.finished as f64),
            "average_duration_ms": (self.timed > 0).then(|| self.total_ms / self.timed),
            "last_run_at": self.last_run_at,
        })
    }
}

/// `wfhost workflows`.
pub fn workflows(home: &Path, args: WorkflowsArgs) -> Result<ExitCode> {
    let runs = if crate::app::home::has_store(home) {
        super::open_store(home)?.runs()?
    } else {
        Vec::new()
    };
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    for run in &runs {
        stats.entry(run.workflow.clone()).or_default().add(run);
    }
    let mut rows: Vec<Value> = Vec::new();
    match &args.dir {
        Some(dir) => {
            for (path, def) in workflow_files(dir)? {
                let own = stats.get(&def.name);
                let mut row = own
                    .map(Stats::to_json)
                    .unwrap_or_else(|| Stats::default().to_json());
                row["name"] = json!(def.name);
                row["path"] = json!(path.display().to_string());
                row["version"] = json!(def.version);
                row["description"] = json!(def.description);
                rows.push(row);
            }
        }
        None => {
            for (name, own) in &stats {
                let mut row = own.to_json();
                row["name"] = json!(name);
                row["path"] = json!(own.path);
                row["version"] = Value::Null;
                row["description"] = Value::Null;
                rows.push(row);
            }
        }
    }
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

/// The workflow files directly in `dir` that parse, in name order (files
/// that do not parse as workflows are left out).
fn workflow_files(dir: &Path) -> Result<Vec<(PathBuf, crate::workflow::model::Workflow)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Invalid(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    paths.sort();
    let mut found = Vec::new();
    for path in paths {
        let Ok(text) = crate::workflow::load::read_bounded(&path) else {
            continue;
        };
        let format = crate::workflow::Format::from_path(&path);
        let name = path.display().to_string();
        if let Ok(mut def) = crate::workflow::parse::parse_str(&text, &name, format) {
            if def.name.is_empty() {
                def.name = def.id.clone().unwrap_or_default();
            }
            if !def.name.is_empty() {
                found.push((path, def));
            }
        }
    }
    Ok(found)
}
