//! `wfhost worker`: drive the runs waiting in a store, on this machine.
//!
//! A worker takes runs that nobody drives: new ones (`pending`, queued by
//! `wfhost run --detach` or the API) and ones whose driver stopped beating
//! (its lease ran out: the machine or process died). Each is driven by a
//! `wfhost resume RUN` child, so the lease rules are the ones every driver
//! follows: the child claims the run (two workers racing for one run: one
//! claim wins, the other child stops at once), heartbeats, and is fenced
//! out if its lease is ever taken over; after a crash, interrupted steps
//! re-run when idempotent and block the run otherwise.
//!
//! The children die with the worker (`PR_SET_PDEATHSIG`): a worker killed
//! with `kill -9` takes its drives with it, as a lost machine would, and
//! other workers resume those runs once their leases run out.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::store::{EngineStore, RunRecord, RunStatus};

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Runs driven at once.
    pub concurrency: usize,
    /// Stop once nothing is waiting and nothing is driven (instead of
    /// waiting for more work).
    pub until_idle: bool,
    /// How often to look for runs whose lease ran out.
    pub poll: Duration,
    /// This machine's labels: a run whose steps ask for labels
    /// (`runs_on:`) is taken only when it has every one.
    pub labels: BTreeSet<String>,
}

/// The first wait after the store could not be read, doubled each time up
/// to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Sleep `wait`, waking early when a stop is asked.
fn sleep_unless_stopped(wait: Duration, stop: &dyn StopSignal) {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until && stop.requests() == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How often a worker with drivers running checks whether one ended.
const REAP_EVERY: Duration = Duration::from_millis(20);

/// What the worker tells its user.
pub trait WorkerListener {
    /// A run was handed to a driver.
    fn took(&self, run: &RunRecord, pid: u32);
    /// A driver ended.
    fn ended(&self, run_id: &str, status: Option<i32>);
    /// The store could not be read; the worker tries again after `retry_in`.
    fn store_unreachable(&self, error: &str, retry_in: Duration);
    /// A waiting run asks for labels this worker does not have (told once
    /// per run).
    fn cannot_take(&self, run: &RunRecord, missing: &[String]);
}

/// Whether the worker should stop taking runs (the first Ctrl-C), or stop
/// its drivers at once too (the second).
pub trait StopSignal {
    /// How many stop requests arrived.
    fn requests(&self) -> usize;
}

/// Drive waiting runs until stopped (or, with `until_idle`, until there is
/// nothing left). Returns how many runs it handed to drivers.
pub fn work(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    options: &WorkerOptions,
    listener: &dyn WorkerListener,
    stop: &dyn StopSignal,
) -> Result<usize> {
    let mut driving: HashMap<String, Child> = HashMap::new();
    let mut needs: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut backoff: Option<Duration> = None;
    let mut taken = 0;
    loop {
        reap(&mut driving, listener);
        match stop.requests() {
            0 => {}
            1 => {
                // Drain: finish the runs in hand, take no new one.
                if driving.is_empty() {
                    return Ok(taken);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            _ => {
                for child in driving.values_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Ok(taken);
            }
        }
        let free = options.concurrency.saturating_sub(driving.len());
        let mut waiting = 0;
        if free > 0 {
            let mut candidates = match waiting_runs(store) {
                Ok(runs) => {
                    backoff = None;
                    runs
                }
                Err(error) => {
                    // The store is unreachable: take nothing, try again
                    // later; the runs wait in the store, and the drivers
                    // already started go on or stop by their own leases.
                    let wait =
                        backoff.map_or(BACKOFF_FIRST, |d: Duration| (d * 2).min(BACKOFF_MAX));
                    backoff = Some(wait);
                    listener.store_unreachable(&error.to_string(), wait);
                    sleep_unless_stopped(wait, stop);
                    continue;
                }
            };
            candidates.retain(|run| {
                let known = needs.contains_key(&run.id);
                let asked = needs
                    .entry(run.id.clone())
                    .or_insert_with(|| labels_asked(&run.definition));
                let missing: Vec<String> = asked.difference(&options.labels).cloned().collect();
                if !missing.is_empty() && !known {
                    listener.cannot_take(run, &missing);
                }
                missing.is_empty()
            });
            waiting = candidates.len();
            let fresh: Vec<RunRecord> = candidates
                .into_iter()
                .filter(|run| !driving.contains_key(&run.id))
                .take(free)
                .collect();
            for run in fresh {
                let child = start_driver(home, config, store, &run.id)?;
                listener.took(&run, child.id());
                driving.insert(run.id.clone(), child);
                taken += 1;
            }
        }
        if options.until_idle && driving.is_empty() && waiting == 0 {
            return Ok(taken);
        }
        if driving.len() >= options.concurrency {
            // Full: look again soon, a driver may end any moment.
            std::thread::sleep(REAP_EVERY);
        } else if waiting == 0 {
            let wait = if driving.is_empty() {
                options.poll
            } else {
                REAP_EVERY
            };
            store.wait_for_work(wait);
        }
    }
}

/// Every label the steps of a pinned definition ask for (`runs_on:` or
/// `runs-on:`, a list or one label). The definition was validated when the
/// run was made; anything unreadable here asks for nothing.
fn labels_asked(definition: &str) -> BTreeSet<String> {
    let Ok(document) = serde_yaml::from_str::<serde_yaml::Value>(definition) else {
        return BTreeSet::new();
    };
    let steps = document
        .get("steps")
        .and_then(serde_yaml::Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut labels = BTreeSet::new();
    for step in steps {
        for key in ["runs_on", "runs-on"] {
            match step.get(key) {
                Some(serde_yaml::Value::Sequence(list)) => labels.extend(
                    list.iter()
                        .filter_map(serde_yaml::Value::as_str)
                        .map(str::to_string),
                ),
                Some(serde_yaml::Value::String(one)) => {
                    labels.insert(one.clone());
                }
                _ => {}
            }
        }
    }
    labels
}

/// Runs nobody drives, most urgent first: higher priority, then older.
fn waiting_runs(store: &dyn EngineStore) -> Result<Vec<RunRecord>> {
    let mut runs: Vec<RunRecord> = store
        .runs()?
        .into_iter()
        .filter(|run| {
            run.status == RunStatus::Pending || (run.status == RunStatus::Running && run.stale)
        })
        .collect();
    runs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created_at.cmp(&b.created_at))
    });
    Ok(runs)
}

fn reap(driving: &mut HashMap<String, Child>, listener: &dyn WorkerListener) {
    driving.retain(|run_id, child| match child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            listener.ended(run_id, status.code());
            false
        }
        Err(_) => {
            listener.ended(run_id, None);
            false
        }
    });
}

/// `wfhost resume RUN` for `run_id`, dying with this process, in its own
/// process group (a Ctrl-C at the worker's terminal is the worker's to
/// handle), its output appended to the run folder's `driver.log`.
fn start_driver(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    run_id: &str,
) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let (mut command, _log) = super::background::driver_command(
        home,
        config,
        store,
        run_id,
        &["resume", run_id, "--quiet"],
    )?;
    let worker = std::process::id();
    // SAFETY: setpgid, prctl, getppid and _exit are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The worker died before the line above: die now, as it asked.
            if libc::getppid() as u32 != worker {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command.spawn().context("cannot start a driver")
}
