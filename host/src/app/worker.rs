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
//!
//! With a store that has a step queue (PostgreSQL), the drivers place the
//! attempts of their steps there (see [`crate::engine::placement`]) and
//! every worker runs the ones it can, up to `--concurrency` at once: a
//! run's steps spread over all the workers with the labels they ask for.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::engine::ceiling::Ceiling;
use crate::engine::placement::{self, WorkerSide, TASK_LEASE};
use crate::step::executor::StepExecutor;
use crate::store::tasks::ClaimedTask;
use crate::store::{EngineStore, RunRecord, RunStatus};
use crate::workflow::LoadedWorkflow;

/// Set (to `1`) in the environment of a worker's drivers: place the
/// attempts of steps that may run anywhere in the store's queue.
pub const PLACE_STEPS_VARIABLE: &str = "WFHOST_PLACE_STEPS";

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Runs driven at once, and step attempts run at once.
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

/// The store is unreachable: take nothing, say so and wait (1 s, doubling
/// up to 30 s); the runs and attempts wait in the store, and the drivers
/// and attempts already started go on or stop by their own leases.
fn back_off(
    backoff: &mut Option<Duration>,
    error: &anyhow::Error,
    listener: &dyn WorkerListener,
    stop: &dyn StopSignal,
) {
    let wait = backoff.map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
    *backoff = Some(wait);
    listener.store_unreachable(&error.to_string(), wait);
    sleep_unless_stopped(wait, stop);
}

