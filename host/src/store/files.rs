//! The human-readable folder of a run: `runs/<run-id>/`.
//!
//! ```text
//! runs/<run-id>/progress.md            the run at a glance, rewritten as it goes
//! runs/<run-id>/events.jsonl           every event of the run
//! runs/<run-id>/scratch/<step>/        a program step's private directory
//! ```
//!
//! The database is the source of truth; these files are a mirror for people,
//! kept by [`RunFolders`], an observer of the store's commits. The engine
//! rewrites `progress.md` itself through [`RunFiles`], at most every few
//! hundred milliseconds. Per-step files (input, output, events, summary)
//! are not written while a run goes: creating a directory and several files
//! per step cost more than the step itself on an ordinary disk. `wfhost
//! export` writes them from the store on demand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::observer::{Committed, StoreObserver};
use super::{Result, StoreError};

/// The run-folder mirror: follows a store's commits into `runs/<run-id>/`
/// under a home directory.
///
/// The files are written by one background thread, so a step's transition
/// never waits on them: each commit is queued (a copy of what changed), and
/// the writer takes everything queued at once, appends each file's lines
/// in one write and creates each directory once. The mirror may lag the
/// store by what is queued; [`StoreObserver::flush`] (and dropping the last
/// clone) waits for it to catch up. A crash can lose what was queued; the
/// store stays the truth.
#[derive(Clone)]
pub struct RunFolders {
    runs: PathBuf,
    writer: Arc<Writer>,
}

impl std::fmt::Debug for RunFolders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunFolders")
            .field("runs", &self.runs)
            .finish()
    }
}

impl RunFolders {
    /// The folders of runs stored under `home` (in `home/runs/`).
    pub fn new(home: &Path) -> RunFolders {
        RunFolders {
            runs: home.join("runs"),
            writer: Arc::new(Writer::start()),
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
        let job = match *change {
            Committed::RunCreated { .. } => Job::CreateDir(files.dir),
            Committed::Event {
                step_id,
                at,
                kind,
                data,
                ..
            } => {
                let line =
                    serde_json::json!({ "at": at, "step": step_id, "kind": kind, "data": data });
                Job::Append {
                    line: format!("{line}\n"),
                    run_dir: files.dir,
                }
            }
            Committed::RunRemoved { .. } => {
                let (done, result) = mpsc::sync_channel(1);
                self.writer.send(Job::Remove {
                    dir: files.dir,
                    done,
                });
                return result.recv().unwrap_or(Ok(()));
            }
        };
        self.writer.send(job);
        Ok(())
    }

    fn flush(&self) {
        self.writer.flush();
    }
}

/// What the writer thread is asked to do, in commit order.
enum Job {
    CreateDir(PathBuf),
    Append {
        run_dir: PathBuf,
        line: String,
    },
    /// Remove a run's folder; the result goes back to the caller.
    Remove {
        dir: PathBuf,
        done: mpsc::SyncSender<Result<()>>,
    },
    /// Everything before this is on disk.
    Flush(mpsc::SyncSender<()>),
}

/// Jobs queued for the writer at most: past it, a commit waits for the
/// writer (memory stays bounded when the disk is slower than the steps).
const QUEUE_DEPTH: usize = 1024;

/// How long the writer lets commits gather after a batch before it writes
/// the next. A commit does not wake it meanwhile: waking a thread at every
/// commit (a futex wake and a context switch) cost more than a no-op step.
/// A flush, a removal or a full queue wake it at once.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The jobs queued for the writer, and whether it waits to be woken.
#[derive(Default)]
struct Queue {
    jobs: std::collections::VecDeque<Job>,
    /// The writer sleeps until a commit wakes it (nothing was queued
    /// during its last gathering).
    idle: bool,
    /// No more jobs come: the writer writes what is queued and ends.
    closed: bool,
}

/// The queue and the writer's wake-ups.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes commits waiting for room in the queue.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The background thread writing run folders, and the queue to it.
struct Writer {
    /// None when the thread could not start: commits write in place.
    shared: Option<Arc<Shared>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    fn start() -> Writer {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wfhost-run-folders".into())
            .spawn(move || write_all(&for_thread))
            .map_err(|error| tracing::warn!("cannot start the run-folder writer: {error}"))
            .ok();
        Writer {
            shared: thread.as_ref().map(|_| shared),
            thread: Mutex::new(thread),
        }
    }

