//! The escape suite: hostile plugins (`tests/plugins/hostile`) and hostile
//! scripts, each trying one attack through the real `wfhost` binary.
//!
//! Every test checks that the attack was contained with a specific message,
//! that a sibling "canary" step of the same run still completed, and that
//! the host itself ended normally (exit code 1 for a failed run, never a
//! crash or a signal). Next to most attacks runs a control step: the same
//! plugin code doing the same thing where a grant allows it, which must
//! work, so a contained attack is known to have really been attempted.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Value of a host environment variable no step is granted.
const SECRET: &str = "s3cr3t-9f1c2e7a-do-not-leak";
/// A part of [`SECRET`] the plugin looks for in every variable it sees (the
/// whole value must not appear in the workflow either).
const SECRET_PART: &str = "9f1c2e7a";
/// Value of a host environment variable some steps are granted.
const GRANTED_VALUE: &str = "granted-value-41";
/// Contents of files placed outside every grant.
const SECRET_FILE: &str = "TOP SECRET 5b0d: outside every grant\n";

/// The hostile component built from `tests/plugins/`.
fn hostile() -> PathBuf {
    common::test_plugin("hostile")
}

/// A step running the hostile plugin with `config`.
fn attack(id: &str, config: Value, grants: Value) -> Value {
    json!({ "id": id, "type": "hostile", "with": config, "grants": grants })
}

/// A script step.
fn script(id: &str, run: &str, grants: Value) -> Value {
    json!({ "id": id, "run": run, "grants": grants })
}

/// The canary: a trivial step that must complete whatever its siblings do.
fn canary() -> Value {
    json!({ "id": "canary", "type": "function", "component": "echo", "with": { "alive": "yes" } })
}

/// A workflow running `steps` (plus the canary) with the hostile plugin
/// registered as a step type.
fn workflow(steps: Vec<Value>) -> Value {
    let mut all = steps;
    all.push(canary());
    json!({
        "name": "escape",
        "plugins": { "hostile": hostile() },
        "config": { "parallelism": 8 },
        "steps": all,
    })
}

/// A finished `wfhost run`.
struct Finished {
    output: Output,
    status: Value,
    elapsed: Duration,
    /// Peak resident set size of the `wfhost` process, KiB.
    max_rss_kib: i64,
}

impl Finished {
    fn id(&self) -> &str {
        self.status["id"].as_str().unwrap()
    }

    fn step(&self, id: &str) -> &Value {
        step(&self.status, id)
    }

    /// The error of a step that must have failed.
    fn error(&self, id: &str) -> String {
        let step = self.step(id);
        assert_eq!(
            step["status"], "failed",
            "step {id} was not stopped: {step:#}"
        );
        step["error"].as_str().unwrap_or_default().to_string()
    }

    /// The output of a step that must have completed.
    fn completed(&self, id: &str) -> &Value {
        let step = self.step(id);
        assert_eq!(step["status"], "completed", "step {id}: {step:#}");
        &step["output"]
    }

    /// `wfhost logs RUN [STEP]`.
    fn logs(&self, sandbox: &Sandbox, step: Option<&str>) -> String {
        let mut args = vec!["logs", self.id()];
        args.extend(step);
        let logs = sandbox.wfhost(&args);
        assert_exit(&logs, 0);
        text(&logs.stdout)
    }

    /// Everything the run recorded and printed, to look for leaked data.
    fn everything(&self, sandbox: &Sandbox) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.status,
            text(&self.output.stderr),
            self.logs(sandbox, None),
            read_tree(&sandbox.home().join("runs").join(self.id())),
        )
    }

    /// The canary completed, the run failed (because of the attack) and the
    /// host exited with 1 rather than crashing.
    fn assert_host_survived(&self) {
        self.assert_host_survived_with(1);
    }

    /// The canary completed and the host exited with `code` (0: the run
    /// completed, 1: it failed); [`run_flow`] already checked that it did
    /// not panic or die of a signal.
    fn assert_host_survived_with(&self, code: i32) {
        assert_eq!(
            self.completed("canary")["alive"],
            "yes",
            "the canary must complete"
        );
        assert_exit(&self.output, code);
        let expected = if code == 0 { "completed" } else { "failed" };
        assert_eq!(self.status["status"], expected);
    }
}

impl Sandbox {
    /// Write the workflow as `flow.json`.
    fn flow(&self, flow: &Value) -> PathBuf {
        self.write("flow.json", &serde_json::to_string_pretty(flow).unwrap())
    }
}

/// Run a workflow through the real binary, with the secret and the granted
/// variable in the host's environment.
fn run_flow(sandbox: &Sandbox, flow: &Value) -> Finished {
    run_flow_with(sandbox, flow, |_| {})
}

fn run_flow_with(sandbox: &Sandbox, flow: &Value, prepare: impl FnOnce(&mut Command)) -> Finished {
    let path = sandbox.flow(flow);
    let mut command = sandbox.command(&["run", path.to_str().unwrap(), "--json"]);
    command
        .env("WFHOST_TEST_SECRET", SECRET)
        .env("WFHOST_TEST_GRANTED", GRANTED_VALUE);
    prepare(&mut command);
    let (output, elapsed, max_rss_kib) = execute(command);
    // Whatever a step does, the host neither panics nor dies of a signal.
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "the host panicked:\n{stderr}");
    assert_eq!(
        output.status.signal(),
        None,
        "the host was killed by a signal:\n{stderr}"
    );
    let status: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json printed no run ({e}); exit {:?}\nstderr:\n{}",
            output.status,
            text(&output.stderr)
        )
    });
    Finished {
        output,
        status,
        elapsed,
        max_rss_kib,
    }
}

/// Run a command to its end, measuring wall time and its peak RSS (through
/// `wait4`, which reports the usage of exactly this child).
// The child is reaped by `wait4`, not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn execute(mut command: Command) -> (Output, Duration, i64) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let mut raw = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped; the pointers are
        // to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut raw, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(error.kind(), ErrorKind::Interrupted, "wait4: {error}");
    }
    let elapsed = start.elapsed();
    let output = Output {
        status: ExitStatus::from_raw(raw),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, elapsed, usage.ru_maxrss)
}

/// Every file under `dir`, concatenated (lossy).
fn read_tree(dir: &Path) -> String {
    let mut all = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                all.push_str(&read_tree(&path));
            } else if let Ok(bytes) = std::fs::read(&path) {
                all.push_str(&String::from_utf8_lossy(&bytes));
                all.push('\n');
            }
        }
    }
    all
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

fn assert_absent(haystack: &str, leaked: &str) {
    assert!(
        !haystack.contains(leaked),
        "{leaked:?} leaked:\n{}",
        haystack.chars().take(4000).collect::<String>()
    );
}

/// A sandbox with `granted/` (holding `ok.txt`), `outside/` (holding
/// `secret.txt`, under no grant) and `secret.txt` next to them.
fn layout() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.write("granted/ok.txt", "fine to read\n");
    sandbox.write("granted/sub/.keep", "");
    sandbox.write("outside/secret.txt", SECRET_FILE);
    sandbox.write("secret.txt", SECRET_FILE);
    sandbox.write("ro/existing.txt", "read-only\n");
    sandbox.write("rw/.keep", "");
    sandbox
}

