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
    /// Print JSON.
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
pub struct PruneArgs {
    /// Remove finished runs created longer ago than this (e.g. `7d`, `12h`).
    #[arg(long, value_name = "AGE")]
    older_than: String,
    /// Print the removed run ids as JSON: `{"removed": [...]}`.
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

/// `wfhost checkpoints`: the step transitions a run can be restored to.
pub fn checkpoints(home: &Path, args: CheckpointsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, &args.run)?;
    let checkpoints = store.checkpoints(&run_id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checkpoints)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10}  {:<24}  {:<20}  STEP",
        "CHECKPOINT", "AT", "TRANSITION"
    );
    for event in checkpoints {
        println!(
            "{:<10}  {:<24}  {:<20}  {}",
            event.seq,
            event.at,
            event.kind.trim_start_matches("step_"),
            event.step.unwrap_or_default()
        );
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
    super::run::finish(&*store, &run_id, args.json, args.quiet, driven)
}

/// `wfhost prune`: delete old finished runs and their folders.
pub fn prune(home: &Path, args: PruneArgs) -> Result<ExitCode> {
    let age = crate::workflow::parse_duration(&args.older_than)
        .map_err(|e| Invalid(format!("--older-than: {e}")))?;
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