    fn send(&self, job: Job) {
        let Some(shared) = &self.shared else {
            // No thread: write in place.
            let mut batch = Batch::default();
            batch.run(job);
            batch.write_appends();
            return;
        };
        // A new run's folder is made at once: people (and `progress.md`)
        // look for it as the run starts.
        let urgent = matches!(job, Job::CreateDir(_) | Job::Remove { .. } | Job::Flush(_));
        let mut queue = shared.lock();
        while queue.jobs.len() >= QUEUE_DEPTH {
            shared.work.notify_one();
            queue = shared.room.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.jobs.push_back(job);
        if urgent || queue.idle {
            queue.idle = false;
            shared.work.notify_one();
        }
    }

    fn flush(&self) {
        let (done, finished) = mpsc::sync_channel(1);
        self.send(Job::Flush(done));
        let _ = finished.recv();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written the rest.
        if let Some(shared) = &self.shared {
            shared.lock().closed = true;
            shared.work.notify_one();
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes what is queued at once and writes it, then
/// lets the next commits gather (see [`GATHER`]).
fn write_all(shared: &Shared) {
    let mut batch = Batch::default();
    let mut queue = shared.lock();
    loop {
        if queue.jobs.is_empty() {
            if queue.closed {
                return;
            }
            // Nothing came while gathering: sleep until a commit wakes us.
            queue.idle = true;
            while queue.jobs.is_empty() && !queue.closed {
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            queue.idle = false;
            continue;
        }
        let jobs = std::mem::take(&mut queue.jobs);
        shared.room.notify_all();
        drop(queue);
        for job in jobs {
            batch.run(job);
        }
        batch.write_appends();
        // Bounded memory and descriptors over long-lived processes.
        if batch.made.len() > 100_000 {
            batch.made.clear();
        }
        if batch.open.len() > MAX_OPEN_JOURNALS {
            batch.open.clear();
        }
        queue = shared.lock();
        if queue.jobs.is_empty() && !queue.closed {
            queue = shared
                .work
                .wait_timeout(queue, GATHER)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Journals (`events.jsonl`) the writer keeps open between batches.
const MAX_OPEN_JOURNALS: usize = 64;

/// What the writer knows between jobs: appends gathered per file (in
/// order) until written, directories known to exist, journals open.
#[derive(Default)]
struct Batch {
    made: HashSet<PathBuf>,
    appends: BTreeMap<PathBuf, String>,
    open: HashMap<PathBuf, fs::File>,
}

impl Batch {
    fn run(&mut self, job: Job) {
        let outcome = match job {
            Job::CreateDir(dir) => self.dir(&dir),
            Job::Append { run_dir, line } => {
                self.appends
                    .entry(run_dir.join("events.jsonl"))
                    .or_default()
                    .push_str(&line);
                Ok(())
            }
            Job::Remove { dir, done } => {
                self.write_appends();
                self.made.retain(|made| !made.starts_with(&dir));
                self.open.retain(|path, _| !path.starts_with(&dir));
                let removed = match fs::remove_dir_all(&dir) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(io_error(&dir, error))
                    }
                    _ => Ok(()),
                };
                let _ = done.send(removed);
                Ok(())
            }
            Job::Flush(done) => {
                self.write_appends();
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(error) = outcome {
            tracing::warn!("the run folder could not be updated: {error}");
        }
    }

    /// Create `dir` (and its parents) unless this writer already did.
    fn dir(&mut self, dir: &Path) -> Result<()> {
        if self.made.contains(dir) {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        self.made.insert(dir.to_path_buf());
        Ok(())
    }

    /// One append per file of everything gathered.
    fn write_appends(&mut self) {
        for (path, text) in std::mem::take(&mut self.appends) {
            if let Err(error) = self.append(&path, &text) {
                self.open.remove(&path);
                tracing::warn!("the run folder could not be updated: {error}");
            }
        }
    }

    fn append(&mut self, path: &Path, text: &str) -> Result<()> {
        if !self.open.contains_key(path) {
            if let Some(dir) = path.parent() {
                self.dir(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| io_error(path, source))?;
            self.open.insert(path.to_path_buf(), file);
        }
        let Some(file) = self.open.get_mut(path) else {
            return Ok(());
        };
        file.write_all(text.as_bytes())
            .map_err(|source| io_error(path, source))
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

    /// The scratch folder of one step: its programs' private working
    /// directory (`TMPDIR`) and `WFHOST_OUTPUT` files live under it.
    pub fn scratch_dir(&self, step_id: &str) -> PathBuf {
        self.dir.join("scratch").join(step_id)
    }

    /// Rewrite the run's `progress.md` (making the run's folder if the
    /// mirror's writer has not made it yet).
    pub fn write_progress(&self, markdown: &str) -> Result<()> {
        let path = self.dir.join("progress.md");
        let written = match fs::write(&path, markdown) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).and_then(|()| fs::write(&path, markdown))
            }
            other => other,
        };
        written.map_err(|source| io_error(&path, source))
    }
}

/// Make a program's private directory (a step's scratch folder) and its
/// parents: readable by the host's user alone. An existing one is kept.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer thread does with a batch (and what a commit does in
    /// place when there is no thread): the lines land in the run's journal
    /// in order, its directory made on the way.
    #[test]
    fn a_batch_appends_to_the_run_journal() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/r1");
        let mut batch = Batch::default();
        for line in ["{\"a\":1}\n", "{\"b\":2}\n"] {
            batch.run(Job::Append {
                run_dir: run.clone(),
                line: line.to_string(),
            });
        }
        batch.write_appends();
        assert_eq!(
            fs::read_to_string(run.join("events.jsonl")).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        assert!(!run.join("steps").exists(), "no per-step files");
    }

    /// Commits gather between the writer's batches without waking it; a
    /// flush still finds every line written, in order, past a full queue
    /// (the commits that found it full waited for room), and what is
    /// queued when the mirror is dropped is written before the thread ends.
    #[test]
    fn gathered_commits_are_all_written_in_order_by_a_flush_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/r1");
        let journal = run.join("events.jsonl");
        let writer = Writer::start();
        writer.send(Job::CreateDir(run.clone()));
        let lines = |range: std::ops::Range<usize>| {
            range
                .map(|i| format!("{{\"n\":{i}}}\n"))
                .collect::<String>()
        };
        for i in 0..3 * QUEUE_DEPTH {
            writer.send(Job::Append {
                run_dir: run.clone(),
                line: format!("{{\"n\":{i}}}\n"),
            });
        }
        writer.flush();
        assert_eq!(
            fs::read_to_string(&journal).unwrap(),
            lines(0..3 * QUEUE_DEPTH)
        );
        for i in 3 * QUEUE_DEPTH..3 * QUEUE_DEPTH + 10 {
            writer.send(Job::Append {
                run_dir: run.clone(),
                line: format!("{{\"n\":{i}}}\n"),
            });
        }
        drop(writer);
        assert_eq!(
            fs::read_to_string(&journal).unwrap(),
            lines(0..3 * QUEUE_DEPTH + 10)
        );
    }
}
