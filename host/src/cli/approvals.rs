//! Answering agents' tool calls from any terminal: `wfhost approvals`,
//! `wfhost approve`, `wfhost deny`. The waiting call polls the store and
//! goes on (or is refused) within a second.

use std::path::Path;
use std::process::ExitCode;

use super::output::Style;
use super::terminal::terminal_safe;
use super::Invalid;
use crate::store::{ApprovalRecord, ApprovalStatus};
use anyhow::Result;

/// Arguments of `wfhost approvals`.
#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    /// Only this run (id or unique prefix); default: every run.
    run: Option<String>,
    /// Also list answered approvals.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// The approval's number (see `wfhost approvals`).
    id: i64,
    /// A note for the audit log.
    #[arg(long)]
    note: Option<String>,
    /// Print the answered approval as JSON (as `approvals --json` lists it).
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Arguments of `wfhost deny`.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// Run id or a unique prefix of one.
    run: String,
    /// The approval's number (see `wfhost approvals`).
    id: i64,
    /// Why: sent back to the agent's model as the tool's result.
    #[arg(long)]
    reason: String,
    /// Print the answered approval as JSON (as `approvals --json` lists it).
    #[arg(long)]
    json: bool,
    /// Where runs live, and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// `wfhost approvals`.
pub fn approvals(home: &Path, args: ApprovalsArgs) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = match &args.run {
        Some(prefix) => Some(super::resolve_run(&*store, prefix)?),
        None => None,
    };
    let found = store.approvals(run_id.as_deref(), args.all)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        let scope = run_id
            .map(|id| format!("run {id}"))
            .unwrap_or_else(|| "any run".to_string());
        let what = if args.all {
            "approvals"
        } else {
            "pending approvals"
        };
        println!("no {what} in {scope}");
        return Ok(ExitCode::SUCCESS);
    }
    let style = Style::for_stdout();
    for approval in &found {
        print_approval(&style, approval);
    }
    if found.iter().any(|a| a.status == ApprovalStatus::Pending) {
        println!(
            "{}",
            style.dim("answer with `wfhost approve RUN ID [--note TEXT]` or `wfhost deny RUN ID --reason TEXT`")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One approval for people. Everything but the id, status and time may be
/// written by a model or the workflow's author: printed through
/// [`terminal_safe`], continuation lines indented under the entry.
fn print_approval(style: &Style, approval: &ApprovalRecord) {
    let status = approval.status.as_str();
    println!(
        "{} {}  run {}  step {}  agent {}  {}",
        style.bold(&format!("#{}", approval.id)),
        match approval.status {
            ApprovalStatus::Pending => style.warn(status),
            ApprovalStatus::Approved => style.ok(status),
            ApprovalStatus::Denied => style.bad(status),
        },
        safe(&approval.run_id),
        safe(&approval.step_id),
        safe(&approval.agent_id),
        style.dim(&approval.created_at),
    );
    println!("    {} {}", safe(&approval.tool), safe(&approval.arguments));
    if !approval.prompt.is_empty() {
        println!("    {}", safe(&approval.prompt));
    }
    if let Some(note) = &approval.note {
        println!(
            "    {}: {}",
            if approval.status == ApprovalStatus::Denied {
                "reason"
            } else {
                "note"
            },
            safe(note)
        );
    }
}

/// `text` made terminal-safe, its later lines indented to stay under the
/// entry they belong to.
fn safe(text: &str) -> String {
    terminal_safe(text).replace('\n', "\n      ")
}

/// `wfhost approve`.
pub fn approve(home: &Path, args: ApproveArgs) -> Result<ExitCode> {
    answer(
        home,
        &args.run,
        args.id,
        true,
        args.note.as_deref(),
        args.json,
    )
}

/// `wfhost deny`.
pub fn deny(home: &Path, args: DenyArgs) -> Result<ExitCode> {
    if args.reason.trim().is_empty() {
        return Err(
            Invalid("--reason must not be empty: it is what the agent is told".into()).into(),
        );
    }
    answer(
        home,
        &args.run,
        args.id,
        false,
        Some(&args.reason),
        args.json,
    )
}

fn answer(
    home: &Path,
    run: &str,
    id: i64,
    approved: bool,
    note: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let store = super::open_store(home)?;
    let run_id = super::resolve_run(&*store, run)?;
    let record = store
        .answer_approval(&run_id, id, approved, note)?
        .map_err(Invalid)?;
    if json {
        super::say::out_line(&serde_json::to_string_pretty(&record)?);
        return Ok(ExitCode::SUCCESS);
    }
    let word = if approved { "approved" } else { "denied" };
    eprintln!(
        "{word} #{} of run {run_id}: {} {}",
        record.id,
        safe(&record.tool),
        safe(&crate::agent::record::truncate(&record.arguments, 200))
    );
    Ok(ExitCode::SUCCESS)
}