fn p(sandbox: &Sandbox, rel: &str) -> String {
    sandbox.path().join(rel).to_string_lossy().into_owned()
}

fn read_grant(sandbox: &Sandbox, rel: &str) -> Value {
    json!({ "files": [{ "path": p(sandbox, rel), "access": "read" }] })
}

/// A loopback listener nobody is allowed to reach.
fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// No connection ever reached the listener (an established connection
/// waits in the backlog until accepted, so this sees past ones too).
fn assert_never_connected(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("a step connected to the listener from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

/// Processes whose command line contains `marker`, as `pid: cmdline`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// Wait (up to 10 s: they may still be exiting) for every process with
/// `marker` to be gone; kill and report the survivors.
fn assert_no_survivors(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_with(marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_with(marker);
    }
    if !left.is_empty() {
        kill_matching(marker);
        panic!(
            "{} processes outlived their step, e.g. {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
}

fn kill_matching(marker: &str) {
    for _ in 0..50 {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        for line in left {
            if let Some(pid) = line.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A token unique to this test process and call.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}x{nanos}", std::process::id())
}

// ─── Attacks from inside WebAssembly ────────────────────────────────────────

#[test]
fn wasm_cannot_read_etc_passwd() {
    let sandbox = layout();
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack(
                "steal",
                json!({ "attack": "read", "path": "/etc/passwd" }),
                json!({}),
            ),
            // With an unrelated grant the answer is the same.
            attack(
                "steal-granted-elsewhere",
                json!({ "attack": "read", "path": "/etc/passwd" }),
                read_grant(&sandbox, "granted"),
            ),
        ]),
    );
    for id in ["steal", "steal-granted-elsewhere"] {
        assert_contains(
            &run.error(id),
            "cannot read '/etc/passwd': no files grant covers it",
        );
    }
    assert_absent(&run.everything(&sandbox), "root:x:0:0");
    run.assert_host_survived();
}

#[test]
fn wasm_cannot_traverse_out_of_a_grant_with_dotdot() {
    let sandbox = layout();
    let granted = p(&sandbox, "granted");
    let grants = read_grant(&sandbox, "granted");
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack(
                "absolute",
                json!({ "attack": "read", "path": format!("{granted}/../secret.txt") }),
                grants.clone(),
            ),
            attack(
                "deeper",
                json!({ "attack": "read", "path": format!("{granted}/sub/../../outside/secret.txt") }),
                grants.clone(),
            ),
            attack(
                "relative",
                json!({ "attack": "read", "cwd": granted, "path": "../secret.txt" }),
                grants.clone(),
            ),
            attack(
                "relative-deep",
                json!({ "attack": "read", "cwd": format!("{granted}/sub"), "path": "../../outside/secret.txt" }),
                grants.clone(),
            ),
            // Control: the same code reads what is granted.
            attack(
                "control",
                json!({ "attack": "read", "cwd": granted, "path": "ok.txt" }),
                grants,
            ),
        ]),
    );
    for id in ["absolute", "deeper", "relative", "relative-deep"] {
        let error = run.error(id);
        assert_contains(&error, "cannot read '");
        assert_contains(&error, "no files grant covers it");
    }
    assert_eq!(run.completed("control")["content"], "fine to read\n");
    assert_absent(&run.everything(&sandbox), SECRET_FILE.trim());
    run.assert_host_survived();
}

#[test]
fn wasm_cannot_follow_a_symlink_out_of_a_grant() {
    let sandbox = layout();
    let granted = p(&sandbox, "granted");
    let links = [
        ("absolute", p(&sandbox, "outside/secret.txt"), "abs-link"),
        ("relative", "../secret.txt".to_string(), "rel-link"),
        ("directory", p(&sandbox, "outside"), "dir-link"),
    ];
    for (_, target, name) in &links {
        std::os::unix::fs::symlink(target, sandbox.path().join("granted").join(name)).unwrap();
    }
    // A link that stays inside the grant is fine (control).
    std::os::unix::fs::symlink("ok.txt", sandbox.path().join("granted/in-link")).unwrap();
    let grants = read_grant(&sandbox, "granted");
    let read = |path: String| json!({ "attack": "read", "path": path });
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack(
                "absolute",
                read(format!("{granted}/abs-link")),
                grants.clone(),
            ),
            attack(
                "relative",
                read(format!("{granted}/rel-link")),
                grants.clone(),
            ),
            attack(
                "directory",
                read(format!("{granted}/dir-link/secret.txt")),
                grants.clone(),
            ),
            attack("control", read(format!("{granted}/in-link")), grants),
        ]),
    );
    for (id, _, name) in &links {
        let error = run.error(id);
        assert_contains(&error, &format!("cannot read '{granted}/{name}"));
        // Refused for leaving the grant (not, say, for a missing file).
        assert_contains(&error, "operation not permitted");
    }
    assert_eq!(run.completed("control")["content"], "fine to read\n");
    assert_absent(&run.everything(&sandbox), SECRET_FILE.trim());
    run.assert_host_survived();
}

#[test]
fn a_granted_directory_swapped_for_a_symlink_does_not_widen_a_later_step() {
    let sandbox = layout();
    sandbox.write("work/data/ok.txt", "original data\n");
    let root = std::fs::canonicalize(sandbox.path()).unwrap();
    let work = root.join("work");
    let data = work.join("data");
    // An earlier step with write access to `work/` replaces `work/data`
    // by a link to /etc ...
    let swap = script(
        "swap",
        &format!(
            "mv '{d}' '{d}.orig' && ln -s /etc '{d}'",
            d = data.display()
        ),
        json!({ "files": [{ "path": work, "access": "read-write" }], "exec": ["mv", "ln"] }),
    );
    // ... and a later step granted `work/data` (read) looks for /etc/passwd
    // in it. It must still get the directory validation saw.
    let grant = json!({ "files": [{ "path": data, "access": "read" }] });
    let mut later = attack(
        "later",
        json!({ "attack": "read", "path": format!("{}/passwd", data.display()) }),
        grant.clone(),
    );
    later["needs"] = json!(["swap"]);
    let mut control = attack(
        "control",
        json!({ "attack": "read", "path": format!("{}/ok.txt", data.display()) }),
        grant,
    );
    control["needs"] = json!(["swap"]);
    let run = run_flow(&sandbox, &workflow(vec![swap, later, control]));
    run.completed("swap");
    assert!(
        std::fs::symlink_metadata(&data)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the swap happened"
    );
    let error = run.error("later");
    assert_contains(&error, &format!("cannot read '{}/passwd'", data.display()));
    assert_eq!(run.completed("control")["content"], "original data\n");
    assert_absent(&run.everything(&sandbox), "root:x:0:0");
    run.assert_host_survived();
}

