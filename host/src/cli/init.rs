//! `wfhost init`: make a directory a wfhost project — its own home
//! (`.wfhost/`, found by every command run in it or below), a commented
//! `config.toml`, and a starter workflow.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::say::err_line;
use super::Invalid;
use crate::app::home::{has_store, PROJECT_HOME};

/// Arguments of `wfhost init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The project directory (default: the current one).
    dir: Option<PathBuf>,
    /// Print what was created as JSON: `{"home", "config", "workflow"}`
    /// (`workflow` is null when one was there already).
    #[arg(long)]
    json: bool,
}

/// The starter workflow `init` writes (unless the file exists).
const STARTER: &str = r#"# A starter workflow: `wfhost run workflow.yaml --arg who=you`.
name: starter
args:
  type: object
  properties:
    who: { type: string, default: world }
steps:
  - id: greet
    run: |
      who={{ args.who | shq }}
      echo "Hello, $who!"
      echo "greeting=Hello, $who" >> "$WFHOST_OUTPUT"
  - id: count
    needs: [greet]
    type: function
    component: wordcount
    with:
      text: "{{ steps.greet.output.greeting }}"
"#;

/// The commented host config `init` writes.
const CONFIG: &str = r#"# wfhost host config for this project (see the README: "Operator ceiling").
# Nothing is capped until you uncomment a key; an empty list forbids that grant.

# [ceiling]
# files = [{ path = ".", access = "read-write" }]
# exec = ["sh", "git"]
# env = []
# network = []
# memory = "1GiB"
# timeout = "30m"
# max_output = "64MiB"
# sandbox = "strict"

# [store]
# durability = "normal"   # or "full": every commit synced to disk
# url = "postgres://wf@db.internal/wf"   # runs shared by several machines (`wfhost worker`)
"#;

/// `wfhost init`.
pub fn init(args: InitArgs) -> Result<ExitCode> {
    let dir = match args.dir.clone() {
        Some(dir) => dir,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if !dir.is_dir() {
        return Err(Invalid(format!("{} is not a directory", dir.display())).into());
    }
    let home = dir.join(PROJECT_HOME);
    if has_store(&home) {
        return Err(Invalid(format!(
            "{} is already a wfhost project (its home is {})",
            dir.display(),
            home.display()
        ))
        .into());
    }
    crate::app::open_store(&home, None, None)?;
    let config = home.join("config.toml");
    write_new(&config, CONFIG)?;
    let workflow = dir.join("workflow.yaml");
    let wrote_workflow = write_new(&workflow, STARTER)?;
    if args.json {
        let done = serde_json::json!({
            "home": home,
            "config": config,
            "workflow": wrote_workflow.then_some(&workflow),
        });
        super::say::out_line(&done.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    err_line(&format!("created wfhost home {}", home.display()));
    err_line(&format!(
        "  {}: the operator ceiling, commented",
        config.display()
    ));
    if wrote_workflow {
        err_line(&format!(
            "  {}: a starter workflow (`wfhost run workflow.yaml`)",
            workflow.display()
        ));
    }
    err_line("commands run in this directory or below use this home");
    Ok(ExitCode::SUCCESS)
}

/// Write `text` to `path` unless something is there; whether it wrote.
fn write_new(path: &Path, text: &str) -> Result<bool> {
    use std::io::Write;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(anyhow::anyhow!("cannot write {}: {error}", path.display())),
    }
}