/// Sleep `wait`, waking early when a stop is asked.
fn sleep_unless_stopped(wait: Duration, stop: &dyn StopSignal) {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until && stop.requests() == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How often a `--until-idle` worker with nothing in hand looks for runs.
const UNTIL_IDLE_LOOK: Duration = Duration::from_millis(100);

/// How often a worker with drivers running checks whether one ended.
const REAP_EVERY: Duration = Duration::from_millis(20);

/// What the worker tells its user.
pub trait WorkerListener {
    /// A run was handed to a driver.
    fn took(&self, run: &RunRecord, pid: u32);
    /// A driver ended; `how` says where it left the run ("completed",
    /// "blocked: …", "taken by another worker" …).
    fn ended(&self, run_id: &str, how: &str);
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

/// Drive waiting runs and run queued step attempts until stopped (or,
/// with `until_idle`, until there is nothing left). Returns how many runs
/// it handed to drivers.
pub fn work(
    home: &Path,
    config: Option<&Path>,
    store: &Arc<dyn EngineStore>,
    options: &WorkerOptions,
    listener: &dyn WorkerListener,
    stop: &dyn StopSignal,
) -> Result<usize> {
    let tasks = match store.step_queue() {
        Some(_) => Some(Tasks::new(home, config, store)?),
        None => None,
    };
    let placing = tasks.is_some();
    let mut driving: HashMap<String, Child> = HashMap::new();
    let mut needs: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut backoff: Option<Duration> = None;
    let mut taken = 0;
    let running = |tasks: &Option<Tasks>| tasks.as_ref().map_or(0, Tasks::running);
    // Runs are looked for when news came, a driver ended, or every `poll`
    // (for runs whose driver stopped beating): listing them is the
    // dearest query of the loop.
    let mut woken = crate::store::News {
        runs: true,
        tasks: true,
    };
    let mut last_scan: Option<std::time::Instant> = None;
    let mut waiting = 0;
    let mut driven_elsewhere = false;
    let mut last_claim: Option<std::time::Instant> = None;
    let mut claimed = 0;
    loop {
        let ended = reap(&mut driving, &**store, listener);
        match stop.requests() {
            0 => {}
            1 => {
                // Drain: finish the runs and attempts in hand, take no new
                // one.
                if driving.is_empty() && running(&tasks) == 0 {
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
        if let Some(tasks) = &tasks {
            // Attempts are looked for when one was queued, one ended here,
            // the last look found some, or every `poll`.
            let due = woken.tasks
                || claimed > 0
                || tasks.ended() > 0
                || last_claim.is_none_or(|at: std::time::Instant| at.elapsed() >= options.poll);
            if due {
                last_claim = Some(std::time::Instant::now());
                match tasks.claim(options) {
                    Ok(count) => {
                        backoff = None;
                        claimed = count;
                    }
                    Err(error) => {
                        back_off(&mut backoff, &error, listener, stop);
                        continue;
                    }
                }
            }
        }
        let free = options.concurrency.saturating_sub(driving.len());
        // With `--until-idle`, a worker with nothing in hand looks more
        // often: it stops once a look finds nothing open.
        let idle_here = driving.is_empty() && running(&tasks) == 0;
        let scan_every = if options.until_idle && idle_here {
            UNTIL_IDLE_LOOK
        } else {
            options.poll
        };
        let scan = woken.runs || ended > 0 || last_scan.is_none_or(|at| at.elapsed() >= scan_every);
        if free > 0 && scan {
            last_scan = Some(std::time::Instant::now());
            let (mut candidates, driven) = match waiting_runs(&**store) {
                Ok(runs) => {
                    backoff = None;
                    runs
                }
                Err(error) => {
                    back_off(&mut backoff, &error, listener, stop);
                    continue;
                }
            };
            // Forget the labels of runs that are no longer open.
            let open: std::collections::HashSet<&str> = candidates
                .iter()
                .chain(&driven)
                .map(|run| run.id.as_str())
                .collect();
            needs.retain(|id, _| open.contains(id.as_str()) || driving.contains_key(id));
            candidates.retain(|run| {
                let known = needs.contains_key(&run.id);
                let asked = needs
                    .entry(run.id.clone())
                    .or_insert_with(|| labels_asked(store.home(), run));
                let missing: Vec<String> = asked.difference(&options.labels).cloned().collect();
                if !missing.is_empty() && !known {
                    listener.cannot_take(run, &missing);
                }
                missing.is_empty()
            });
            // Runs this worker's own drivers are about to claim are not
            // waiting.
            candidates.retain(|run| !driving.contains_key(&run.id));
            waiting = candidates.len().saturating_sub(free);
            // Runs other workers drive may still queue attempts for this
            // one: `--until-idle` waits for them to end.
            driven_elsewhere = false;
            for run in driven.iter().filter(|run| !driving.contains_key(&run.id)) {
                let asked = needs
                    .entry(run.id.clone())
                    .or_insert_with(|| labels_asked(store.home(), run));
                driven_elsewhere |= placing && asked.is_subset(&options.labels);
            }
            let fresh: Vec<RunRecord> = candidates.into_iter().take(free).collect();
            for run in fresh {
                let child = start_driver(home, config, &**store, &run.id, placing)?;
                listener.took(&run, child.id());
                driving.insert(run.id.clone(), child);
                taken += 1;
            }
        }
        let attempts = running(&tasks);
        if options.until_idle
            && scan
            && driving.is_empty()
            && waiting == 0
            && attempts == 0
            && !driven_elsewhere
        {
            return Ok(taken);
        }
        woken = crate::store::News::default();
        if let Some(tasks) = tasks.as_ref().filter(|_| attempts >= options.concurrency) {
            // Full: wait for an attempt to end (news that comes meanwhile
            // waits on the listening connection).
            tasks.wait_for_an_end(options.concurrency, REAP_EVERY);
        } else if driving.len() >= options.concurrency && tasks.is_none() {
            // Look again soon, a driver may end any moment.
            std::thread::sleep(REAP_EVERY);
        } else {
            let wait = if !driving.is_empty() {
                REAP_EVERY
            } else if options.until_idle {
                UNTIL_IDLE_LOOK
            } else {
                options.poll
            };
            woken = store.wait_for_work(wait);
        }
    }
}

/// The step attempts this worker runs: claimed from the store's queue, run
/// on a runtime of their own.
struct Tasks {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn EngineStore>,
    executor: Arc<dyn StepExecutor>,
    ceiling: Option<Ceiling>,
    home: PathBuf,
    /// `host:pid`, recorded with each claim.
    name: String,
    running: Arc<AtomicUsize>,
    /// Attempts ended since [`Tasks::ended`] was last asked.
    ended: Arc<AtomicUsize>,
    /// Signalled when an attempt ends.
    end_signal: Arc<(Mutex<()>, std::sync::Condvar)>,
    /// Runs' pinned definitions, by run id with their hash.
    workflows: Arc<Definitions>,
}

/// Runs' pinned definitions, loaded: run id → (definition hash, workflow).
type Definitions = Mutex<HashMap<String, (String, Arc<LoadedWorkflow>)>>;

impl Tasks {
    fn new(home: &Path, config: Option<&Path>, store: &Arc<dyn EngineStore>) -> Result<Tasks> {
        let runtime = super::runtime(home)?;
        Ok(Tasks {
            runtime: super::tokio_runtime()?,
            store: store.clone(),
            executor: Arc::new(crate::runtime::WasmExecutor(runtime)),
            ceiling: super::load_ceiling(home, config)?,
            home: store.home().to_path_buf(),
            name: format!("{}:{}", crate::store::host_name(), std::process::id()),
            running: Arc::new(AtomicUsize::new(0)),
            ended: Arc::new(AtomicUsize::new(0)),
            end_signal: Arc::default(),
            workflows: Arc::new(Definitions::default()),
        })
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Wait up to `timeout` while `concurrency` attempts run.
    fn wait_for_an_end(&self, concurrency: usize, timeout: Duration) {
        let (lock, ended) = &*self.end_signal;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = ended.wait_timeout_while(guard, timeout, |_| self.running() >= concurrency);
    }

    /// How many attempts ended since the last call.
    fn ended(&self) -> usize {
        self.ended.swap(0, Ordering::SeqCst)
    }

    /// Claim queued attempts while there is room, and start them; returns
    /// how many.
    fn claim(&self, options: &WorkerOptions) -> Result<usize> {
        let labels: Vec<String> = options.labels.iter().cloned().collect();
        let queue = self
            .store
            .step_queue()
            .context("the store has no step queue")?;
        let mut count = 0;
        while self.running() < options.concurrency {
            let Some(task) = queue.claim_task(&self.name, &labels, TASK_LEASE)? else {
                break;
            };
            self.running.fetch_add(1, Ordering::SeqCst);
            self.start(task);
            count += 1;
        }
        Ok(count)
    }

    fn start(&self, task: ClaimedTask) {
        let store = self.store.clone();
        let executor = self.executor.clone();
        let ceiling = self.ceiling.clone();
        let home = self.home.clone();
        let name = self.name.clone();
        let running = self.running.clone();
        let ended = self.ended.clone();
        let end_signal = self.end_signal.clone();
        let workflows = self.workflows.clone();
        self.runtime.spawn(async move {
            let side = WorkerSide {
                store: &store,
                executor: &executor,
                ceiling: ceiling.as_ref(),
                home: &home,
                worker: &name,
            };
            match workflow_of(&*store, &workflows, &task.run_id) {
                Ok(workflow) => {
                    if !placement::run_task(&side, &workflow, task.clone()).await {
                        tracing::warn!(
                            "the outcome of step '{}' of run {} was not recorded: this worker's claim was lost",
                            task.step_id,
                            task.run_id
                        );
                    }
                }
                Err(error) => {
                    placement::refuse_task(&side, &task, &format!("{error:#}"));
                }
            }
            ended.fetch_add(1, Ordering::SeqCst);
            let (lock, signal) = &*end_signal;
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            running.fetch_sub(1, Ordering::SeqCst);
            signal.notify_all();
        });
    }
}

/// The pinned definition of `run_id`, loaded once per definition.
fn workflow_of(
    store: &dyn EngineStore,
    cache: &Definitions,
    run_id: &str,
) -> Result<Arc<LoadedWorkflow>> {
    let run = store.run(run_id)?;
    if let Some((hash, workflow)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(run_id) {
        if *hash == run.definition_hash {
            return Ok(workflow.clone());
        }
    }
    let workflow = Arc::new(super::runs::workflow_of(store.home(), &run)?);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(run_id.to_string(), (run.definition_hash, workflow.clone()));
    Ok(workflow)
}

/// Every label the steps of `run` ask for (`runs_on:`): its driver runs
/// on a machine that has them all (agent steps and steps keeping
/// artifacts run in the driver; with placement, the other steps go to any
/// worker with their own labels). A definition that no longer loads asks
/// for nothing (its driver reports why it cannot run).
fn labels_asked(home: &Path, run: &RunRecord) -> BTreeSet<String> {
    let Ok(workflow) = super::runs::workflow_of(home, run) else {
        return BTreeSet::new();
    };
    workflow
        .def
        .steps
        .iter()
        .flat_map(|step| step.runs_on.iter().cloned())
        .collect()
}

/// Runs nobody drives, most urgent first: higher priority, then older.
/// Also returns the open runs (pending or running) nobody waits for: the
/// ones other processes drive.
fn waiting_runs(store: &dyn EngineStore) -> Result<(Vec<RunRecord>, Vec<RunRecord>)> {
    let (mut runs, driven): (Vec<RunRecord>, Vec<RunRecord>) =
        store.open_runs()?.into_iter().partition(|run| {
            run.status == RunStatus::Pending || (run.status == RunStatus::Running && run.stale)
        });
    runs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.created_at.cmp(&b.created_at))
    });
    Ok((runs, driven))
}

/// Forget the drivers that ended; returns how many did.
fn reap(
    driving: &mut HashMap<String, Child>,
    store: &dyn EngineStore,
    listener: &dyn WorkerListener,
) -> usize {
    let before = driving.len();
    driving.retain(|run_id, child| match child.try_wait() {
        Ok(None) => true,
        Ok(Some(status)) => {
            listener.ended(
                run_id,
                &where_left(store, run_id, child.id(), status.code()),
            );
            false
        }
        Err(_) => {
            listener.ended(run_id, "lost (its driver could not be waited for)");
            false
        }
    });
    before - driving.len()
}

/// Where a driver that ended (process `pid`, exit `code`) left its run, as
/// the store tells.
fn where_left(store: &dyn EngineStore, run_id: &str, pid: u32, code: Option<i32>) -> String {
    let Ok(run) = store.run(run_id) else {
        return match code {
            Some(code) => format!("its driver ended with exit code {code}"),
            None => "its driver ended by a signal".to_string(),
        };
    };
    let why = run
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match run.status {
        RunStatus::Running | RunStatus::Pending
            if run.driver_pid.is_some_and(|p| p != i64::from(pid)) =>
        {
            "taken by another worker first".to_string()
        }
        RunStatus::Running | RunStatus::Pending => {
            "its driver stopped; the run waits for another worker".to_string()
        }
        status => format!("{}{why}", status.as_str()),
    }
}

/// `wfhost resume RUN` for `run_id`, dying with this process, in its own
/// process group (a Ctrl-C at the worker's terminal is the worker's to
/// handle), its output appended to the run folder's `driver.log`.
fn start_driver(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    run_id: &str,
    placing: bool,
) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let (mut command, _log) = super::background::driver_command(
        home,
        config,
        store,
        run_id,
        &["resume", run_id, "--quiet"],
    )?;
    if placing {
        command.env(PLACE_STEPS_VARIABLE, "1");
    }
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
