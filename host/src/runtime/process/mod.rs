//! The `process` interface: start a program the step's `exec` grant allows.
//!
//! The child runs outside wasm, so the host confines it with what the OS
//! offers (the mechanics are in `sandbox/`):
//!
//! - **Environment**: cleared except `PATH`, the step's granted variables,
//!   `WFHOST_*` and `TMPDIR`, plus what the call itself sets.
//! - **Files** (Landlock): the granted directories, read-only or read-write
//!   as granted; the system directories for binaries and libraries (`/usr`,
//!   `/bin`, `/sbin`, `/lib*`, read only) and the dynamic loader's and
//!   time zone's files of `/etc`, but not the rest of `/etc` (`cat
//!   /etc/passwd` fails with "Permission denied"); `/dev/null`, `/dev/zero`,
//!   `/dev/full`, `/dev/random`, `/dev/urandom` (not `/dev/tty`: a program
//!   never talks to the host's terminal, it has none); the programs of the
//!   step's `exec` grant and the dynamic loader each names (read and
//!   execute, wherever they live: the only files anything in the tree may
//!   `execve`; a tool that needs more, like a rustup proxy's toolchains,
//!   needs `files` and `exec` grants); a refused `execve` shows in the
//!   program's stderr as "Permission denied", and the host adds a line
//!   naming the grant to add;
//!   the private directory, where the `WFHOST_OUTPUT` file goes too
//!   (read-write). With a
//!   `network` grant also the resolver and TLS configuration
//!   (`/etc/resolv.conf`, `/etc/hosts`, `/etc/nsswitch.conf`, `/etc/ssl`,
//!   `/etc/ca-certificates`, ...), read-only. `/proc`, `/sys`, `/tmp` and
//!   the home directory are closed.
//! - **Working directory**: the requested one, by default the workflow's
//!   directory (or the step's `working_directory`), whether or not a `files`
//!   grant covers it: where a program starts is not what it may access, so
//!   `echo x >> out/log` works with a grant on `./out` alone and `ls` of an
//!   ungranted workflow folder fails with "Permission denied". `TMPDIR`
//!   names a private directory of the step, its scratch folder
//!   (`runs/<run>/scratch/<step>/`, read-write), so temporary files work
//!   without a grant.
//! - **Network**: none without a `network` grant (the program runs in a
//!   fresh network namespace: every connection fails with "Network is
//!   unreachable"). With one, the program shares the host's network and
//!   Landlock limits TCP: it may connect only to the granted ports (any
//!   port when a grant names none) and may not listen. Landlock cannot
//!   filter by host name or address, so a grant of `api.example.com:443`
//!   lets the program reach port 443 of any host.
//! - **Privileges and processes**: a user namespace maps the host's uid to
//!   itself and nothing else, so a program started by a root host has no
//!   privilege over the machine; `no_new_privs` disables set-uid binaries;
//!   Landlock scoping stops signals and abstract unix sockets at the
//!   sandbox's edge; the tree may hold at most 512 tasks (processes and
//!   threads: a `pids` cgroup, or `RLIMIT_NPROC` when the host is not
//!   root), so a fork bomb stays small and the host responsive.
//! - **Lifetime**: its own session and process group, in a pid namespace
//!   whose init ends with the program, taking every process the program
//!   left behind with it. At the deadline (the call's `timeout-ms`, or the
//!   step's), or when the step is cancelled, the whole tree gets SIGTERM,
//!   then SIGKILL after the step's `kill_grace` (default 2 s); the host
//!   waits for that before it lets go of the step. If the host itself dies, the program's
//!   tree is killed too.
//! - **Output**: stdout and stderr are each kept up to the step's
//!   `max_output`, with a marker saying how much was cut; the rest is read
//!   and dropped, so a program writing gigabytes neither stalls nor fills
//!   the host's memory. The `WFHOST_OUTPUT` file has the same budget: one
//!   larger than `max_output` (checked on the open file before reading, so
//!   a sparse file of any size costs nothing) fails the call with a message
//!   naming the budget; it is read only if it is still a regular file.
//!
//! When the kernel cannot enforce part of this, a step in `sandbox: strict`
//! mode (the default) gets an error naming what is missing, and a step in
//! `sandbox: best-effort` mode runs the program with what is available and
//! gets a warning in its log. Denials are values (`process-error::denied`),
//! never traps.
//!
//! Not confined here: the memory and CPU time of started programs (the
//! `memory` grant bounds the wasm step only; the deadline bounds the time);
//! with a `network` grant, UDP and the choice of host; connecting to unix
//! sockets by path (say `/run/docker.sock`) on kernels whose Landlock is
//! older than ABI 9, where the host's user may reach them. Each running
//! program keeps two small waiting processes (forks of the launcher, see
//! [`super::sandbox`], or of the host where there is no launcher).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

mod lines;
mod output;
mod tree;

use super::bindings::process::{self, Output, ProcessError};
use super::sandbox::{self, Support};
use super::state::{StepContext, StepState};
use crate::step::executor::{lease_lost, LeaseCheck, LogLevel};
use crate::step::grants::{exec, resolve_program, ResolvedGrants};
use crate::step::stop::StopSignal;
use output::{output_file_path, read_capped, read_output_file, RemoveOnDrop};
use tree::ChildTree;

/// How long the output readers may take to reach the end of their pipes
/// once the program's tree is dead.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

impl process::Host for StepState {
    async fn run(&mut self, command: process::Command) -> Result<Output, ProcessError> {
        let step = self.step.clone();
        run_program(&step, command, false).await
    }