#[test]
fn wasm_cannot_write_outside_grants_or_into_a_read_only_grant() {
    let sandbox = layout();
    let rw = p(&sandbox, "rw");
    std::os::unix::fs::symlink(p(&sandbox, "outside"), sandbox.path().join("rw/out-link")).unwrap();
    let rw_grant = json!({ "files": [{ "path": rw, "access": "read-write" }] });
    let write = |path: String| json!({ "attack": "write", "path": path });
    let tmp = format!("/tmp/{}.txt", unique("wfhost-pwned-"));
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack(
                "absolute",
                write(p(&sandbox, "outside/pwned-abs.txt")),
                json!({}),
            ),
            attack("tmp", write(tmp.clone()), json!({})),
            attack(
                "read-only",
                write(p(&sandbox, "ro/pwned-ro.txt")),
                read_grant(&sandbox, "ro"),
            ),
            attack(
                "overwrite-read-only",
                write(p(&sandbox, "ro/existing.txt")),
                read_grant(&sandbox, "ro"),
            ),
            attack(
                "dotdot",
                write(format!("{rw}/../outside/pwned-dotdot.txt")),
                rw_grant.clone(),
            ),
            attack(
                "symlink",
                write(format!("{rw}/out-link/pwned-link.txt")),
                rw_grant.clone(),
            ),
            attack("control", write(format!("{rw}/allowed.txt")), rw_grant),
        ]),
    );
    assert_contains(
        &run.error("absolute"),
        &format!(
            "cannot write '{}': no files grant covers it",
            p(&sandbox, "outside/pwned-abs.txt")
        ),
    );
    assert_contains(&run.error("tmp"), "no files grant covers it");
    for id in ["read-only", "overwrite-read-only"] {
        assert_contains(
            &run.error(id),
            &format!("the files grant for '{}' is read-only", p(&sandbox, "ro")),
        );
    }
    assert_contains(&run.error("dotdot"), "no files grant covers it");
    let symlink = run.error("symlink");
    assert_contains(
        &symlink,
        &format!("cannot write '{rw}/out-link/pwned-link.txt'"),
    );
    assert_contains(&symlink, "operation not permitted");
    assert_eq!(run.completed("control")["escaped"], true);
    assert!(sandbox.path().join("rw/allowed.txt").is_file());

    let outside: Vec<_> = std::fs::read_dir(sandbox.path().join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["secret.txt"], "files appeared outside the grants");
    assert!(!sandbox.path().join("ro/pwned-ro.txt").exists());
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("ro/existing.txt")).unwrap(),
        "read-only\n"
    );
    assert!(!sandbox.path().join("pwned-dotdot.txt").exists());
    assert!(!Path::new(&tmp).exists(), "{tmp} was written");
    run.assert_host_survived();
}

#[test]
fn wasm_sees_only_granted_environment_variables() {
    let sandbox = layout();
    let steal = json!({ "attack": "env", "var": "WFHOST_TEST_SECRET", "needle": SECRET_PART });
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack("steal", steal.clone(), json!({})),
            attack(
                "steal-with-other-grants",
                steal,
                json!({ "env": ["WFHOST_TEST_GRANTED", "FIXED=value"] }),
            ),
            attack(
                "control",
                json!({ "attack": "env", "var": "WFHOST_TEST_GRANTED" }),
                json!({ "env": ["WFHOST_TEST_GRANTED"] }),
            ),
        ]),
    );
    for id in ["steal", "steal-with-other-grants"] {
        assert_contains(
            &run.error(id),
            "environment variable 'WFHOST_TEST_SECRET' is not visible to the step",
        );
    }
    assert_contains(&run.error("steal-with-other-grants"), "WFHOST_TEST_GRANTED");
    assert_eq!(run.completed("control")["value"], GRANTED_VALUE);
    assert_absent(&run.everything(&sandbox), SECRET);
    run.assert_host_survived();
}

#[test]
fn wasm_cannot_start_a_program_it_was_not_granted() {
    let sandbox = layout();
    let exec = |program: &str, args: &[&str]| json!({ "attack": "exec", "program": program, "args": args });
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack("curl", exec("curl", &["http://127.0.0.1:9/"]), json!({})),
            attack(
                "absolute",
                exec("/bin/sh", &["-c", "cat /etc/passwd"]),
                json!({}),
            ),
            attack(
                "other-granted",
                exec("cat", &["/etc/passwd"]),
                json!({ "exec": ["true"] }),
            ),
            attack("control", exec("true", &[]), json!({ "exec": ["true"] })),
        ]),
    );
    let curl = run.error("curl");
    assert_contains(&curl, "starting program 'curl'");
    assert_contains(&curl, "exec: [curl]");
    let absolute = run.error("absolute");
    assert_contains(&absolute, "starting program '/bin/sh'");
    assert_contains(&absolute, "exec: [sh]");
    let other = run.error("other-granted");
    assert_contains(&other, "starting program 'cat'");
    assert_contains(&other, "exec: [cat]");
    assert_eq!(run.completed("control")["exit_code"], 0);
    assert_absent(&run.everything(&sandbox), "root:x:0:0");
    run.assert_host_survived();
}

#[test]
fn wasm_cannot_connect_without_a_network_grant() {
    let sandbox = layout();
    let (forbidden, port) = listener();
    let (allowed, allowed_port) = listener();
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            attack(
                "connect",
                json!({ "attack": "connect", "port": port }),
                json!({}),
            ),
            attack(
                "wrong-port",
                json!({ "attack": "connect", "port": port }),
                json!({ "network": [format!("127.0.0.1:{allowed_port}")] }),
            ),
            attack(
                "control",
                json!({ "attack": "connect", "port": allowed_port }),
                json!({ "network": [format!("127.0.0.1:{allowed_port}")] }),
            ),
        ]),
    );
    let denial = format!(
        "network access denied: connecting to 127.0.0.1:{port}: no network grant covers it"
    );
    for id in ["wrong-port", "connect"] {
        assert_contains(
            &run.error(id),
            &format!("cannot connect to 127.0.0.1:{port}"),
        );
    }
    // The guest only sees "permission denied": the step log says why. With
    // no grant at all even the ephemeral bind before a connect is refused
    // (so nothing can listen either); with a grant for another port the
    // connect itself is refused.
    assert_contains(&run.logs(&sandbox, Some("wrong-port")), &denial);
    assert_contains(
        &run.logs(&sandbox, Some("connect")),
        "network access denied: the step has no network grant (add grants: { network: [",
    );
    assert_never_connected(&forbidden);
    assert_eq!(
        run.completed("control")["connected"],
        format!("127.0.0.1:{allowed_port}")
    );
    assert!(allowed.accept().is_ok(), "the control step connected");
    run.assert_host_survived();
}

#[test]
fn wasm_infinite_loop_is_stopped_at_its_timeout() {
    let sandbox = layout();
    let mut spin = attack("spin", json!({ "attack": "loop" }), json!({}));
    spin["timeout"] = json!("2s");
    let run = run_flow(&sandbox, &workflow(vec![spin]));
    assert_contains(&run.error("spin"), "timed out after 2s");
    let step = run.step("spin");
    let ran = millis(&step["finished_at"]) - millis(&step["started_at"]);
    assert!(
        ran >= 1900,
        "stopped after {ran} ms, before its 2 s timeout"
    );
    assert!(
        run.elapsed < Duration::from_secs(15),
        "the run took {:?} for a 2 s timeout",
        run.elapsed
    );
    run.assert_host_survived();
}

