//! The workflow registry: the workflows that have runs (or the workflow
//! files of a directory), each with executions, success rate and average
//! duration. Shared by `wfhost workflows` and `GET /api/workflows`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::app::Invalid;
use crate::store::{RunRecord, RunStatus};

/// The runs of one workflow, summed up.
#[derive(Default)]
pub struct Stats {
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
    /// Count one run.
    pub fn add(&mut self, run: &RunRecord) {
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

    /// The stats as JSON.
    pub fn to_json(&self) -> Value {
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

/// One row per workflow name that has runs, in name order.
pub fn stats(runs: &[RunRecord]) -> Vec<Value> {
    let mut by_name: BTreeMap<String, Stats> = BTreeMap::new();
    for run in runs {
        by_name.entry(run.workflow.clone()).or_default().add(run);
    }
    by_name
        .iter()
        .map(|(name, own)| {
            let mut row = own.to_json();
            row["name"] = json!(name);
            row["path"] = json!(own.path);
            row["version"] = Value::Null;
            row["description"] = Value::Null;
            row
        })
        .collect()
}

/// One row per workflow file of `dir`, with the stats of its name's runs.
pub fn files_with_stats(dir: &Path, runs: &[RunRecord]) -> anyhow::Result<Vec<Value>> {
    let mut by_name: BTreeMap<String, Stats> = BTreeMap::new();
    for run in runs {
        by_name.entry(run.workflow.clone()).or_default().add(run);
    }
    let mut rows = Vec::new();
    for (path, def) in workflow_files(dir)? {
        let mut row = by_name
            .get(&def.name)
            .map(Stats::to_json)
            .unwrap_or_else(|| Stats::default().to_json());
        row["name"] = json!(def.name);
        row["path"] = json!(path.display().to_string());
        row["version"] = json!(def.version);
        row["description"] = json!(def.description);
        rows.push(row);
    }
    Ok(rows)
}

/// The workflow files directly in `dir` that parse, in name order (files
/// that do not parse as workflows are left out).
fn workflow_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, crate::workflow::model::Workflow)>> {
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