    async fn run_streamed(&mut self, command: process::Command) -> Result<Output, ProcessError> {
        let step = self.step.clone();
        run_program(&step, command, true).await
    }
}

/// Check the request against the step's grants, then run it sandboxed;
/// `streamed`: its output lines go to the step's log as they are written.
async fn run_program(
    step: &StepContext,
    request: process::Command,
    streamed: bool,
) -> Result<Output, ProcessError> {
    let invocation = &step.invocation;
    let program = exec::authorize(&invocation.grants.exec, &request.program)?;
    if step.stop.fired() {
        return Err(ProcessError::Failed(
            "the step is being stopped (timed out or cancelled): no new program starts".into(),
        ));
    }

    let env = program_env(
        &invocation.grants,
        &StepIds {
            run_id: &invocation.run_id,
            step_id: &invocation.step_id,
            attempt: invocation.attempt,
            idempotency_key: &invocation.idempotency_key,
        },
    );
    let extra_env = request
        .env
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect();

    let mut timeout = step
        .deadline
        .saturating_duration_since(tokio::time::Instant::now());
    if let Some(ms) = request.timeout_ms {
        timeout = timeout.min(Duration::from_millis(ms));
    }
    let spec = ProgramSpec {
        program,
        name: request.program,
        args: request.args,
        // A step's `working_directory` that is gone is an error, like a
        // `cwd` the call names; only the workflow's own folder falls back.
        cwd: match request.cwd {
            Some(dir) => Some(invocation.workdir.join(dir)),
            None if invocation.cwd != invocation.workdir => Some(invocation.cwd.clone()),
            None => None,
        },
        workdir: invocation.cwd.clone(),
        env,
        extra_env,
        stdin: request.stdin,
        timeout,
        grants: &invocation.grants,
        scratch_dir: invocation.scratch_dir.clone(),
        capture_output_file: request.capture_output_file,
        stop: step.stop.signal(),
        lease: invocation.lease.clone(),
        live_output: streamed.then(|| step.observer.clone()),
    };
    let observer = step.observer.clone();
    let log = move |message: &str| observer.log(LogLevel::Warn, message);
    let _running = step.program_started();
    run_sandboxed(&spec, &log).await
}

/// Which attempt of which step a started program works for.
pub(crate) struct StepIds<'a> {
    /// `WFHOST_RUN_ID`.
    pub run_id: &'a str,
    /// `WFHOST_STEP_ID`.
    pub step_id: &'a str,
    /// `WFHOST_ATTEMPT`.
    pub attempt: u32,
    /// `WFHOST_IDEMPOTENCY_KEY`.
    pub idempotency_key: &'a str,
}

/// The environment every program a step starts (through `process` or an
/// agent's `exec` tool) begins with: the host's `PATH`, the step's granted
/// variables and the `WFHOST_*` ids, in that order.
pub(crate) fn program_env(grants: &ResolvedGrants, ids: &StepIds) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path));
    }
    env.extend(crate::step::grants::sandbox_plan(grants).env);
    env.push(("WFHOST_RUN_ID".into(), ids.run_id.into()));
    env.push(("WFHOST_STEP_ID".into(), ids.step_id.into()));
    env.push(("WFHOST_ATTEMPT".into(), ids.attempt.to_string().into()));
    env.push(("WFHOST_IDEMPOTENCY_KEY".into(), ids.idempotency_key.into()));
    env
}

/// One authorised program to run, everything decided except the sandbox.
pub(crate) struct ProgramSpec<'a> {
    /// Absolute path of the program (already checked against `exec`).
    pub program: PathBuf,
    /// The name it sees as its own (argv[0]): the one it was asked by
    /// (`sleep`, as a shell passes it), not the resolved path.
    pub name: String,
    /// Arguments, without the program.
    pub args: Vec<String>,
    /// The working directory asked for, absolute; `None`: `workdir`.
    pub cwd: Option<PathBuf>,
    /// The default working directory: the workflow's directory, or the
    /// step's `working_directory`.
    pub workdir: PathBuf,
    /// `PATH`, granted variables, `WFHOST_*`, in order.
    pub env: Vec<(OsString, OsString)>,
    /// Variables the call sets (after `TMPDIR`, so they may override it).
    pub extra_env: Vec<(OsString, OsString)>,
    /// Bytes for standard input, then closed.
    pub stdin: Option<Vec<u8>>,
    /// When to stop the program.
    pub timeout: Duration,
    /// The step's grants.
    pub grants: &'a ResolvedGrants,
    /// The step's private directory for host-side files.
    pub scratch_dir: PathBuf,
    /// Whether to create a `WFHOST_OUTPUT` file.
    pub capture_output_file: bool,
    /// Fires when the step must end before the program did: the program
    /// gets SIGTERM, then SIGKILL after the grants' `kill_grace`.
    pub stop: StopSignal,
    /// Asked right before the program is forked: a driver that was stopped
    /// past its lease (SIGSTOP) and continued must not start a program the
    /// run's new driver may be running too. Asked last, after the sandbox
    /// is prepared, so a pause anywhere before cannot slip past it.
    pub lease: LeaseCheck,
    /// Where the program's output lines go as they are written (stdout at
    /// info, stderr at warn), if anywhere.
    pub live_output: Option<std::sync::Arc<dyn crate::step::executor::StepObserver>>,
}

/// Run an authorised program in the OS sandbox, with this machine's
/// [`sandbox::support`]. `log` receives warnings for the step's log.
pub(crate) async fn run_sandboxed(
    spec: &ProgramSpec<'_>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Output, ProcessError> {
    run_with_support(spec, sandbox::support(), log).await
}

