//! The human-readable folder of a run: `runs/<run-id>/`.
//!
//! ```text
//! runs/<run-id>/progress.md            the run at a glance, rewritten on every transition
//! runs/<run-id>/events.jsonl           every event of the run
//! runs/<run-id>/steps/<step>/input.json    rendered config, inputs, args of the latest attempt
//! runs/<run-id>/steps/<step>/output.json   output of the completed attempt
//! runs/<run-id>/steps/<step>/events.jsonl  the step's events (logs included)
//! runs/<run-id>/steps/<step>/summary.md    status, timings, error, output
//! ```
//!
//! The database is the source of truth; these files are a mirror for people,
//! kept by [`RunFolders`], an observer of the store's commits. The engine
//! writes `progress.md` and `summary.md` itself through [`RunFiles`].

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::observer::{Committed, StoreObserver};
use super::{Result, StoreError};

/// The run-folder mirror: follows a store's commits into `runs/<run-id>/`
/// under a home directory.
#[derive(Debug, Clone)]
pub struct RunFolders {
    runs: PathBuf,
}

impl RunFolders {
    /// The folders of runs stored under `home` (in `home/runs/`).
    pub fn new(home: &Path) -> RunFolders {
        RunFolders {
            runs: home.join("runs"),
        }
    }

    /// The folder of one run.
    pub fn run(&self, run_id: &str) -> RunFiles {
        RunFiles::new(self.runs.join(run_id))
    }
}

impl StoreObserver for RunFolders {
    fn name(&self) -> &'static str {
        "the run folder"
    }

    fn committed(&self, change: &Committed<'_>) -> Result<()> {
        let files = self.run(change.run_id());
        match *change {
            Committed::RunCreated { .. } => files.init(),
            Committed::StepInput { step_id, input, .. } => {
                files.write_step_json(step_id, "input.json", input)
            }
            Committed::StepOutput {
                step_id, output, ..
            } => files.write_step_json(step_id, "output.json", output),
            Committed::Event {
                step_id,
                at,
                kind,
                data,
                ..
            } => {
                let line =
                    serde_json::json!({ "at": at, "step": step_id, "kind": kind, "data": data });
                files.append_event(step_id, &line)
            }
            Committed::RunRemoved { .. } => match fs::remove_dir_all(files.dir()) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_error(files.dir(), error))
                }
                _ => Ok(()),
            },
        }
    }
}

/// Paths and writers for one run's folder.
#[derive(Debug, Clone)]
pub struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    /// The folder at `dir` (not created until [`RunFiles::init`]).
    pub fn new(dir: PathBuf) -> RunFiles {
        RunFiles { dir }
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of one step.
    pub fn step_dir(&self, step_id: &str) -> PathBuf {
        self.dir.join("steps").join(step_id)
    }

    /// Create the run folder.
    pub fn init(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|source| io_error(&self.dir, source))
    }

    /// Write `value` pretty-printed to `steps/<step>/<name>`.
    pub fn write_step_json(&self, step_id: &str, name: &str, value: &Value) -> Result<()> {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        self.write_step_file(step_id, name, &(text + "\n"))
    }

    /// Write a text file into the step's folder.
    pub fn write_step_file(&self, step_id: &str, name: &str, text: &str) -> Result<()> {
        let dir = self.step_dir(step_id);
        fs::create_dir_all(&dir).map_err(|source| io_error(&dir, source))?;
        let path = dir.join(name);
        fs::write(&path, text).map_err(|source| io_error(&path, source))
    }

    /// Rewrite the run's `progress.md`.
    pub fn write_progress(&self, markdown: &str) -> Result<()> {
        let path = self.dir.join("progress.md");
        fs::write(&path, markdown).map_err(|source| io_error(&path, source))
    }

    /// Append one JSON line to the run's journal and, for step events, to
    /// the step's journal.
    pub fn append_event(&self, step_id: Option<&str>, line: &Value) -> Result<()> {
        let text = format!("{line}\n");
        append(&self.dir.join("events.jsonl"), &text)?;
        if let Some(step_id) = step_id {
            let dir = self.step_dir(step_id);
            fs::create_dir_all(&dir).map_err(|source| io_error(&dir, source))?;
            append(&dir.join("events.jsonl"), &text)?;
        }
        Ok(())
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    file.write_all(text.as_bytes())
        .map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