#[test]
fn wasm_memory_growth_stops_at_the_limit() {
    let sandbox = layout();
    let limit = json!({ "memory": "64MiB" });
    let mut hog = attack(
        "hog",
        json!({ "attack": "memory", "mib": 2048 }),
        limit.clone(),
    );
    hog["timeout"] = json!("60s");
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            hog,
            // Control: the same code within the limit.
            attack("control", json!({ "attack": "memory", "mib": 8 }), limit),
        ]),
    );
    assert_contains(&run.error("hog"), "ran out of memory: the limit is 64 MiB");
    assert_eq!(run.completed("control")["allocated_mib"], 8);
    assert!(
        run.max_rss_kib < 1024 * 1024,
        "the host grew to {} MiB",
        run.max_rss_kib / 1024
    );
    run.assert_host_survived();
}

#[test]
fn wasm_deep_recursion_crashes_only_the_step() {
    let sandbox = layout();
    let mut deep = attack("deep", json!({ "attack": "recurse" }), json!({}));
    deep["timeout"] = json!("60s");
    let run = run_flow(&sandbox, &workflow(vec![deep]));
    let error = run.error("deep");
    assert_contains(&error, "plugin crashed");
    assert!(
        error.contains("stack") || error.contains("out of bounds"),
        "a stack overflow: {error}"
    );
    run.assert_host_survived();
}

/// Size of the run store, WAL included.
fn store_bytes(sandbox: &Sandbox) -> u64 {
    ["wfhost.db", "wfhost.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(sandbox.home().join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}

#[test]
fn wasm_huge_output_and_error_are_refused_or_cut_before_they_are_stored() {
    let sandbox = layout();
    let mut big_output = attack(
        "big-output",
        json!({ "attack": "huge-output", "mib": 120 }),
        json!({ "memory": "1GiB" }),
    );
    big_output["timeout"] = json!("120s");
    let mut big_error = attack(
        "big-error",
        json!({ "attack": "huge-error", "mib": 120 }),
        json!({ "memory": "1GiB" }),
    );
    big_error["timeout"] = json!("120s");
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            big_output,
            big_error,
            // Control: the same code under the budget.
            attack(
                "control",
                json!({ "attack": "huge-output", "mib": 1 }),
                json!({}),
            ),
        ]),
    );
    let error = run.error("big-output");
    assert_contains(&error, "over its output budget of 64 MiB (4 × max_output");
    assert_contains(&error, "max_output");
    let error = run.error("big-error");
    assert_contains(&error, "cut at 64 KiB");
    assert!(error.len() < 70 * 1024, "error of {} bytes", error.len());
    assert_eq!(
        run.completed("control")["blob"].as_str().unwrap().len(),
        1024 * 1024
    );
    // Neither 120 MiB reached the store or the terminal.
    let stored = store_bytes(&sandbox);
    assert!(stored < 24 << 20, "the store grew to {stored} bytes");
    let printed = run.output.stdout.len() + run.output.stderr.len();
    assert!(printed < 8 << 20, "{printed} bytes printed");
    run.assert_host_survived();
}

#[test]
fn wasm_progress_flood_is_budgeted() {
    let sandbox = layout();
    let mut flood = attack(
        "flood",
        // 5000 reports of 10 KiB: 50 MB offered.
        json!({ "attack": "progress-flood", "count": 5000, "kib": 10 }),
        json!({}),
    );
    flood["timeout"] = json!("120s");
    let run = run_flow_with(&sandbox, &workflow(vec![flood]), |_| {});
    assert_eq!(run.completed("flood")["reported"], 5000);
    assert_contains(
        &run.logs(&sandbox, Some("flood")),
        "progress budget of 1000 reports per attempt used up; further progress reports dropped",
    );
    // At most 1000 reports of 1 KiB were kept.
    let stored = store_bytes(&sandbox);
    assert!(stored < 8 << 20, "the store grew to {stored} bytes");
    run.assert_host_survived_with(0);
}

#[test]
fn wasm_sockets_and_handles_are_budgeted() {
    let sandbox = layout();
    let (_listener, port) = listener();
    let mut steps = vec![
        attack(
            "no-grant",
            json!({ "attack": "socket-flood", "count": 5000 }),
            json!({}),
        ),
        attack(
            "granted",
            json!({ "attack": "socket-flood", "count": 5000 }),
            json!({ "network": [format!("127.0.0.1:{port}")] }),
        ),
        attack(
            "files",
            json!({ "attack": "open-files", "path": p(&sandbox, "granted/ok.txt"), "count": 5000 }),
            read_grant(&sandbox, "granted"),
        ),
        // Control: a few sockets and files are fine.
        attack(
            "control-sockets",
            json!({ "attack": "socket-flood", "count": 10 }),
            json!({ "network": [format!("127.0.0.1:{port}")] }),
        ),
        attack(
            "control-files",
            json!({ "attack": "open-files", "path": p(&sandbox, "granted/ok.txt"), "count": 100 }),
            read_grant(&sandbox, "granted"),
        ),
    ];
    for step in &mut steps {
        step["timeout"] = json!("60s");
    }
    let run = run_flow(&sandbox, &workflow(steps));
    // No grant: not a single socket.
    assert_contains(&run.error("no-grant"), "socket 1 refused");
    assert_contains(
        &run.logs(&sandbox, Some("no-grant")),
        "network access denied: the step has no network grant (add grants: { network: [",
    );
    // A grant: at most 64 at once.
    assert_contains(&run.error("granted"), "socket 65 refused");
    assert_contains(&run.error("granted"), "after 64 were created");
    assert_contains(
        &run.logs(&sandbox, Some("granted")),
        "its budget of 64 open sockets per step",
    );
    assert_contains(
        &run.error("files"),
        "used up its budget of 1024 open WASI handles (files, sockets, streams) per step",
    );
    assert_eq!(run.completed("control-sockets")["sockets"], 10);
    assert_eq!(run.completed("control-files")["open"], 100);
    run.assert_host_survived();
}

#[test]
fn wasm_name_lookups_follow_the_network_grant() {
    let sandbox = layout();
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            // Granted an address, not the name: the name is not looked up.
            attack(
                "by-address",
                json!({ "attack": "resolve", "host": "localhost" }),
                json!({ "network": ["127.0.0.1:80"] }),
            ),
            // Granted one name: another cannot be looked up (DNS would
            // carry it out of the host).
            attack(
                "other-name",
                json!({ "attack": "resolve", "host": "leak-9f1c.attacker.example" }),
                json!({ "network": ["localhost:80"] }),
            ),
            attack(
                "no-grant",
                json!({ "attack": "resolve", "host": "localhost" }),
                json!({}),
            ),
            // Control: the granted name resolves.
            attack(
                "control",
                json!({ "attack": "resolve", "host": "localhost" }),
                json!({ "network": ["localhost:80"] }),
            ),
        ]),
    );
    for id in ["by-address", "no-grant"] {
        assert_contains(&run.error(id), "cannot resolve 'localhost'");
    }
    assert_contains(
        &run.logs(&sandbox, Some("by-address")),
        "network access denied: resolving 'localhost': no network grant names it (add grants: { network: [\"localhost:PORT\"] })",
    );
    assert_contains(
        &run.logs(&sandbox, Some("no-grant")),
        "network access denied: the step has no network grant",
    );
    assert_contains(
        &run.error("other-name"),
        "cannot resolve 'leak-9f1c.attacker.example'",
    );
    assert_contains(
        &run.logs(&sandbox, Some("other-name")),
        "network access denied: resolving 'leak-9f1c.attacker.example': no network grant names it",
    );
    let addresses = run.completed("control")["addresses"].to_string();
    assert!(
        addresses.contains("127.0.0.1") || addresses.contains("::1"),
        "localhost resolved to {addresses}"
    );
    run.assert_host_survived();
}

