//! `wfhost artifacts` and `wfhost comment`: what steps and people leave on
//! a run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use super::say::out_line;
use super::terminal::safe_line;
use super::Invalid;

/// Arguments of `wfhost artifacts`.
#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Only this step's.
    step: Option<String>,
    /// Extract the artifact with this id (from the list) instead.
    #[arg(long, value_name = "ID")]
    get: Option<i64>,
    /// With `--get`: where to write it (default: its file name, here; `-`:
    /// standard output). An existing file is not overwritten.
    #[arg(long, value_name = "PATH", requires = "get")]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost comment`.
#[derive(Debug, clap::Args)]
pub struct CommentArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// The step it is about (optional), then the text.
    #[arg(num_args = 1..=2, value_names = ["STEP", "TEXT"], required = true)]
    words: Vec<String>,
    /// Who writes it (default: $USER).
    #[arg(long)]
    author: Option<String>,
    /// Print the comment as JSON.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost artifacts`.
pub fn artifacts(home: &Path, args: ArtifactsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let list = store.artifacts(&run_id, args.step.as_deref())?;
    if let Some(id) = args.get {
        let Some(artifact) = list.iter().find(|a| a.id == id) else {
            return Err(Invalid(format!(
                "run {run_id} has no artifact {id} (see `wfhost artifacts {run_id}`)"
            ))
            .into());
        };
        let bytes = crate::app::notes::artifact_bytes(&*store, &run_id, artifact)?;
        match args.out.as_deref() {
            Some(path) if path == Path::new("-") => {
                use std::io::Write;
                std::io::stdout().write_all(&bytes)?;
            }
            given => {
                let path = match given {
                    Some(path) => path.to_path_buf(),
                    None => PathBuf::from(
                        Path::new(&artifact.name)
                            .file_name()
                            .unwrap_or_else(|| std::ffi::OsStr::new("artifact")),
                    ),
                };
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Invalid(format!("cannot write {}: {e}", path.display())))?;
                file.write_all(&bytes)?;
                eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        out_line(&serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("run {run_id} has no artifacts");
        return Ok(ExitCode::SUCCESS);
    }
    out_line(&format!(
        "{:>5}  {:<20} {:>10}  {:<24}  NAME",
        "ID", "STEP", "SIZE", "TYPE"
    ));
    for a in list {
        out_line(&format!(
            "{:>5}  {:<20} {:>10}  {:<24}  {}",
            a.id,
            safe_line(&a.step, 20),
            a.size,
            a.media_type,
            safe_line(&a.name, 200)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `wfhost comment`.
pub fn comment(home: &Path, args: CommentArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let (step, text) = match args.words.as_slice() {
        [text] => (None, text.as_str()),
        [step, text] => (Some(step.as_str()), text.as_str()),
        _ => return Err(Invalid("give TEXT, or STEP TEXT".into()).into()),
    };
    let author = args
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".to_string());
    let record = crate::app::notes::add_comment(&*store, &run_id, step, &author, text)?;
    if args.json {
        out_line(&serde_json::to_string_pretty(&record)?);
    } else {
        eprintln!("comment {} added to run {run_id}", record.id);
    }
    Ok(ExitCode::SUCCESS)
}