async fn run_with_support(
    spec: &ProgramSpec<'_>,
    support: &Support,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Output, ProcessError> {
    let failed = |what: String| ProcessError::Failed(what);
    let private_dir = &spec.scratch_dir;
    crate::store::files::create_private_dir(private_dir)
        .map_err(|e| failed(format!("cannot create '{}': {e}", private_dir.display())))?;
    let cwd = working_dir(spec, private_dir, log)?;
    let output_file = spec
        .capture_output_file
        .then(|| output_file_path(private_dir));
    // Removed however this function ends.
    let _output_guard = output_file.clone().map(RemoveOnDrop);

    let mut prepared = sandbox::prepare(
        &sandbox::Request {
            grants: spec.grants,
            program: &spec.program,
            private_dir,
        },
        support,
    )
    .map_err(failed)?;
    for warning in &prepared.warnings {
        log(warning);
    }

    let env = program_env_map(spec, private_dir, output_file.as_deref());
    let launch = sandbox::Launch {
        program: &spec.program,
        name: std::ffi::OsStr::new(&spec.name),
        args: &spec.args,
        env: &env,
        cwd: &cwd,
        stdin: spec.stdin.is_some(),
    };

    if !spec.lease.holds() {
        return Err(failed(lease_lost("the program was not started")));
    }
    let mut tree = ChildTree {
        pgid: None,
        cgroup: prepared.take_cgroup(),
    };
    let mut child = sandbox::start(&prepared, &launch).await.map_err(failed)?;
    drop(prepared);
    // The child called setsid: its pid is its process group's id.
    tree.pgid = Some(child.pid);
    // Asked again now the program exists: a driver stopped (SIGSTOP)
    // during the fork resumes it only when continued, maybe after another
    // process took the run over. The program has just exec'd (spawn returns
    // then) and is killed before it gets further.
    if !spec.lease.holds() {
        tree.signal(libc::SIGKILL);
        let _ = child.wait().await;
        tree.finish().await;
        return Err(failed(lease_lost("the program was stopped as it started")));
    }

    if let (Some(bytes), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A child that does not read its input is not an error.
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let cap = usize::try_from(spec.grants.max_output).unwrap_or(usize::MAX);
    let (stop, stopped) = watch::channel(false);
    let splitter = |level| {
        spec.live_output
            .clone()
            .map(|observer| lines::LineSplitter::new(lines::step_log(observer, level)))
    };
    let stdout = tokio::spawn(read_capped(
        child.stdout.take(),
        cap,
        stopped.clone(),
        splitter(LogLevel::Info),
    ));
    let stderr = tokio::spawn(read_capped(
        child.stderr.take(),
        cap,
        stopped,
        splitter(LogLevel::Warn),
    ));

    let (status, timed_out) = wait_or_stop(&mut child, &tree, spec).await;
    // Programs the step started do not outlive it: whatever is left of the
    // tree (background jobs holding the pipes open) is killed now.
    tree.finish().await;
    let status = status.map_err(|error| failed(format!("waiting for program: {error}")))?;

    // The readers end when the last writer is gone; something outside the
    // sandbox's reach that still holds the pipes is given up on.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(DRAIN_GRACE).await;
        let _ = stop.send(true);
    });
    let stdout = stdout.await.unwrap_or_default();
    let mut stderr = stderr.await.unwrap_or_default();
    stopper.abort();
    // The hints go to stderr, which the step's plugin quotes in its error,
    // and (streamed) to the log, which got the rest of stderr already.
    for hint in exec_denial_hints(&stderr, spec) {
        if let Some(observer) = &spec.live_output {
            observer.log(LogLevel::Warn, &hint);
        }
        stderr.extend_from_slice(format!("{hint}\n").as_bytes());
    }

    let output_file = match &output_file {
        Some(path) => Some(read_output_file(path, spec.grants.max_output).await?),
        None => None,
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(Output {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        timed_out,
        output_file,
    })
}

/// The program's whole environment: what the step gives (the grants'
/// variables, then the call's), `TMPDIR` (the private directory, unless
/// the step sets it) and `WFHOST_OUTPUT`; a later value of a name wins.
fn program_env_map(
    spec: &ProgramSpec<'_>,
    private_dir: &Path,
    output_file: Option<&Path>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = spec.env.iter().cloned().collect();
    env.entry("TMPDIR".into())
        .or_insert_with(|| private_dir.into());
    env.extend(spec.extra_env.iter().cloned());
    if let Some(path) = output_file {
        env.insert("WFHOST_OUTPUT".into(), path.into());
    }
    env
}

/// Wait for the program to end, or stop it (timeout, or the step is
/// stopping); returns how it ended and whether it timed out.
async fn wait_or_stop(
    child: &mut sandbox::Started,
    tree: &ChildTree,
    spec: &ProgramSpec<'_>,
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    let mut step_stop = spec.stop.clone();
    let ended = tokio::select! {
        status = child.wait() => Some(status),
        _ = tokio::time::sleep(spec.timeout) => None,
        _ = step_stop.wait() => None,
    };
    let timed_out = ended.is_none() && !step_stop.is_set();
    let status = match ended {
        Some(status) => status,
        None => {
            // Graceful, then certain: SIGTERM to the whole tree, and
            // SIGKILL to whatever is left after the grace.
            tree.signal(libc::SIGTERM);
            match tokio::time::timeout(spec.grants.kill_grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tree.signal(libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    (status, timed_out)
}

/// Hints for programs the sandbox refused to `execve`: a shell reports
/// them as `<shell>: <where>: <program>: Permission denied`. A line names
/// a refused program when that program exists (on `PATH`, or as a path)
/// and is not among the step's grants; a file that could not be read is
/// no program and gets no hint.
fn exec_denial_hints(stderr: &[u8], spec: &ProgramSpec) -> Vec<String> {
    let mut hints = Vec::new();
    for line in String::from_utf8_lossy(stderr).lines() {
        let Some(head) = line.strip_suffix(": Permission denied") else {
            continue;
        };
        let program = head.rsplit(": ").next().unwrap_or(head).trim();
        let Some(path) = resolve_program(program) else {
            continue;
        };
        let granted =
            path == spec.program || spec.grants.exec.iter().any(|grant| grant.path == path);
        let name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string());
        let hint = format!(
            "[wfhost: '{program}' was not started: a step may execute only the programs of \
             its exec grant; add grants: {{ exec: [{name}] }} (or exec: [\"@coreutils\"] for \
             the common tools)]"
        );
        if !granted && !hints.contains(&hint) {
            hints.push(hint);
        }
    }
    hints
}

/// The program's working directory: the requested one, else the step's
/// default (the workflow's directory or its `working_directory`). It says
/// where the program starts, not what it may access: outside the `files`
/// grants the sandbox refuses every access there all the same (so a
/// relative path into a granted folder works, `ls` of the rest does not).
/// A default that no longer exists falls back to the private directory.
fn working_dir(
    spec: &ProgramSpec,
    private_dir: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<PathBuf, ProcessError> {
    let requested = spec.cwd.as_ref().unwrap_or(&spec.workdir);
    match std::fs::metadata(requested) {
        Ok(meta) if meta.is_dir() => Ok(requested.clone()),
        _ if spec.cwd.is_some() => Err(ProcessError::Failed(format!(
            "working directory '{}' does not exist",
            requested.display()
        ))),
        _ => {
            log(&format!(
                "working directory '{}' does not exist; the program runs in its private \
                 directory instead",
                requested.display()
            ));
            Ok(private_dir.to_path_buf())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::step::grants::{EnvGrant, ExecGrant, NetworkGrant};
    use crate::workflow::model::SandboxMode;

    /// Whether this machine can run the sandbox tests (Landlock and
    /// namespaces); they are skipped, loudly, where it cannot, except under
    /// `CI=true`, where a missing feature fails the test: CI must never
    /// pass without having tested the sandbox.
    fn sandbox_available() -> bool {
        let support = sandbox::support();
        let ok = support.landlock_abi >= 4 && support.namespaces.net && support.namespaces.pid;
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but this kernel lacks Landlock ABI 4 or namespaces ({support:?})"
            );
            eprintln!("skipped: no Landlock ABI 4 or namespaces here ({support:?})");
        }
        ok
    }

    fn exec(name: &str) -> ExecGrant {
        ExecGrant {
            name: name.to_string(),
            path: resolve_program(name).unwrap_or_else(|| panic!("{name} is not installed")),
        }
    }

    /// A step's world: a workflow directory, a scratch directory, grants.
    struct World {
        root: tempfile::TempDir,
        grants: ResolvedGrants,
    }

    impl World {
        fn new() -> World {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join("workflow")).unwrap();
            World {
                root,
                grants: ResolvedGrants {
                    exec: vec![exec("sh")],
                    ..ResolvedGrants::default()
                },
            }
        }

        fn workdir(&self) -> PathBuf {
            self.root.path().join("workflow").canonicalize().unwrap()
        }

        fn scratch(&self) -> PathBuf {
            self.root.path().join("scratch")
        }

        /// A directory under the workflow directory, granted as asked.
        fn grant_dir(&mut self, name: &str, writable: bool) -> PathBuf {
            let dir = self.workdir().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            self.grants.files.push((dir.clone(), writable));
            dir
        }

        fn spec(&self, program: &str, args: &[&str]) -> ProgramSpec<'_> {
            ProgramSpec {
                program: resolve_program(program).unwrap(),
                name: program.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
                cwd: None,
                workdir: self.workdir(),
                env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
                extra_env: Vec::new(),
                stdin: None,
                timeout: Duration::from_secs(20),
                grants: &self.grants,
                scratch_dir: self.scratch(),
                capture_output_file: false,
                stop: StopSignal::never(),
                live_output: None,
                lease: Default::default(),
            }
        }

        fn sh(&self, script: &str) -> ProgramSpec<'_> {
            self.spec("sh", &["-c", script])
        }

        /// Grant these programs too.
        fn allow(&mut self, programs: &[&str]) {
            self.grants.exec.extend(programs.iter().map(|p| exec(p)));
        }
    }

    /// Run with this machine's support; returns the result and the warnings.
    async fn run(spec: &ProgramSpec<'_>) -> (Result<Output, ProcessError>, Vec<String>) {
        run_with(spec, sandbox::support()).await
    }

    async fn run_with(
        spec: &ProgramSpec<'_>,
        support: &Support,
    ) -> (Result<Output, ProcessError>, Vec<String>) {
        let warnings = Mutex::new(Vec::new());
        let log = |message: &str| warnings.lock().unwrap().push(message.to_string());
        let result = run_with_support(spec, support, &log).await;
        (result, warnings.into_inner().unwrap())
    }

    async fn output(spec: &ProgramSpec<'_>) -> Output {
        match run(spec).await.0 {
            Ok(output) => output,
            Err(error) => panic!("cannot run: {error:?}"),
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test]
    async fn granted_dir_is_readable_but_the_rest_of_etc_is_not() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["cat"]);
        let docs = world.grant_dir("docs", false);
        std::fs::write(docs.join("note.txt"), "granted text\n").unwrap();
        let mut spec = world.sh("cat note.txt && cat /etc/passwd");
        spec.cwd = Some(docs.clone());
        let out = output(&spec).await;
        assert_eq!(text(&out.stdout), "granted text\n");
        assert!(
            text(&out.stderr).contains("/etc/passwd: Permission denied"),
            "{}",
            text(&out.stderr)
        );
        assert_ne!(out.exit_code, Some(0));
    }

    #[tokio::test]
    async fn writes_need_a_read_write_grant() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["mkdir", "rm"]);
        let read_only = world.grant_dir("ro", false);
        let writable = world.grant_dir("rw", true);
        let script = format!(
            "echo one > {ro}/new.txt; echo two > {rw}/new.txt && mkdir {rw}/sub && \
             echo three > {rw}/sub/f && rm {rw}/sub/f",
            ro = read_only.display(),
            rw = writable.display()
        );
        let out = output(&world.sh(&script)).await;
        assert_eq!(out.exit_code, Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("ro/new.txt: Permission denied"));
        assert!(!read_only.join("new.txt").exists());
        assert_eq!(
            std::fs::read_to_string(writable.join("new.txt")).unwrap(),
            "two\n"
        );
        // Outside every grant, even where the host's user may write.
        let outside = world.root.path().join("outside.txt");
        let out = output(&world.sh(&format!("echo x > {}", outside.display()))).await;
        assert_ne!(out.exit_code, Some(0));
        assert!(!outside.exists());
    }

    #[tokio::test]
    async fn the_working_directory_is_where_a_program_starts_not_what_it_may_access() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["cat", "ls"]);
        let out_dir = world.grant_dir("out", true);
        // The workflow directory is not granted: the program starts there
        // all the same, may write into the granted `out/` by a relative
        // path, may not list the rest; TMPDIR is its private directory.
        let out = output(&world.sh(
            "pwd; echo \"$TMPDIR\"; echo kept > out/file && cat out/file; ls . || echo refused",
        ))
        .await;
        let private = world.scratch();
        let expected = format!(
            "{}\n{}\nkept\nrefused\n",
            world.workdir().display(),
            private.display()
        );
        assert_eq!(text(&out.stdout), expected, "{}", text(&out.stderr));
        assert!(out_dir.join("file").exists());

        // The default gone (the workflow's folder was removed): the
        // private directory, with a warning.
        let mut spec = world.sh("pwd");
        spec.workdir = world.root.path().join("removed");
        let (result, warnings) = run(&spec).await;
        assert_eq!(
            text(&result.unwrap().stdout).trim(),
            private.canonicalize().unwrap().to_str().unwrap()
        );
        assert!(warnings[0].contains("does not exist"), "{warnings:?}");

        // A missing directory asked for is an error.
        spec.cwd = Some(world.root.path().join("missing"));
        match run(&spec).await.0 {
            Err(ProcessError::Failed(message)) => assert!(message.contains("does not exist")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_granted_working_directory_is_kept() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.grants.files.push((world.workdir(), false));
        let out = output(&world.sh("pwd")).await;
        assert_eq!(text(&out.stdout).trim(), world.workdir().to_str().unwrap());
    }

    #[tokio::test]
    async fn the_environment_holds_only_what_was_given() {
        let mut world = World::new();
        world.grants.exec.push(exec("env"));
        world.grants.env.push(EnvGrant {
            name: "GRANTED".into(),
            value: Some("yes".into()),
        });
        let mut spec = world.spec("env", &[]);
        spec.env.push(("GRANTED".into(), "yes".into()));
        spec.extra_env.push(("FROM_CALL".into(), "1".into()));
        let out = output(&spec).await;
        let mut names: Vec<String> = text(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name.to_string()))
            .collect();
        names.sort();
        assert_eq!(names, ["FROM_CALL", "GRANTED", "PATH", "TMPDIR"]);
        assert!(std::env::vars().count() > 4, "the host has more variables");
    }

    #[tokio::test]
    async fn network_needs_a_grant_and_is_limited_to_its_ports() {
        if !sandbox_available() {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut world = World::new();
        world.grants.exec.push(exec("bash"));
        let connect = format!("echo hello > /dev/tcp/127.0.0.1/{port}");
        let accepted = |listener: &TcpListener| -> Option<String> {
            let (mut stream, _) = listener.accept().ok()?;
            stream.set_nonblocking(false).ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).ok()?;
            Some(text)
        };

        // No grant: a network namespace with nothing in it.
        let out = output(&world.spec("bash", &["-c", &connect])).await;
        assert_ne!(out.exit_code, Some(0));
        assert!(
            text(&out.stderr).contains("Network is unreachable"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(accepted(&listener), None);

        // A grant for another port: Landlock refuses the connection.
        world.grants.network = vec![NetworkGrant::parse("127.0.0.1:1").unwrap()];
        let out = output(&world.spec("bash", &["-c", &connect])).await;
        assert_ne!(out.exit_code, Some(0));
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(accepted(&listener), None);

        // A grant for this port.
        world.grants.network = vec![NetworkGrant::parse(&format!("127.0.0.1:{port}")).unwrap()];
        let out = output(&world.spec("bash", &["-c", &connect])).await;
        assert_eq!(out.exit_code, Some(0), "{}", text(&out.stderr));
        assert_eq!(accepted(&listener).as_deref(), Some("hello\n"));
    }

    /// Processes whose command line contains `marker`.
    fn processes_with(marker: &str) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_fork_bomb_is_contained_and_leaves_nothing_behind() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["sleep"]);
        // A function name no other process uses, to find the bomb's
        // processes (forks of the shell keep its command line).
        let name = format!("bomb_{}", uuid::Uuid::new_v4().simple());
        let mut spec = world.sh(&format!(
            "{name}() {{ {name} | {name} & }}; {name}; sleep 60"
        ));
        spec.timeout = Duration::from_secs(3);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (done, name) = (done.clone(), name.clone());
            std::thread::spawn(move || {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(processes_with(&name).len());
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        let started = Instant::now();
        let out = output(&spec).await;
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = watcher.join().unwrap();
        // Stopped at the deadline, unless the main shell died first of a
        // fork refused (dash gives up then).
        assert!(
            out.timed_out || out.exit_code == Some(2),
            "{:?} {:?}",
            out.exit_code,
            out.signal
        );
        assert!(took < Duration::from_secs(15), "took {took:?}");
        // Forks were refused: the bomb reached the limit (MAX_TASKS).
        assert!(
            text(&out.stderr).contains("Cannot fork"),
            "the bomb never hit a limit ({peak} processes seen): {}",
            text(&out.stderr)
        );
        assert!(
            peak <= sandbox::MAX_TASKS as usize,
            "{peak} processes at the peak"
        );
        // The pid namespace's init took the whole tree with it.
        assert_eq!(
            processes_with(&name),
            Vec::<u32>::new(),
            "leftover processes"
        );
    }

    #[tokio::test]
    async fn a_program_ignoring_sigterm_is_killed() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["sleep"]);
        let mut spec = world.sh("trap '' TERM; echo ready; sleep 60; echo survived");
        spec.timeout = Duration::from_secs(1);
        let started = Instant::now();
        let out = output(&spec).await;
        assert!(out.timed_out);
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert_eq!(text(&out.stdout), "ready\n");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_polite_program_ends_on_sigterm() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["sleep"]);
        let mut spec = world.sh("sleep 60");
        spec.timeout = Duration::from_millis(300);
        let out = output(&spec).await;
        assert!(out.timed_out);
        assert_eq!(out.signal, Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn a_stopped_program_gets_sigterm_and_its_grace() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        world.allow(&["sleep"]);
        world.grants.kill_grace = Duration::from_millis(1500);
        let trigger = crate::step::stop::StopTrigger::new();
        // The TERM handler needs a second: only a grace lets it finish.
        let mut spec = world.sh("trap 'sleep 1; echo graceful; exit 0' TERM; sleep 60 & wait");
        spec.stop = trigger.signal();
        let firing = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.fire();
        };
        let (out, ()) = tokio::join!(output(&spec), firing);
        assert_eq!((out.exit_code, out.timed_out), (Some(0), false));
        assert_eq!(text(&out.stdout), "graceful\n");

        // One that ignores it is killed when the grace is over.
        world.grants.kill_grace = Duration::from_millis(200);
        let trigger = crate::step::stop::StopTrigger::new();
        let mut spec = world.sh("trap '' TERM; sleep 60");
        spec.stop = trigger.signal();
        let firing = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.fire();
        };
        let started = Instant::now();
        let (out, ()) = tokio::join!(output(&spec), firing);
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_stopping_step_starts_no_new_program() {
        struct Quiet;
        impl crate::step::executor::StepObserver for Quiet {
            fn log(&self, _: LogLevel, _: &str) {}
            fn progress(&self, _: &str, _: Option<f32>) {}
        }
        let world = World::new();
        let step = StepContext {
            invocation: crate::step::executor::StepInvocation {
                run_id: "r".into(),
                step_id: "s".into(),
                component: "script".into(),
                function: None,
                attempt: 1,
                idempotency_key: "r:s:0:1".into(),
                config: serde_json::Value::Null,
                inputs: serde_json::Value::Null,
                args: serde_json::Value::Null,
                workdir: world.workdir(),
                cwd: world.workdir(),
                grants: world.grants.clone(),
                timeout: Duration::from_secs(5),
                scratch_dir: world.scratch(),
                agent: None,
                cancel: Default::default(),
                lease: Default::default(),
                resume: None,
            },
            observer: std::sync::Arc::new(Quiet),
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
            agent: None,
            stop: crate::step::stop::StopTrigger::new(),
            programs: watch::Sender::new(0),
        };
        step.stop.fire();
        let request = process::Command {
            program: "sh".into(),
            args: vec!["-c".into(), "true".into()],
            cwd: None,
            env: Vec::new(),
            stdin: None,
            timeout_ms: None,
            capture_output_file: false,
        };
        match run_program(&step, request, false).await {
            Err(ProcessError::Failed(message)) => {
                assert!(message.contains("the step is being stopped"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(*step.programs.borrow(), 0);
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_through() {
        let world = World::new();
        let out = output(&world.sh("echo out; echo err >&2; exit 3")).await;
        assert_eq!(
            (
                out.exit_code,
                out.signal,
                text(&out.stdout),
                text(&out.stderr)
            ),
            (Some(3), None, "out\n".into(), "err\n".into())
        );
        let out = output(&world.sh("kill -USR1 $$")).await;
        assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGUSR1)));
        let mut spec = world.spec("sh", &[]);
        spec.stdin = Some(b"echo from stdin\n".to_vec());
        assert_eq!(text(&output(&spec).await.stdout), "from stdin\n");
    }

    #[tokio::test]
    async fn a_program_cannot_trace_or_kill_its_sandbox_s_init() {
        // Forked from the host (unit tests have no launcher): the init of
        // the program's pid namespace is pid 1 to it, not dumpable.
        let mut world = World::new();
        world.allow(&["/usr/bin/python3"]);
        let probe = "/usr/bin/python3 -c 'import ctypes, os, signal\n\
            libc = ctypes.CDLL(None, use_errno=True)\n\
            print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())\n\
            os.kill(1, signal.SIGKILL)\n\
            print(\"alive\")'";
        let out = output(&world.sh(probe)).await;
        assert_eq!(
            text(&out.stdout),
            format!("-1 {}\nalive\n", libc::EPERM),
            "{}",
            text(&out.stderr)
        );
    }

    #[tokio::test]
    async fn background_processes_do_not_outlive_the_program() {
        let mut world = World::new();
        world.allow(&["sleep"]);
        let started = Instant::now();
        let out = output(&world.sh("sleep 60 & echo started")).await;
        assert_eq!(text(&out.stdout), "started\n");
        assert!(!out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn output_is_capped_while_the_rest_is_drained() {
        let mut world = World::new();
        world.grants.max_output = 1 << 20;
        world.grants.exec.push(exec("head"));
        let gigabyte: u64 = 1 << 30;
        let out = output(&world.spec("head", &["-c", &gigabyte.to_string(), "/dev/zero"])).await;
        assert_eq!(out.exit_code, Some(0), "{}", text(&out.stderr));
        let marker = format!(
            "\n[wfhost: output cut, {} more bytes dropped]\n",
            gigabyte - (1 << 20)
        );
        assert_eq!(out.stdout.len(), (1 << 20) + marker.len());
        assert!(out.stdout.ends_with(marker.as_bytes()));
    }

    #[tokio::test]
    async fn the_output_file_is_writable_and_returned() {
        let world = World::new();
        let mut spec = world.sh("echo answer=42 >> \"$WFHOST_OUTPUT\"");
        spec.capture_output_file = true;
        let out = output(&spec).await;
        assert_eq!(out.output_file.as_deref(), Some(&b"answer=42\n"[..]));
        let left: Vec<_> = std::fs::read_dir(world.scratch())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("output-"))
            .collect();
        assert!(left.is_empty(), "the output file is removed");

        // A program that writes none returns an empty one: the file is
        // not made in advance.
        let mut spec = world.sh("test ! -e \"$WFHOST_OUTPUT\" && echo absent");
        spec.capture_output_file = true;
        let out = output(&spec).await;
        assert_eq!(text(&out.stdout), "absent\n", "{}", text(&out.stderr));
        assert_eq!(out.output_file.as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_file_the_program_may_not_read_cannot_become_its_output_file() {
        if !sandbox_available() {
            return;
        }
        // The output file lies in the program's own directory, which the
        // host reads from; a file outside the program's reach cannot be
        // linked or moved there (Landlock's `REFER`), so the host never
        // reads it on the program's behalf.
        let mut world = World::new();
        world.allow(&["ln", "mv"]);
        let hidden = world.workdir().join("hidden");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("secret"), "hidden").unwrap();
        for (how, what) in [
            ("ln", hidden.join("secret")),
            ("mv", hidden.join("secret")),
            ("ln", PathBuf::from("/etc/passwd")),
        ] {
            let script = format!("{how} '{}' \"$WFHOST_OUTPUT\"", what.display());
            let mut spec = world.sh(&script);
            spec.capture_output_file = true;
            let out = output(&spec).await;
            assert_ne!(out.exit_code, Some(0), "{script}: {}", text(&out.stderr));
            assert_eq!(out.output_file.as_deref(), Some(&b""[..]), "{script}");
        }
        assert!(hidden.join("secret").exists(), "nothing was moved");
    }

    #[tokio::test]
    async fn a_program_sees_the_name_it_was_asked_by() {
        // argv[0] is `sh` (as a shell would pass it), not the resolved
        // `/usr/bin/dash`; what a multi-call binary decides by.
        let world = World::new();
        let out = output(&world.sh("echo \"$0\"")).await;
        assert_eq!(text(&out.stdout), "sh\n", "{}", text(&out.stderr));
    }

    #[tokio::test]
    async fn an_output_file_that_is_no_regular_file_is_refused() {
        let mut world = World::new();
        world.allow(&["mkdir", "mkfifo", "ln"]);
        for (make, message) in [
            ("mkdir \"$WFHOST_OUTPUT\"", "is not a regular file"),
            ("mkfifo \"$WFHOST_OUTPUT\"", "is not a regular file"),
            ("ln -s /etc/hostname \"$WFHOST_OUTPUT\"", "cannot open"),
        ] {
            let mut spec = world.sh(make);
            spec.capture_output_file = true;
            match run(&spec).await.0 {
                Err(ProcessError::Failed(got)) => {
                    assert!(got.starts_with("$WFHOST_OUTPUT: "), "{make}: {got}");
                    assert!(got.contains(message), "{make}: {got}");
                }
                other => panic!("{make}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_output_file_past_max_output_fails_without_being_read() {
        let mut world = World::new();
        world.grants.max_output = 1 << 20;
        world.grants.exec.push(exec("truncate"));
        let mut spec = world.sh("truncate -s 8G \"$WFHOST_OUTPUT\"");
        spec.capture_output_file = true;
        match run(&spec).await.0 {
            Err(ProcessError::Failed(message)) => assert_eq!(
                message,
                "$WFHOST_OUTPUT: the program wrote 8589934592 bytes, more than the budget of \
                 1048576 bytes (the step's max_output; grants: { max_output: ... } raises it)"
            ),
            other => panic!("{other:?}"),
        }
        // Exactly the budget is fine.
        let mut spec = world.sh("truncate -s 1M \"$WFHOST_OUTPUT\"");
        spec.capture_output_file = true;
        assert_eq!(
            output(&spec).await.output_file.map(|f| f.len()),
            Some(1 << 20)
        );
    }

    #[tokio::test]
    async fn only_granted_programs_can_be_executed_by_the_whole_tree() {
        if !sandbox_available() {
            return;
        }
        let mut world = World::new();
        // A shell alone cannot start system programs, by name or by path,
        // nor a copy of one in its writable private directory.
        let id = resolve_program("id").unwrap();
        let script = format!(
            "cat /dev/null; echo cat=$?; {id} > /dev/null; echo id=$?; \
             while read -r line; do :; done < {id} && echo readable; \
             ls > /dev/null; echo ls=$?",
            id = id.display()
        );
        let out = output(&world.sh(&script)).await;
        assert_eq!(
            text(&out.stdout),
            "cat=126\nid=126\nreadable\nls=126\n",
            "{}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains("cat: Permission denied"), "{stderr}");
        assert!(
            stderr.contains(
                "[wfhost: 'cat' was not started: a step may execute only the programs of its \
                 exec grant; add grants: { exec: [cat] } (or exec: [\"@coreutils\"] for the \
                 common tools)]"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("[wfhost: '{}' was not started", id.display()))
                && stderr.contains("add grants: { exec: [id] }"),
            "{stderr}"
        );

        // Granted, the same programs run (dynamically linked: the loader
        // and the libraries are readable), from a script or directly.
        world.allow(&["cat", "ls", "cp", "chmod"]);
        let out = output(&world.sh("cat /dev/null && ls /usr/bin > /dev/null && echo ok")).await;
        assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
        // A granted program cannot make another one executable by copying.
        let out = output(&world.sh(&format!(
            "cd \"$TMPDIR\" && cp {} ./myid && chmod +x ./myid && ./myid; echo $?",
            id.display()
        )))
        .await;
        assert_eq!(text(&out.stdout), "126\n", "{}", text(&out.stderr));

        // A granted program outside the system directories and outside the
        // files grants runs too.
        let tools = world.root.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        let copy = tools.join("my-true");
        std::fs::copy(resolve_program("true").unwrap(), &copy).unwrap();
        world.grants.exec.push(ExecGrant {
            name: "my-true".into(),
            path: copy.canonicalize().unwrap(),
        });
        let out = output(&world.sh(&format!("{} && echo 42", copy.display()))).await;
        assert_eq!(
            (out.exit_code, text(&out.stdout)),
            (Some(0), "42\n".into()),
            "{}",
            text(&out.stderr)
        );

        // A granted script brings its `#!` interpreter along.
        let script = tools.join("hello.sh");
        std::fs::write(&script, "#!/usr/bin/env bash\necho \"hi from $0\"\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        world.grants.exec.push(ExecGrant {
            name: "hello.sh".into(),
            path: script.canonicalize().unwrap(),
        });
        world.allow(&["bash"]);
        let out = output(&world.sh(&script.display().to_string())).await;
        assert_eq!(
            text(&out.stdout),
            format!("hi from {}\n", script.display()),
            "{}",
            text(&out.stderr)
        );
    }

    fn fake_support(landlock_abi: i32, net: bool) -> Support {
        Support {
            landlock_abi,
            namespaces: sandbox::Namespaces {
                user: true,
                net,
                pid: true,
            },
            cgroup: None,
            root: false,
        }
    }

    #[tokio::test]
    async fn strict_steps_fail_closed_without_landlock_or_namespaces() {
        let world = World::new();
        let (result, _) = run_with(&world.sh("true"), &fake_support(0, true)).await;
        match result {
            Err(ProcessError::Failed(message)) => assert_eq!(
                message,
                "the OS sandbox (Landlock) is not available on this kernel; set \
                 `sandbox: best-effort` on the step to run programs without it"
            ),
            other => panic!("{other:?}"),
        }
        let (result, _) = run_with(&world.sh("true"), &fake_support(7, false)).await;
        match result {
            Err(ProcessError::Failed(message)) => {
                assert!(message.contains("network namespaces are not available"));
                assert!(message.contains("sandbox: best-effort"));
            }
            other => panic!("{other:?}"),
        }
        // No pid namespace: processes could outlive the program.
        let mut support = fake_support(7, true);
        support.namespaces.pid = false;
        match run_with(&world.sh("true"), &support).await.0 {
            Err(ProcessError::Failed(message)) => assert_eq!(
                message,
                "pid namespaces are not available here, so the OS sandbox cannot make sure \
                 that every process a program starts ends with it; set `sandbox: best-effort` \
                 on the step to run programs without it"
            ),
            other => panic!("{other:?}"),
        }
        // A root host without a pids cgroup: nothing limits the tasks.
        let mut support = fake_support(7, true);
        support.root = true;
        match run_with(&world.sh("true"), &support).await.0 {
            Err(ProcessError::Failed(message)) => assert_eq!(
                message,
                "the pids limit is not available here (no writable pids cgroup was found; \
                 RLIMIT_NPROC does not bind a root host), so the OS sandbox cannot limit the \
                 program to 512 tasks; set `sandbox: best-effort` on the step to run programs \
                 without it"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn best_effort_steps_run_with_what_there_is_and_say_what_is_missing() {
        let mut world = World::new();
        world.grants.sandbox = SandboxMode::BestEffort;
        let mut support = fake_support(0, false);
        support.namespaces = sandbox::Namespaces::default();
        let (result, warnings) = run_with(&world.sh("echo ran"), &support).await;
        assert_eq!(text(&result.unwrap().stdout), "ran\n");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("Landlock is not available")),
            "{warnings:?}"
        );
        assert!(warnings
            .iter()
            .all(|w| w.starts_with("sandbox: best-effort: ")));
    }
}