#[test]
fn a_write_grant_over_wfhost_state_is_a_validation_error() {
    let sandbox = layout();
    let root = std::fs::canonicalize(sandbox.path()).unwrap();
    let cache = root.join("granted/cache");
    let flow = sandbox.flow(&workflow(vec![
        // The sandbox holds the home (`home/`).
        attack(
            "over-home",
            json!({ "attack": "write", "path": p(&sandbox, "home/wfhost.db") }),
            json!({ "files": [{ "path": p(&sandbox, "."), "access": "read-write" }] }),
        ),
        // `granted/` holds the component cache.
        attack(
            "over-cache",
            json!({ "attack": "write", "path": p(&sandbox, "granted/cache/x.cwasm") }),
            json!({ "files": [{ "path": p(&sandbox, "granted"), "access": "read-write" }] }),
        ),
        // Reading them is not writing them.
        attack(
            "read-only",
            json!({ "attack": "read", "path": p(&sandbox, "granted/ok.txt") }),
            read_grant(&sandbox, "."),
        ),
    ]));
    for command in ["validate", "run"] {
        let output = sandbox
            .command(&[command, flow.to_str().unwrap()])
            .env("WFHOST_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert_exit(&output, 2);
        let stderr = text(&output.stderr);
        assert_contains(
            &stderr,
            &format!(
                "files grant '{}' (read-write) contains the wfhost home '{}'",
                root.display(),
                root.join("home").display()
            ),
        );
        assert_contains(
            &stderr,
            &format!(
                "files grant '{}' (read-write) contains the compiled-component cache '{}'",
                root.join("granted").display(),
                cache.display()
            ),
        );
        assert_contains(
            &stderr,
            "grant a narrower directory that does not contain it",
        );
        assert_contains(&stderr, "step 'over-home'");
        assert_absent(&stderr, "step 'read-only'");
    }
    assert!(
        !sandbox.home().join("runs").exists()
            || std::fs::read_dir(sandbox.home().join("runs"))
                .unwrap()
                .count()
                == 0,
        "no run started"
    );
}

// ─── Attacks from started programs (script steps) ───────────────────────────

#[test]
fn a_granted_program_cannot_read_outside_the_granted_paths() {
    let sandbox = layout();
    let granted = p(&sandbox, "granted");
    let grants = json!({
        "exec": ["cat"],
        "files": [{ "path": granted, "access": "read" }],
    });
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            script("passwd", "cat /etc/passwd", grants.clone()),
            script(
                "secret",
                &format!("cat {}", p(&sandbox, "outside/secret.txt")),
                grants.clone(),
            ),
            script(
                "dotdot",
                &format!("cat {granted}/../secret.txt"),
                grants.clone(),
            ),
            script("control", &format!("cat {granted}/ok.txt"), grants),
        ]),
    );
    for (id, path) in [
        ("passwd", "/etc/passwd".to_string()),
        ("secret", p(&sandbox, "outside/secret.txt")),
        ("dotdot", format!("{granted}/../secret.txt")),
    ] {
        let error = run.error(id);
        assert_contains(&error, &format!("cat: {path}: "));
        assert!(
            error.contains("Permission denied") || error.contains("No such file or directory"),
            "{id}: {error}"
        );
    }
    assert_eq!(run.completed("control")["stdout"], "fine to read");
    let everything = run.everything(&sandbox);
    assert_absent(&everything, "root:x:0:0");
    assert_absent(&everything, SECRET_FILE.trim());
    run.assert_host_survived();
}

#[test]
fn a_script_can_execute_only_its_exec_grant() {
    let sandbox = layout();
    let id = "/usr/bin/id";
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            script("cat", "cat /dev/null", json!({})),
            script("by_path", id, json!({})),
            // Not by copying a program into a writable directory either.
            script(
                "copied",
                &format!("cp {id} \"$TMPDIR/myid\"; chmod +x \"$TMPDIR/myid\"; \"$TMPDIR/myid\""),
                json!({ "exec": ["cp", "chmod"] }),
            ),
            script(
                "granted",
                "cat /dev/null && echo ran",
                json!({ "exec": ["cat"] }),
            ),
            script(
                "coreutils",
                "ls /usr > /dev/null && sleep 0 && printf '%s' x | wc -c | tr -d ' '",
                json!({ "exec": ["@coreutils"] }),
            ),
        ]),
    );
    let error = run.error("cat");
    assert_contains(&error, "script exited with code 126");
    assert_contains(&error, "cat: Permission denied");
    assert_contains(
        &error,
        "[wfhost: 'cat' was not started: a step may execute only the programs of its exec \
         grant; add grants: { exec: [cat] } (or exec: [\"@coreutils\"] for the common tools)]",
    );
    let error = run.error("by_path");
    assert_contains(&error, &format!("{id}: Permission denied"));
    assert_contains(&error, "add grants: { exec: [id] }");
    assert_contains(&run.error("copied"), "myid: Permission denied");
    assert_eq!(run.completed("granted")["stdout"], "ran");
    assert_eq!(run.completed("coreutils")["stdout"], "1");
    let logs = run.logs(&sandbox, Some("cat"));
    assert_contains(&logs, "[wfhost: 'cat' was not started");
    run.assert_host_survived();
}

#[test]
fn a_program_cannot_connect_without_a_network_grant() {
    let sandbox = layout();
    let (forbidden, port) = listener();
    let run = run_flow(
        &sandbox,
        &workflow(vec![script(
            "connect",
            &format!("bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'"),
            json!({ "exec": ["bash"] }),
        )]),
    );
    let error = run.error("connect");
    assert_contains(&error, &format!("/dev/tcp/127.0.0.1/{port}"));
    assert_never_connected(&forbidden);
    run.assert_host_survived();
}

#[test]
fn a_program_ignoring_sigterm_is_killed_at_the_timeout() {
    let sandbox = layout();
    // A duration nobody else uses: `sleep 60.0<pid><nanos>`.
    let marker = unique("60.0").replace('x', "");
    let mut stubborn = script(
        "stubborn",
        &format!("trap '' TERM; sleep {marker}"),
        json!({ "exec": ["sleep"] }),
    );
    stubborn["timeout"] = json!("2s");
    let run = run_flow(&sandbox, &workflow(vec![stubborn]));
    assert_contains(&run.error("stubborn"), "timed out after 2s");
    assert!(
        run.elapsed < Duration::from_secs(15),
        "the run took {:?} for a 2 s timeout",
        run.elapsed
    );
    assert_no_survivors(&marker);
    run.assert_host_survived();
}

