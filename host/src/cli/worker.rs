//! `wfhost worker`: drive the runs waiting in the store (see
//! [`crate::app::worker`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;

use super::say::err_line;
use super::Invalid;
use crate::app::worker::{StopSignal, WorkerListener, WorkerOptions};
use crate::store::RunRecord;

/// Arguments of `wfhost worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// How many runs this worker drives at once, and (on PostgreSQL) how
    /// many step attempts of any run it runs at once besides.
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,
    /// This machine's labels (comma-separated): a step that asks for
    /// labels (`runs_on: [gpu]`) runs only on workers that have every one,
    /// and its run is driven only by such a worker.
    #[arg(long, value_delimiter = ',', value_name = "LABEL,...")]
    labels: Vec<String>,
    /// Stop once no run is waiting, none is being driven and no step
    /// attempt is running here, instead of waiting for more (for scripts
    /// and tests).
    #[arg(long)]
    until_idle: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Where runs live (`--store postgres://…` to share them with other
    /// machines), and the host config.
    #[command(flatten)]
    pub(crate) place: super::Place,
}

/// Run `wfhost worker`.
pub fn worker(home: &Path, config: Option<&Path>, args: WorkerArgs) -> Result<ExitCode> {
    if args.concurrency == 0 {
        return Err(Invalid("--concurrency must be at least 1".into()).into());
    }
    if let Some(bad) = args
        .labels
        .iter()
        .find(|l| !crate::workflow::validate::is_label(l))
    {
        return Err(Invalid(format!(
            "--labels: '{bad}' is not a label (1 to 64 letters, digits, '_', '-' or '.')"
        ))
        .into());
    }
    install_stop_handlers();
    let Some(store) = open_until_reachable(home, args.quiet)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let options = WorkerOptions {
        concurrency: args.concurrency,
        until_idle: args.until_idle,
        poll: Duration::from_secs(1),
        labels: args.labels.iter().cloned().collect(),
    };
    if !args.quiet {
        let place = store
            .url()
            .map(|url| crate::store::redact_url(&url))
            .unwrap_or_else(|| home.display().to_string());
        err_line(&format!(
            "worker {} on {place}: driving up to {} runs and running up to as many steps at once (Ctrl-C: finish them and stop; twice: stop now)",
            std::process::id(),
            args.concurrency
        ));
    }
    let listener = Say { quiet: args.quiet };
    let taken = crate::app::worker::work(home, config, &store, &options, &listener, &Signals)?;
    if !args.quiet {
        err_line(&format!("worker stopped after taking {taken} run(s)"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Open the store, waiting (with backoff) while it cannot be reached; a
/// mistake (a bad URL or config) is an error at once. `None`: stopped
/// (Ctrl-C) while waiting.
fn open_until_reachable(
    home: &Path,
    quiet: bool,
) -> Result<Option<std::sync::Arc<dyn crate::store::EngineStore>>> {
    let mut wait = Duration::from_secs(1);
    loop {
        match super::create_store(home) {
            Ok(store) => return Ok(Some(store)),
            Err(error) if error.downcast_ref::<Invalid>().is_some() => return Err(error),
            Err(error) => {
                let _ = quiet;
                err_line(&format!(
                    "cannot open the store ({error}); trying again in {} s",
                    wait.as_secs()
                ));
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until {
                    if Signals.requests() > 0 {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

struct Say {
    quiet: bool,
}

impl WorkerListener for Say {
    fn took(&self, run: &RunRecord, pid: u32) {
        if !self.quiet {
            let how = if run.status == crate::store::RunStatus::Pending {
                "queued"
            } else {
                "left by a stopped driver"
            };
            err_line(&format!(
                "run {} ({}, {how}): driven by process {pid}",
                run.id, run.workflow
            ));
        }
    }

    fn store_unreachable(&self, error: &str, retry_in: Duration) {
        // Said even when quiet: the worker is idle until the store is back.
        err_line(&format!(
            "cannot read the store ({error}); taking nothing, trying again in {} s",
            retry_in.as_secs()
        ));
    }

    fn cannot_take(&self, run: &RunRecord, missing: &[String]) {
        if !self.quiet {
            err_line(&format!(
                "run {} ({}) asks for labels this worker lacks: {} (left for another worker)",
                run.id,
                run.workflow,
                missing.join(", ")
            ));
        }
    }

    fn ended(&self, run_id: &str, how: &str) {
        if !self.quiet {
            err_line(&format!(
                "run {run_id}: {how} (its driver's log: driver.log in the run folder)"
            ));
        }
    }
}

/// SIGINT/SIGTERM seen so far.
static STOPS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_stop(_: libc::c_int) {
    STOPS.fetch_add(1, Ordering::SeqCst);
}

fn install_stop_handlers() {
    // SAFETY: the handler only touches an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
}

struct Signals;

impl StopSignal for Signals {
    fn requests(&self) -> usize {
        STOPS.load(Ordering::SeqCst)
    }
}
