//! Following and trimming history: `wfhost watch`, `checkpoints`,
//! `restore`, `prune`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::events_view;
use super::output::Style;
use super::Invalid;
use crate::store::RunStatus;

/// Arguments of `wfhost watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// One JSON event per line.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost checkpoints`.
#[derive(Debug, clap::Args)]
pub struct CheckpointsArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// Only the newest N checkpoints.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON: a list of {checkpoint (also as seq), at, kind, step,
    /// label, created_by, size_bytes}.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// What this point is, for people (`before the migration`).
    #[arg(long)]
    label: String,
    /// Print the checkpoint as JSON.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A checkpoint number from `wfhost checkpoints`.
    checkpoint: i64,
    /// Print the run as JSON when it stops.
    #[arg(long)]
    json: bool,
    /// Print no progress on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost prune`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .multiple(true)
        .args(["older_than", "checkpoints", "cache"])
))]
pub struct PruneArgs {
    /// Remove finished runs created longer ago than this (e.g. `7d`, `12h`).
    /// With `--cache`: compiled components not used for this long.
    #[arg(long, value_name = "AGE")]
    older_than: Option<String>,
    /// Instead: stop offering all but the newest `--keep` checkpoints of
    /// each run (or of `--run`) to `restore`. The journal keeps its events.
    #[arg(long, requires = "keep", conflicts_with_all = ["older_than", "cache"])]
    checkpoints: bool,
    /// Instead of runs: prune the compile cache (`$WFHOST_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/wfhost` or `~/.cache/wfhost`). Removes compiled
    /// code this build cannot load (from another wfhost version) and what
    /// an interrupted write left; with `--older-than`, also components not
    /// used for that long. Whatever is removed is compiled again when next
    /// needed. No run is touched.
    #[arg(long)]
    cache: bool,
    /// With `--checkpoints`: how many of each run's newest to keep.
    #[arg(long, value_name = "N", requires = "checkpoints")]
    keep: Option<usize>,
    /// With `--checkpoints`: only this run.
    #[arg(long, value_name = "RUN", requires = "checkpoints")]
    run: Option<String>,
    /// Print the removed run ids as JSON: `{"removed": [...]}` (with
    /// `--cache`: `{"cache", "components", "files", "bytes"}`).
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost watch`: print a run's events as they happen until it stops.
pub fn watch(home: &Path, args: WatchArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let style = Style::for_stdout();
    let show = events_view::Show {
        step_column: true,
        run_events: true,
    };
    events_view::follow(&*store, &run_id, 0, |event| {
        if args.json {
            super::say::out_line(&serde_json::to_string(event).unwrap_or_default());
        } else if let Some(line) = events_view::line(&style, event, show) {
            super::say::out_line(&line);
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `wfhost checkpoint`: mark the run's present state with a label, to
/// restore it later.
pub fn checkpoint(home: &Path, args: CheckpointArgs) -> Result<ExitCode> {
    if let Err(why) = crate::app::notes::checkpoint_label(&args.label) {
        return Err(Invalid(format!("--label: {why}")).into());
    }
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let made = crate::app::notes::add_checkpoint(&*store, &run_id, &args.label)?;
    let (seq, label, size) = (made.seq, made.label, made.size_bytes);
    if args.json {
        super::say::out_line(&serde_json::to_string(&serde_json::json!({
            "run_id": run_id, "checkpoint": seq, "label": label, "size_bytes": size,
        }))?);
    } else {
        eprintln!(
            "checkpoint {seq} of run {run_id}: {label} ({size} bytes of step outputs); `wfhost restore {seq}` returns to it"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `wfhost checkpoints`: the points a run can be restored to: its step
/// transitions (made by the engine) and the checkpoints people made.
pub fn checkpoints(home: &Path, args: CheckpointsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let steps = store.steps(&run_id)?;
    let mut completed: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for event in store.checkpoints(&run_id)? {
        if event.kind == "step_completed" {
            if let Some(step) = &event.step {
                completed.push(step.clone());
            }
        }
        let (label, created_by) = if event.kind == "checkpoint" {
            (
                event.data["label"].as_str().unwrap_or_default().to_string(),
                "user",
            )
        } else {
            (
                format!(
                    "after '{}' {}",
                    event.step.as_deref().unwrap_or_default(),
                    event.kind.trim_start_matches("step_")
                ),
                "engine",
            )
        };
        rows.push(serde_json::json!({
            "checkpoint": event.seq,
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "step": event.step,
            "label": label,
            "created_by": created_by,
            "size_bytes": crate::app::notes::state_bytes(&steps, Some(&completed)),
        }));
    }
    if let Some(limit) = args.limit {
        let skip = rows.len().saturating_sub(limit);
        rows.drain(..skip);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let relative = std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!(
        "{:<10}  {:<36}  {:<7}  {:>10}  LABEL",
        "CHECKPOINT", "AT", "BY", "SIZE"
    );
    for row in &rows {
        let at = row["at"].as_str().unwrap_or_default();
        let at = if relative {
            super::inspect::when(at, true)
        } else {
            at.to_string()
        };
        println!(
            "{:<10}  {:<36}  {:<7}  {:>10}  {}",
            row["checkpoint"],
            at,
            row["created_by"].as_str().unwrap_or_default(),
            format!("{} B", row["size_bytes"]),
            super::terminal::safe_line(row["label"].as_str().unwrap_or_default(), 120)
        );
    }
    if rows.is_empty() {
        eprintln!("run {run_id} has no checkpoints yet");
    }
    Ok(ExitCode::SUCCESS)
}

/// `wfhost restore`: put a run back as it was at a checkpoint and resume
/// it; steps that finished after the checkpoint run again.
pub fn restore(home: &Path, config: Option<&Path>, args: RestoreArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let Some(run_id) = store.checkpoint_run(args.checkpoint)? else {
        return Err(Invalid(format!(
            "no checkpoint {} (see `wfhost checkpoints RUN`)",
            args.checkpoint
        ))
        .into());
    };
    let run = store.run(&run_id)?;
    if run.status == RunStatus::Running && !run.stale {
        return Err(Invalid(format!(
            "run {run_id} is running: pause or cancel it before restoring"
        ))
        .into());
    }
    let checkpoints = store.checkpoints(&run_id)?;
    if !checkpoints.iter().any(|c| c.seq == args.checkpoint) {
        return Err(Invalid(format!(
            "event {} is not a checkpoint of run {run_id}",
            args.checkpoint
        ))
        .into());
    }
    let kept: Vec<String> = checkpoints
        .iter()
        .filter(|c| c.seq <= args.checkpoint && c.kind == "step_completed")
        .filter_map(|c| c.step.clone())
        .collect();
    let later_done: Vec<String> = checkpoints
        .iter()
        .filter(|c| c.seq > args.checkpoint)
        .filter_map(|c| c.step.clone())
        .collect();
    for step in store.steps(&run_id)? {
        let finished_later = later_done.contains(&step.id);
        let reset = !kept.contains(&step.id) || finished_later;
        if reset && step.status != crate::store::StepStatus::Pending {
            store.reset_step(
                &run_id,
                &step.id,
                &format!("restored to checkpoint {}", args.checkpoint),
            )?;
        }
    }
    let workflow = super::control::pinned_workflow(&store, &run_id)?;
    let ceiling = super::load_ceiling(home, config)?;
    let driver = super::driver(home, &store, ceiling, args.quiet, true)?;
    let drive = driver.drive(&run_id, &workflow, &run.args);
    let driven = super::interrupt::drive(&*store, &run_id, !args.quiet, drive)?;
    super::run::finish_and_exit(&*store, &run_id, args.json, args.quiet, driven)
}

/// `wfhost prune --checkpoints --keep N`: from each run's (or `--run`'s)
/// checkpoints, offer only the newest N to `restore`.
/// `wfhost prune --cache [--older-than AGE]`.
fn prune_cache(
    home: &Path,
    unused_for: Option<std::time::Duration>,
    json: bool,
) -> Result<ExitCode> {
    let dir = crate::app::component_cache_dir(home);
    let pruned = crate::runtime::cache::prune_disk(&dir, unused_for)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "cache": dir,
                "components": pruned.entries,
                "files": pruned.files,
                "bytes": pruned.bytes,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "removed {} compiled component(s), {} file(s) in all, {:.1} MiB, from {}",
        pruned.entries,
        pruned.files,
        pruned.bytes as f64 / (1024.0 * 1024.0),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn prune_checkpoints(home: &Path, args: &PruneArgs) -> Result<ExitCode> {
    let keep = args.keep.unwrap_or_default();
    let store = super::open_store(home)?;
    let runs = match &args.run {
        Some(run) => vec![super::resolve_run(&*store, run)?],
        None => store.runs()?.into_iter().map(|r| r.id).collect(),
    };
    let mut pruned = Vec::new();
    for run_id in runs {
        let checkpoints = store.checkpoints(&run_id)?;
        if checkpoints.len() <= keep {
            continue;
        }
        let first_kept = checkpoints
            .get(checkpoints.len() - keep)
            .map(|c| c.seq)
            .unwrap_or(i64::MAX);
        let dropped = checkpoints.len() - keep;
        store.append_event(
            &run_id,
            None,
            "checkpoints_pruned",
            &serde_json::json!({ "before": first_kept, "kept": keep, "dropped": dropped }),
        )?;
        pruned.push(serde_json::json!({ "run_id": run_id, "dropped": dropped, "kept": keep }));
    }
    if args.json {
        println!("{}", serde_json::json!({ "pruned": pruned }));
        return Ok(ExitCode::SUCCESS);
    }
    let total: u64 = pruned.iter().filter_map(|p| p["dropped"].as_u64()).sum();
    println!(
        "{total} checkpoint(s) of {} run(s) no longer offered (kept the newest {keep} of each; the journal keeps every event)",
        pruned.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `wfhost prune`: delete old finished runs and their folders.
pub fn prune(home: &Path, args: PruneArgs) -> Result<ExitCode> {
    if args.checkpoints {
        return prune_checkpoints(home, &args);
    }
    let age = args
        .older_than
        .as_deref()
        .map(|older_than| {
            crate::workflow::parse_duration(older_than)
                .map_err(|e| Invalid(format!("--older-than: {e}")))
        })
        .transpose()?;
    if args.cache {
        return prune_cache(home, age, args.json);
    }
    let age = age.unwrap_or_default();
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(age).unwrap_or_else(|_| chrono::Duration::zero());
    let store = super::open_store(home)?;
    let removed = store.prune(&cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))?;
    if args.json {
        println!("{}", serde_json::json!({ "removed": removed }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "removed {} run(s){}",
        removed.len(),
        if removed.is_empty() {
            String::new()
        } else {
            format!(": {}", removed.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