/// A script that ends politely on SIGTERM, taking its time (1 s) to write
/// `stopped` into `dir/<id>.marker`: only a real grace period lets it finish.
/// It writes `dir/<id>.started` first and then sleeps for `sleep`.
fn polite(id: &str, dir: &str, sleep: &str) -> Value {
    script(
        id,
        &format!(
            "trap 'sleep 1; echo stopped > {dir}/{id}.marker; exit 0' TERM; \
             echo up > {dir}/{id}.started; sleep {sleep} & wait"
        ),
        json!({ "exec": ["sleep"], "files": [{ "path": dir, "access": "read-write" }] }),
    )
}

/// A script that ignores SIGTERM (so does its `sleep`).
fn stubborn(id: &str, dir: &str, sleep: &str) -> Value {
    let mut step = script(
        id,
        &format!("trap '' TERM; echo up > {dir}/{id}.started; sleep {sleep}"),
        json!({ "exec": ["sleep"], "files": [{ "path": dir, "access": "read-write" }] }),
    );
    step["kill_grace"] = json!("1s");
    step
}

#[test]
fn a_timed_out_program_gets_sigterm_and_its_grace_then_sigkill() {
    let sandbox = layout();
    let rw = p(&sandbox, "rw");
    let marker = unique("60.0").replace('x', "");
    let mut gentle = polite("gentle", &rw, &marker);
    gentle["timeout"] = json!("1s");
    let mut deaf = stubborn("deaf", &rw, &marker);
    deaf["timeout"] = json!("1s");
    let run = run_flow(&sandbox, &workflow(vec![gentle, deaf]));
    assert_contains(&run.error("gentle"), "timed out after 1s");
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("rw/gentle.marker")).unwrap_or_default(),
        "stopped\n",
        "the TERM handler had its grace period"
    );
    assert_contains(&run.error("deaf"), "timed out after 1s");
    assert!(
        run.elapsed < Duration::from_secs(15),
        "the run took {:?}",
        run.elapsed
    );
    assert_no_survivors(&marker);
    run.assert_host_survived();
}

#[test]
fn a_cancelled_program_gets_sigterm_and_its_grace_then_sigkill() {
    let sandbox = layout();
    let rw = p(&sandbox, "rw");
    let marker = unique("60.0").replace('x', "");
    let flow = sandbox.flow(&workflow(vec![
        polite("gentle", &rw, &marker),
        stubborn("deaf", &rw, &marker),
    ]));
    let mut child = sandbox.spawn_run(&flow);
    let started = |id: &str| sandbox.path().join(format!("rw/{id}.started")).exists();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(started("gentle") && started("deaf")) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before its scripts started");
        }
        assert!(Instant::now() < deadline, "the scripts never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs: Value = serde_json::from_slice(&sandbox.wfhost(&["runs", "--json"]).stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let cancelled_at = Instant::now();
    assert_exit(&sandbox.wfhost(&["cancel", &id]), 0);
    let output = child.wait_with_output().unwrap();
    let took = cancelled_at.elapsed();
    assert_exit(&output, 1);
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("rw/gentle.marker")).unwrap_or_default(),
        "stopped\n",
        "the TERM handler had its grace period"
    );
    // The stubborn one was killed after its 1 s grace, not left running.
    assert!(took < Duration::from_secs(15), "cancel took {took:?}");
    assert_no_survivors(&marker);
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(step(&status, "gentle")["status"], "cancelled");
    assert_eq!(step(&status, "deaf")["status"], "cancelled");
}

#[test]
fn programs_of_two_steps_cannot_meet_on_an_abstract_unix_socket() {
    let sandbox = layout();
    let name = unique("wfhost_abstract_");
    let listen = format!(
        r#"/usr/bin/python3 -c '
import socket
s = socket.socket(socket.AF_UNIX)
s.bind(b"\0{name}")
s.listen(1)
s.settimeout(4)
try:
    s.accept()
    print("accepted")
except socket.timeout:
    print("nobody")
'"#
    );
    // A program reaches its own socket (so the probe works), never the
    // other step's.
    let connect = format!(
        r#"/usr/bin/python3 -c '
import socket, time
own = socket.socket(socket.AF_UNIX)
own.bind(b"\0{name}-own")
own.listen(1)
socket.socket(socket.AF_UNIX).connect(b"\0{name}-own")
error = None
for _ in range(30):
    try:
        socket.socket(socket.AF_UNIX).connect(b"\0{name}")
        print("connected")
        break
    except OSError as e:
        error = e.errno
        time.sleep(0.1)
else:
    print("refused", error)
'"#
    );
    let python = json!({ "exec": ["/usr/bin/python3"] });
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            script("listen", &listen, python.clone()),
            script("connect", &connect, python),
        ]),
    );
    let connected = run.completed("connect")["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(connected.starts_with("refused"), "{connected}");
    assert_eq!(run.completed("listen")["stdout"], "nobody");
    assert_eq!(run.status["status"], "completed");
}

#[test]
fn a_program_cannot_take_over_the_init_that_watches_it() {
    // The namespace's init (pid 1 to the program) watches the host's
    // lifeline and reports how the program ended; the program is root of
    // the same user namespace, yet may neither trace it nor signal it.
    let sandbox = layout();
    let probe = r#"/usr/bin/python3 -c '
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
attached = libc.ptrace(16, 1, 0, 0)
print("attach", attached, ctypes.get_errno())
os.kill(1, signal.SIGKILL)
os.kill(1, signal.SIGTERM)
print("alive", os.getpid())
'"#;
    let run = run_flow(
        &sandbox,
        &workflow(vec![script(
            "probe",
            probe,
            json!({ "exec": ["/usr/bin/python3"] }),
        )]),
    );
    let out = run.completed("probe")["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        out.starts_with(&format!("attach -1 {}\n", libc::EPERM)),
        "the program traced its init: {out}"
    );
    // Its init survived both signals: the program ran on to the end.
    assert!(out.contains("\nalive "), "{out}");
    run.assert_host_survived_with(0);
}

/// The parent pid of `pid`, from `/proc/PID/stat` (after the command
/// name, which may hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}

fn cmdline_of(pid: i32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', " ")
}

#[test]
fn programs_are_forked_by_the_launcher_and_die_with_the_host() {
    let sandbox = layout();
    let marker = unique("61.0").replace('x', "");
    let flow = sandbox.flow(&workflow(vec![script(
        "nap",
        &format!("sleep {marker}"),
        json!({ "exec": ["sleep"] }),
    )]));
    let mut host = sandbox.spawn_run(&flow);
    let host_pid = host.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    let program = loop {
        let found = processes_with(&format!("sleep {marker}"));
        if let Some(pid) = found
            .iter()
            .filter_map(|line| line.split(':').next()?.parse::<i32>().ok())
            .find(|pid| cmdline_of(*pid).starts_with("sleep"))
        {
            break pid;
        }
        if let Ok(Some(status)) = host.try_wait() {
            panic!("the run ended ({status}) before its program started");
        }
        assert!(Instant::now() < deadline, "the program never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Its ancestors (the plain command runs without a shell): the
    // sandbox's init (a clone of the launcher, so with its command line),
    // then the launcher (a child of the host, running the host's binary),
    // then the host.
    let mut ancestors = Vec::new();
    let mut pid = program;
    while let Some(parent) = parent_of(pid) {
        if parent <= 1 || ancestors.len() > 8 {
            break;
        }
        ancestors.push((parent, cmdline_of(parent)));
        if parent == host_pid {
            break;
        }
        pid = parent;
    }
    let launcher = ancestors
        .iter()
        .rposition(|(_, cmdline)| cmdline.contains("__wfhost-launcher"))
        .unwrap_or_else(|| panic!("no launcher among the program's ancestors: {ancestors:?}"));
    assert_eq!(
        ancestors.get(launcher + 1).map(|(pid, _)| *pid),
        Some(host_pid),
        "the launcher is the host's child: {ancestors:?}"
    );
    let launcher_pid = ancestors[launcher].0;

    // kill -9 of the host: the program's tree and the launcher go with it.
    host.kill().unwrap();
    let _ = host.wait();
    assert_no_survivors(&marker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while parent_of(launcher_pid).is_some()
        && cmdline_of(launcher_pid).contains("__wfhost-launcher")
    {
        assert!(Instant::now() < deadline, "the launcher outlived its host");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_gigabyte_on_stdout_is_cut_at_max_output() {
    let sandbox = layout();
    let mut flood = script(
        "flood",
        "head -c 1000000000 /dev/zero | tr '\\0' x",
        json!({ "exec": ["head", "tr"], "max_output": "1MiB" }),
    );
    flood["timeout"] = json!("5m");
    let run = run_flow(
        &sandbox,
        &workflow(vec![flood, script("after", "echo still here", json!({}))]),
    );
    let stdout = run.completed("flood")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_contains(&stdout, "[wfhost: output cut");
    assert!(
        stdout.len() < 1024 * 1024 + 4096,
        "{} bytes of output kept with max_output 1MiB",
        stdout.len()
    );
    assert!(
        stdout.starts_with("xxxx"),
        "{}",
        &stdout[..stdout.len().min(100)]
    );
    assert!(
        run.max_rss_kib < 512 * 1024,
        "the host grew to {} MiB reading 1 GB of output",
        run.max_rss_kib / 1024
    );
    assert_eq!(run.completed("after")["stdout"], "still here");
    run.assert_host_survived_with(0);
}

#[test]
fn a_sparse_multi_gigabyte_output_file_fails_the_step_not_the_host() {
    let sandbox = layout();
    let run = run_flow(
        &sandbox,
        &workflow(vec![
            script(
                "sparse",
                "truncate -s 8G \"$WFHOST_OUTPUT\"; echo wrote",
                json!({ "exec": ["truncate"] }),
            ),
            script("after", "echo still=here >> \"$WFHOST_OUTPUT\"", json!({})),
        ]),
    );
    assert_contains(
        &run.error("sparse"),
        "$WFHOST_OUTPUT: the program wrote 8589934592 bytes, more than the budget of 16777216 \
         bytes (the step's max_output; grants: { max_output: ... } raises it)",
    );
    assert!(
        run.max_rss_kib < 512 * 1024,
        "the host grew to {} MiB reading a sparse output file",
        run.max_rss_kib / 1024
    );
    assert_eq!(run.completed("after")["still"], "here");
    run.assert_host_survived();
}

/// Most tasks (processes and threads) the fork bomb's run may reach before
/// the test's own safety net stops it; the sandbox must stop it first.
const BOMB_SAFETY_NET: u64 = 2048;

#[test]
fn a_fork_bomb_in_a_granted_shell_is_contained() {
    let sandbox = layout();
    let name = unique("wfhost_escape_bomb_");
    // Each call starts two more in the background and returns: the number
    // of processes doubles until something refuses to fork.
    let bomb = format!("{name}() {{ {name} | {name} & }}; {name}; sleep 60");
    let mut bomb_step = script("bomb", &bomb, json!({ "exec": ["sleep"] }));
    bomb_step["timeout"] = json!("5s");
    let cage = SafetyNet::new(BOMB_SAFETY_NET);
    let run = {
        let _cleanup = KillOnDrop(&name);
        run_flow_with(
            &sandbox,
            &workflow(vec![
                bomb_step,
                // Other started programs keep working meanwhile.
                script(
                    "neighbour",
                    "sleep 1; echo alive",
                    json!({ "exec": ["sleep"] }),
                ),
            ]),
            |command| cage.enter(command),
        )
    };
    if let Some(peak) = cage.peak() {
        assert!(
            peak < BOMB_SAFETY_NET,
            "the fork bomb reached the test's safety net ({peak} of {BOMB_SAFETY_NET} tasks): \
             the sandbox does not limit the processes a step may start"
        );
        assert!(
            peak >= 32,
            "the fork bomb did not run: {peak} tasks at most"
        );
    }
    assert_no_survivors(&name);
    let error = run.error("bomb");
    assert!(
        error.contains("timed out after 5s") || error.contains("script exited with code"),
        "{error}"
    );
    assert!(
        run.elapsed < Duration::from_secs(60),
        "the run took {:?}",
        run.elapsed
    );
    assert_eq!(run.completed("neighbour")["stdout"], "alive");
    run.assert_host_survived();
}

/// Kills whatever is left of a fork bomb, whatever the test's outcome.
struct KillOnDrop<'a>(&'a str);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_matching(self.0);
        }
    }
}

/// The test's own limit on the tasks of the `wfhost` process tree, so a
/// fork bomb that escapes the sandbox cannot take the machine down: a pids
/// cgroup where the test may create one (root), else `RLIMIT_NPROC` (which
/// does not bind root; then the test refuses to run the bomb).
struct SafetyNet {
    cgroup: Option<PathBuf>,
    nproc: Option<u64>,
}

impl SafetyNet {
    fn new(limit: u64) -> SafetyNet {
        for base in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"] {
            let dir = Path::new(base).join(unique("wfhost-escape-"));
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            if std::fs::write(dir.join("pids.max"), limit.to_string()).is_ok() {
                return SafetyNet {
                    cgroup: Some(dir),
                    nproc: None,
                };
            }
            let _ = std::fs::remove_dir(&dir);
        }
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        assert!(
            !root,
            "refusing to run a fork bomb as root without a pids cgroup as a safety net"
        );
        SafetyNet {
            cgroup: None,
            nproc: Some(user_tasks() + limit),
        }
    }

    /// Make `command` start inside the net.
    fn enter(&self, command: &mut Command) {
        if let Some(dir) = &self.cgroup {
            let procs =
                std::ffi::CString::new(dir.join("cgroup.procs").to_string_lossy().into_owned())
                    .unwrap();
            // SAFETY: only async-signal-safe calls (open, write, close) on
            // memory allocated before the fork.
            unsafe {
                command.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if written != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else if let Some(limit) = self.nproc {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NPROC, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }

    /// Most tasks the net held at once (`None` without a cgroup).
    fn peak(&self) -> Option<u64> {
        let dir = self.cgroup.as_ref()?;
        if let Ok(peak) = std::fs::read_to_string(dir.join("pids.peak")) {
            return peak.trim().parse().ok();
        }
        // Older kernels: no peak, but refused forks are counted.
        let events = std::fs::read_to_string(dir.join("pids.events")).ok()?;
        let refused: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Some(if refused > 0 { BOMB_SAFETY_NET } else { 0 })
    }
}

impl Drop for SafetyNet {
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroup {
            remove_cgroup(dir);
        }
    }
}

/// Kill every process of a cgroup and of the cgroups below it (the
/// sandbox's own per-program ones), then remove them all.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() && std::fs::remove_dir(dir).is_ok() {
            return;
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tasks (threads included) of the current user, as `RLIMIT_NPROC` counts.
fn user_tasks() -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let is_pid = entry.file_name().to_string_lossy().parse::<u32>().is_ok();
        if is_pid && entry.metadata().is_ok_and(|m| m.uid() == uid) {
            count += std::fs::read_dir(entry.path().join("task"))
                .map(|tasks| tasks.count() as u64)
                .unwrap_or(1);
        }
    }
    count
}

#[test]
fn what_the_kernel_offers_is_remembered_and_a_forged_record_is_not_believed() {
    let sandbox = layout();
    let cache = sandbox.path().join("cache");
    let record = cache.join("sandbox-support.json");
    let flow = workflow(vec![script(
        "look",
        &format!("cat {}", p(&sandbox, "granted/ok.txt")),
        json!({ "exec": ["cat"], "files": [{ "path": p(&sandbox, "granted"), "access": "read" }] }),
    )]);
    let with_cache = |command: &mut Command| {
        command.env("WFHOST_CACHE_DIR", &cache);
    };
    let first = run_flow_with(&sandbox, &flow, with_cache);
    assert_contains(&first.completed("look").to_string(), "fine to read");
    if !record.exists() {
        // Only a complete sandbox (Landlock, namespaces, a pids cgroup) is
        // remembered.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but nothing was remembered: this kernel lacks part of the sandbox"
        );
        eprintln!("skipped: this kernel lacks part of the sandbox");
        return;
    }
    let remembered: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(remembered["landlock_abi"].as_i64().unwrap() >= 1);
    let cgroup = remembered["cgroup"].as_str().unwrap().to_string();

    // A record naming a plain directory as the cgroup (where `pids.max`
    // would limit nothing) is not believed: the kernel is asked again and
    // the record written anew; no program's cgroup is made there.
    let mut forged = remembered.clone();
    forged["cgroup"] = json!(p(&sandbox, "rw"));
    std::fs::write(&record, forged.to_string()).unwrap();
    let second = run_flow_with(&sandbox, &flow, with_cache);
    assert_contains(&second.completed("look").to_string(), "fine to read");
    let again: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(again["cgroup"], json!(cgroup));
    let made_there: Vec<_> = std::fs::read_dir(sandbox.path().join("rw"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != ".keep")
        .collect();
    assert!(
        made_there.is_empty(),
        "cgroups made in the forged place: {made_there:?}"
    );

    // With the record believed, the sandbox is the same: what is not
    // granted stays closed.
    let denied = workflow(vec![script(
        "peek",
        &format!("cat {}", p(&sandbox, "outside/secret.txt")),
        json!({ "exec": ["cat"] }),
    )]);
    let third = run_flow_with(&sandbox, &denied, with_cache);
    assert_contains(&third.error("peek"), "Permission denied");
}

/// A step's memory does not reach the next step that runs in its place.
/// A run of many steps reuses wasmtime's pooled instance slots, whose
/// memories are reset by hand rather than unmapped: every `scan` step,
/// each run right after a `plant` step left 8 MiB of marker in its heap and
/// stack, grows its memory over the pages the planter wrote and must find
/// no marker. The first step proves the scanner finds a marker it can see.
#[test]
fn a_step_cannot_read_what_the_step_before_it_left_in_memory() {
    let sandbox = layout();
    let mut steps = vec![attack(
        "probe",
        json!({ "attack": "plant-and-scan" }),
        json!({}),
    )];
    let mut previous = "probe".to_string();
    for round in 0..10 {
        for kind in ["plant", "scan"] {
            let id = format!("{kind}{round}");
            let mut step = attack(&id, json!({ "attack": kind }), json!({}));
            step["needs"] = json!([previous]);
            steps.push(step);
            previous = id;
        }
    }
    // Instances that end abnormally leave their slots clean too: one
    // traps (stack overflow), one is stopped by its timeout.
    for (round, attack_name) in [(10, "plant-and-recurse"), (11, "plant-and-loop")] {
        let planter = format!("plant{round}");
        let mut step = attack(&planter, json!({ "attack": attack_name }), json!({}));
        step["needs"] = json!([previous]);
        step["timeout"] = json!("2s");
        step["continue_on_error"] = json!(true);
        steps.push(step);
        let scanner = format!("scan{round}");
        let mut step = attack(&scanner, json!({ "attack": "scan" }), json!({}));
        step["needs"] = json!([planter]);
        steps.push(step);
        previous = scanner;
    }
    let mut flow = workflow(steps);
    // One step at a time: each scan takes the slot its planter just left.
    flow["config"]["parallelism"] = json!(1);
    let run = run_flow(&sandbox, &flow);
    let probe = run.completed("probe");
    assert!(
        probe["found"].as_u64().unwrap() > 0,
        "the scanner must find a marker in its own memory: {probe}"
    );
    assert_contains(&run.error("plant10"), "wasm trap");
    assert_contains(&run.error("plant11"), "timed out after 2s");
    for round in 0..12 {
        let scan = run.completed(&format!("scan{round}"));
        assert_eq!(
            scan["found"], 0,
            "scan{round} read memory plant{round} left: {scan}"
        );
        assert!(scan["scanned_mib"].as_u64().unwrap() >= 16, "{scan}");
    }
    // The two abnormal planters are tolerated failures; the host lives.
    assert_eq!(run.completed("canary")["alive"], "yes");
    assert_eq!(run.status["status"], "completed_with_errors");
}

/// `host.suspend` is no way around a budget or the sandbox: a step that
/// suspends forever still ends at its timeout, a state over 64 KiB fails
/// the step with the budget named, the call after a wait runs in a fresh
/// instance (nothing of the call before survives but the state), and the
/// attempt's budgets (progress reports) are not renewed by suspending.
#[test]
fn a_suspending_step_keeps_its_deadline_its_state_budget_and_no_memory() {
    let sandbox = layout();
    let mut forever = attack("forever", json!({ "attack": "suspend-loop" }), json!({}));
    forever["timeout"] = json!("2s");
    let huge = attack(
        "huge",
        json!({ "attack": "suspend-huge", "kib": 65 }),
        json!({}),
    );
    let recall = attack(
        "recall",
        json!({ "attack": "suspend-recall", "ms": 100 }),
        json!({}),
    );
    let progress = attack(
        "progress",
        json!({ "attack": "suspend-progress", "count": 600 }),
        json!({}),
    );
    let run = run_flow(&sandbox, &workflow(vec![forever, huge, recall, progress]));
    assert_contains(&run.error("forever"), "timed out after 2s");
    assert_contains(&run.error("huge"), "state of 66560 bytes");
    assert_contains(&run.error("huge"), "over its budget of 64 KiB");
    let recalled = run.completed("recall");
    assert_eq!(recalled["state"], "handed over");
    assert_eq!(recalled["static_survived"], false, "{recalled}");
    // One budget of progress reports per attempt, not per call.
    assert_eq!(run.completed("progress")["reported"], 1200);
    assert_contains(
        &run.logs(&sandbox, Some("progress")),
        "progress budget of 1000 reports per attempt used up",
    );
    run.assert_host_survived();
}
