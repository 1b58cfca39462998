//! End-to-end tests of durable runs: retries, pause/resume/cancel from
//! another process, crash recovery after SIGKILL, concurrent drivers.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The id of the only run in the sandbox, once it exists.
fn wait_for_run(sandbox: &Sandbox) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = sandbox.wfhost(&["runs", "--json"]);
        if let Ok(Value::Array(runs)) = serde_json::from_slice::<Value>(&output.stdout) {
            if let Some(id) = runs.first().and_then(|r| r["id"].as_str()) {
                return id.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no run appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for_run`] while `child` drives it: if the child exits first, show
/// why instead of waiting in vain.
fn wait_for_child_run(sandbox: &Sandbox, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = sandbox.wfhost(&["runs", "--json"]);
        if let Ok(Value::Array(runs)) = serde_json::from_slice::<Value>(&output.stdout) {
            if let Some(id) = runs.first().and_then(|r| r["id"].as_str()) {
                return id.to_string();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("the run exited ({status}) before it was recorded: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "no run appeared: {}",
            text(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `status --json` until `check` holds.
fn wait_until(sandbox: &Sandbox, run: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = sandbox.status(run);
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_child(child: Child) -> std::process::Output {
    child.wait_with_output().unwrap()
}

#[test]
fn failed_attempts_are_retried_with_backoff() {
    let sandbox = Sandbox::new();
    let state = sandbox.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let flaky = format!(
        "n=$(cat {dir}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {dir}/count; echo \"attempt $n\" >&2; [ $n -ge 3 ]",
        dir = state.display()
    );
    let path = sandbox.write(
        "retry.yaml",
        &format!(
            "name: r\nsteps:\n  - id: flaky\n    run: '{flaky}'\n    grants: {{files: [{{path: state, access: read-write}}], exec: [cat]}}\n    retry: {{max_attempts: 4, initial_interval: 150ms, backoff_coefficient: 2, jitter: 0, on: [permanent]}}\n  - id: seeds\n    run: 'exit 1'\n    maxRetries: 2\n    retryDelayMs: 10\n    retry: {{on: [permanent]}}\n  - id: never\n    run: 'exit 1'\n"
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    let flaky = step(&status, "flaky");
    assert_eq!(flaky["status"], "completed", "{flaky:#}");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["max_attempts"], 4);
    let seeds = step(&status, "seeds");
    assert_eq!(
        (seeds["status"].as_str(), seeds["attempts"].as_u64()),
        (Some("failed"), Some(3))
    );
    assert_eq!(step(&status, "never")["attempts"], 1, "no policy, no retry");

    let id = status["id"].as_str().unwrap();
    let events: Vec<Value> =
        std::fs::read_to_string(sandbox.export(id).join("steps/flaky/events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e["kind"] == "step_started")
        .map(|e| millis(&e["at"]))
        .collect();
    assert_eq!(starts.len(), 3);
    assert!(
        starts[1] - starts[0] >= 150,
        "first backoff waits the initial interval: {starts:?}"
    );
    assert!(
        starts[2] - starts[1] >= 300,
        "second backoff doubles: {starts:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "step_retry_scheduled")
            .count(),
        2
    );

    let logs = text(&sandbox.wfhost(&["logs", id, "flaky"]).stdout);
    assert!(
        logs.contains("attempt 1 failed") && logs.contains("next attempt at"),
        "{logs}"
    );
    let human = text(&sandbox.wfhost(&["status", id]).stdout);
    assert!(human.contains("attempt 3/4"), "{human}");
}

#[test]
fn pause_then_resume_from_other_processes() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "pause.yaml",
        "name: p\nsteps:\n  - id: first\n    run: sleep 1\n    grants: {exec: [sleep]}\n  - id: second\n    needs: [first]\n    run: echo two\n  - id: third\n    needs: [second]\n    run: echo three\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "first running", |s| {
        step(s, "first")["status"] == "running"
    });
    assert_exit(&sandbox.wfhost(&["pause", &id[..8]]), 0);
    let output = wait_child(child);
    assert_exit(&output, 3);
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "paused");
    assert_eq!(
        step(&status, "first")["status"],
        "completed",
        "the running step finished"
    );
    assert_eq!(
        step(&status, "second")["status"],
        "pending",
        "no new step started"
    );

    let paused_again = sandbox.wfhost(&["pause", &id]);
    assert_exit(&paused_again, 2);
    assert!(text(&paused_again.stderr).contains("not running"));

    let resumed = sandbox.wfhost(&["resume", &id, "--json"]);
    assert_exit(&resumed, 0);
    let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(step(&status, "third")["output"]["stdout"], "three");
    assert_eq!(
        step(&status, "first")["attempts"],
        1,
        "completed steps never run again"
    );
    let again = sandbox.wfhost(&["resume", &id]);
    assert_exit(&again, 2);
    assert!(text(&again.stderr).contains("nothing to resume"));
}

#[test]
fn cancel_from_another_process_kills_running_programs() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "cancel.yaml",
        "name: c\nsteps:\n  - id: long\n    run: sleep 59.7\n    grants: {exec: [sleep]}\n  - id: after\n    needs: [long]\n    run: 'true'\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "long running", |s| {
        step(s, "long")["status"] == "running"
    });
    let started = Instant::now();
    assert_exit(&sandbox.wfhost(&["cancel", &id]), 0);
    let output = wait_child(child);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_exit(&output, 1);
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(step(&status, "long")["status"], "cancelled");
    assert!(step(&status, "long")["error"]
        .as_str()
        .unwrap()
        .contains("killed"));
    assert_eq!(step(&status, "after")["status"], "cancelled");
    let no_sleep = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 59.7$"])
        .output()
        .unwrap();
    assert!(no_sleep.stdout.is_empty(), "the program was killed");
}

/// A 50-step DAG (10 chains of 5, parallelism 3) whose steps append their
/// id to `log`.
fn fifty_steps(sandbox: &Sandbox, log: &Path, idempotent: bool) -> std::path::PathBuf {
    chains(sandbox, log, idempotent, "0.05")
}

/// Ten chains of five script steps, three at a time; each appends its id
/// to `log`, then sleeps `pause` seconds.
fn chains(sandbox: &Sandbox, log: &Path, idempotent: bool, pause: &str) -> std::path::PathBuf {
    let mut yaml = String::from("name: fifty\nconfig: {parallelism: 3}\nsteps:\n");
    for chain in 0..10 {
        for link in 0..5 {
            let id = format!("c{chain}s{link}");
            yaml.push_str(&format!(
                "  - id: {id}\n    idempotent: {idempotent}\n    grants: {{files: [{{path: logs, access: read-write}}], exec: [sleep]}}\n    run: 'echo {id} >> {log}; sleep {pause}'\n",
                log = log.display()
            ));
            if link > 0 {
                yaml.push_str(&format!("    needs: [c{chain}s{}]\n", link - 1));
            }
        }
    }
    sandbox.write("fifty.yaml", &yaml)
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_killed_driver_is_resumed_and_every_step_runs_once() {
    for kill_after in [3usize, 17, 31, 44] {
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(sandbox.path().join("logs")).unwrap();
        let log = sandbox.path().join("logs/ran.txt");
        let path = fifty_steps(&sandbox, &log, true);
        let mut child = sandbox.spawn_run(&path);
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines(&log).len() < kill_after {
            assert!(Instant::now() < deadline, "the run did not progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let id = wait_for_run(&sandbox);
        let status = sandbox.status(&id);
        assert_eq!(
            status["status"], "stale",
            "a dead driver shows as stale, not running: {status:#}"
        );

        let resumed = sandbox.wfhost(&["resume", &id, "--json", "--quiet"]);
        assert_exit(&resumed, 0);
        let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
        assert_eq!(status["status"], "completed");
        let ran = lines(&log);
        let interrupted: Vec<String> = sandbox
            .wfhost(&["logs", &id])
            .stdout
            .split(|b| *b == b'\n')
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .filter(|l| l.contains("interrupted"))
            // `<time> <step> │ ── interrupted: ...`
            .map(|l| l.split(' ').nth(1).unwrap_or_default().to_string())
            .collect();
        for chain in 0..10 {
            for link in 0..5 {
                let id = format!("c{chain}s{link}");
                let count = ran.iter().filter(|l| **l == id).count();
                let limit = if interrupted.contains(&id) { 2 } else { 1 };
                assert!(
                    count >= 1 && count <= limit,
                    "kill after {kill_after}: {id} ran {count} times (interrupted: {interrupted:?})"
                );
            }
        }
    }
}

#[test]
fn an_interrupted_step_that_is_not_idempotent_waits_for_the_operator() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("logs")).unwrap();
    let log = sandbox.path().join("logs/ran.txt");
    let path = sandbox.write(
        "slow.yaml",
        &format!(
            "name: s\nsteps:\n  - id: slow\n    grants: {{files: [{{path: logs, access: read-write}}], exec: [sleep]}}\n    run: 'echo slow >> {}; sleep 30'\n  - id: next\n    needs: [slow]\n    run: echo next\n",
            log.display()
        ),
    );
    let mut child = sandbox.spawn_run(&path);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&log).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let id = wait_for_run(&sandbox);

    let blocked = sandbox.wfhost(&["resume", &id]);
    assert_exit(&blocked, 3);
    let stderr = text(&blocked.stderr);
    assert!(
        stderr.contains("slow")
            && stderr.contains("--rerun slow")
            && stderr.contains("not marked idempotent"),
        "{stderr}"
    );
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "blocked");
    assert_eq!(step(&status, "slow")["status"], "interrupted");

    let unknown = sandbox.wfhost(&["resume", &id, "--skip", "nope"]);
    assert_exit(&unknown, 1);
    assert!(
        text(&unknown.stderr).contains("has no step 'nope'"),
        "{}",
        text(&unknown.stderr)
    );

    // Skipping is the operator's decision: the run finishes without it.
    let skipped = sandbox.wfhost(&["resume", &id, "--skip", "slow", "--json", "--quiet"]);
    assert_exit(&skipped, 0);
    let status: Value = serde_json::from_slice(&skipped.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(step(&status, "slow")["status"], "skipped");
    assert_eq!(step(&status, "next")["status"], "skipped");
    assert_eq!(lines(&log).len(), 1, "the step was not run again");
}

#[test]
fn eight_drivers_share_one_store() {
    let sandbox = Sandbox::new();
    let mut yaml = String::from("name: busy\nconfig: {parallelism: 4}\nsteps:\n");
    for i in 0..12 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    type: function\n    component: echo\n    with: {{n: {i}}}\n"
        ));
    }
    let path = sandbox.write("busy.yaml", &yaml);
    let children: Vec<Child> = (0..8).map(|_| sandbox.spawn_run(&path)).collect();
    for child in children {
        let output = wait_child(child);
        assert_exit(&output, 0);
        assert!(
            !text(&output.stderr).contains("locked"),
            "{}",
            text(&output.stderr)
        );
    }
    let runs: Value = serde_json::from_slice(&sandbox.wfhost(&["runs", "--json"]).stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 8);
    assert!(runs.iter().all(|r| r["status"] == "completed"));
}

#[test]
fn optional_failures_are_tolerated_and_kept_apart() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "optional.yaml",
        "name: o\nsteps:\n  - id: flaky\n    optional: true\n    run: exit 2\n  - id: after\n    needs: [flaky]\n    run: echo \"flaky was {{ steps.flaky.status }}\"\n  - id: lint\n    continue_on_error: true\n    run: exit 1\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(status["status"], "completed_with_errors");
    assert_eq!(
        step(&status, "flaky")["status"],
        "failed",
        "the raw outcome is kept"
    );
    assert!(step(&status, "flaky")["error"]
        .as_str()
        .unwrap()
        .contains("exited with code 2"));
    assert_eq!(
        step(&status, "after")["output"]["stdout"],
        "flaky was failed"
    );
    assert_eq!(step(&status, "lint")["status"], "failed");
    let id = status["id"].as_str().unwrap();
    let events =
        std::fs::read_to_string(sandbox.export(id).join("steps/flaky/events.jsonl")).unwrap();
    assert!(events.contains("\"conclusion\":\"tolerated\""), "{events}");
}

#[test]
fn conditions_skip_steps_and_their_dependents() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "if.yaml",
        "name: i\nargs: {type: object, properties: {deploy: {type: boolean, default: false}}}\nsteps:\n  - id: build\n    run: echo built\n  - id: deploy\n    needs: [build]\n    if: args.deploy\n    run: echo deploying\n  - id: announce\n    needs: [deploy]\n    run: echo announced\n  - id: check\n    needs: [build]\n    if: \"{{ steps.build.status == 'completed' and not args.deploy }}\"\n    run: echo checked\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(step(&status, "deploy")["status"], "skipped");
    assert!(step(&status, "deploy")["error"]
        .as_str()
        .unwrap()
        .contains("condition is false: args.deploy"));
    assert_eq!(step(&status, "announce")["status"], "skipped");
    assert_eq!(step(&status, "check")["status"], "completed");

    let (output, status) = sandbox.run(&path, &["--arg", "deploy=true"]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(step(&status, "announce")["status"], "completed");
    assert_eq!(step(&status, "check")["status"], "skipped");

    let bad = sandbox.write("badif.yaml", "name: b\nargs: {type: object, properties: {x: {type: string}}}\nsteps:\n  - id: s\n    if: args.nope\n    run: 'true'\n");
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("step 's'") && stderr.contains("nope"),
        "{stderr}"
    );
}

#[test]
fn finally_steps_run_after_failure_and_after_cancel() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "finally.yaml",
        "name: f\nsteps:\n  - id: work\n    run: exit 4\n  - id: after\n    needs: [work]\n    run: 'true'\n  - id: cleanup\n    finally: true\n    needs: [work]\n    run: echo \"cleaning up after {{ steps.work.status }}\"\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    assert_eq!(status["status"], "failed");
    assert_eq!(step(&status, "after")["status"], "skipped");
    let cleanup = step(&status, "cleanup");
    assert_eq!(cleanup["status"], "completed");
    assert_eq!(cleanup["output"]["stdout"], "cleaning up after failed");
    assert!(millis(&cleanup["started_at"]) >= millis(&step(&status, "work")["finished_at"]));

    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "cancel-finally.yaml",
        "name: cf\nsteps:\n  - id: long\n    run: sleep 58.3\n    grants: {exec: [sleep]}\n  - id: cleanup\n    finally: true\n    needs: [long]\n    run: echo cleaned after {{ steps.long.status }}\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "long running", |s| {
        step(s, "long")["status"] == "running"
    });
    assert_exit(&sandbox.wfhost(&["cancel", &id]), 0);
    assert_exit(&wait_child(child), 1);
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(step(&status, "long")["status"], "cancelled");
    assert_eq!(step(&status, "cleanup")["status"], "completed");
    assert_eq!(
        step(&status, "cleanup")["output"]["stdout"],
        "cleaned after cancelled",
        "a finally step sees the cancelled step's status"
    );
}

#[test]
fn retry_from_a_step_reruns_it_and_what_follows() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("data")).unwrap();
    let data = sandbox.path().join("data");
    let path = sandbox.write(
        "rerun.yaml",
        &format!(
            "name: r\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [\"@coreutils\"]}}}}\nsteps:\n  - id: fetch\n    run: 'echo fetch >> {d}/log; echo value=7 >> \"$WFHOST_OUTPUT\"'\n  - id: build\n    needs: [fetch]\n    run: 'echo build >> {d}/log; test -f {d}/fixed'\n  - id: ship\n    needs: [build]\n    run: 'echo ship {{{{ steps.fetch.output.value }}}} >> {d}/log'\n",
            d = data.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let id = status.unwrap()["id"].as_str().unwrap().to_string();
    std::fs::write(data.join("fixed"), "").unwrap();

    let retried = sandbox.wfhost(&["retry", &id, "--from", "build", "--json", "--quiet"]);
    assert_exit(&retried, 0);
    let status: Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(
        step(&status, "fetch")["attempts"],
        1,
        "upstream output reused"
    );
    assert_eq!(
        step(&status, "build")["attempts"],
        2,
        "attempt history kept"
    );
    let log = std::fs::read_to_string(data.join("log")).unwrap();
    assert_eq!(log, "fetch\nbuild\nbuild\nship 7\n");

    let only = sandbox.wfhost(&["retry", &id, "--only", "fetch", "--json", "--quiet"]);
    assert_exit(&only, 0);
    let status: Value = serde_json::from_slice(&only.stdout).unwrap();
    assert_eq!(step(&status, "fetch")["attempts"], 2);
    assert_eq!(step(&status, "ship")["attempts"], 1);

    let unknown = sandbox.wfhost(&["retry", &id, "--from", "nope"]);
    assert_exit(&unknown, 2);
    assert!(text(&unknown.stderr).contains("has no step 'nope'"));
    let neither = sandbox.wfhost(&["retry", &id]);
    assert_exit(&neither, 2);
}

#[test]
fn watch_follows_a_run_live_from_another_process() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "watch.yaml",
        "name: w\nsteps:\n  - id: one\n    run: sleep 0.5\n    grants: {exec: [sleep]}\n  - id: two\n    needs: [one]\n    run: echo done\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    let watched = sandbox.wfhost(&["watch", &id, "--json"]);
    assert_exit(&watched, 0);
    assert_exit(&wait_child(child), 0);
    let kinds: Vec<String> = text(&watched.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for expected in ["step_started", "step_completed", "run_status"] {
        assert!(kinds.iter().any(|k| k == expected), "{kinds:?}");
    }
    let last_status = text(&watched.stdout)
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "run_status")
        .unwrap();
    assert_eq!(
        last_status["data"]["status"], "completed",
        "watch ran until the end"
    );
}

#[test]
fn a_run_restored_to_a_checkpoint_reruns_later_steps() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("data")).unwrap();
    let data = sandbox.path().join("data");
    let path = sandbox.write(
        "cp.yaml",
        &format!(
            "name: cp\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [\"@coreutils\"]}}}}\nsteps:\n  - id: a\n    run: 'echo a >> {d}/log'\n  - id: b\n    needs: [a]\n    run: 'echo b >> {d}/log'\n  - id: c\n    needs: [b]\n    run: 'echo c >> {d}/log'\n",
            d = data.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let id = status.unwrap()["id"].as_str().unwrap().to_string();
    let listed = sandbox.wfhost(&["checkpoints", &id, "--json"]);
    let checkpoints: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let after_a = checkpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["step"] == "a" && c["kind"] == "step_completed")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    let restored = sandbox.wfhost(&["restore", &after_a.to_string(), "--json", "--quiet"]);
    assert_exit(&restored, 0);
    let status: Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert_eq!(step(&status, "a")["attempts"], 1);
    assert_eq!(step(&status, "c")["attempts"], 2);
    assert_eq!(
        std::fs::read_to_string(data.join("log")).unwrap(),
        "a\nb\nc\nb\nc\n"
    );
    let bad = sandbox.wfhost(&["restore", "999999"]);
    assert_exit(&bad, 2);
    assert!(text(&bad.stderr).contains("no checkpoint 999999"));

    let kept = sandbox.wfhost(&["prune", "--older-than", "1h"]);
    assert!(text(&kept.stdout).contains("removed 0 run(s)"));
    std::thread::sleep(Duration::from_millis(1100));
    let pruned = sandbox.wfhost(&["prune", "--older-than", "1s"]);
    assert!(
        text(&pruned.stdout).contains(&id),
        "{}",
        text(&pruned.stdout)
    );
    assert!(!sandbox.home().join("runs").join(&id).exists());
    assert_exit(&sandbox.wfhost(&["status", &id]), 2);
}

/// `prune` gives the space of what it deleted back to the file system.
#[test]
fn prune_reclaims_the_space_of_deleted_runs() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "big.yaml",
        "name: big\nsteps:\n  - id: a\n    run: |\n      printf '%3000000s' | tr ' ' x\n    grants: {exec: [tr], max_output: 8MiB}\n",
    );
    let (output, _) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let size = || {
        ["wfhost.db", "wfhost.db-wal"]
            .iter()
            .map(|name| std::fs::metadata(sandbox.home().join(name)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let before = size();
    assert!(before > 3_000_000, "{before}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_exit(&sandbox.wfhost(&["prune", "--older-than", "1s"]), 0);
    let after = size();
    assert!(after < 1_000_000, "{before} -> {after} bytes");
}

/// A sandbox with a writable `data/` folder granted to every step.
fn with_data(sandbox: &Sandbox) -> std::path::PathBuf {
    let data = sandbox.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    data
}

#[test]
fn retry_step_goes_back_at_most_max_loops_times() {
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "loops.yaml",
        &format!(
            "name: l\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [\"@coreutils\"]}}}}\nsteps:\n  - id: prepare\n    run: 'echo prepare >> {d}/log'\n  - id: check\n    needs: [prepare]\n    run: 'echo check >> {d}/log; test $(grep -c prepare {d}/log) -ge 3'\n    on_failure: {{retry_step: prepare, max_loops: 3}}\n  - id: report\n    needs: [check]\n    run: echo ok\n",
            d = data.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(step(&status, "prepare")["attempts"], 3);
    assert_eq!(step(&status, "check")["attempts"], 3);
    assert_eq!(step(&status, "report")["status"], "completed");
    let log = std::fs::read_to_string(data.join("log")).unwrap();
    assert_eq!(log, "prepare\ncheck\nprepare\ncheck\nprepare\ncheck\n");

    // Never fixed: it gives up after max_loops and the run fails.
    let never = sandbox.write(
        "never.yaml",
        "name: n\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    needs: [a]\n    run: exit 1\n    on_failure: {retry_step: a, max_loops: 2}\n",
    );
    let (output, status) = sandbox.run(&never, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    assert_eq!(step(&status, "a")["attempts"], 3);
    assert!(step(&status, "b")["error"]
        .as_str()
        .unwrap()
        .contains("gave up after 2 loop(s) back to 'a'"));

    let bad = sandbox.write(
        "bad.yaml",
        "name: b\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    run: 'true'\n    on_failure: {retry_step: a}\n",
    );
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("step 'b'")
            && text(&output.stderr).contains("retry_step 'a' must be a step this one needs")
    );
}

#[test]
fn for_each_runs_items_in_parallel_and_keeps_their_order() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "each.yaml",
        "name: e\nargs: {type: object, properties: {names: {type: array, default: [ann, bob, cy, dee, eve]}}}\nsteps:\n  - id: greet\n    for_each: args.names\n    parallelism: 3\n    grants: {exec: [sleep]}\n    run: 'sleep 0.2; echo \"hello {{ item }} #{{ index }}\"'\n  - id: total\n    needs: [greet]\n    type: function\n    component: echo\n    with: {count: \"{{ steps.greet.output | length }}\", first: \"{{ steps.greet.output[0].stdout }}\"}\n",
    );
    let started = Instant::now();
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let greet = step(&status, "greet");
    let outputs = greet["output"].as_array().unwrap();
    let lines: Vec<&str> = outputs
        .iter()
        .map(|o| o["stdout"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "hello ann #0",
            "hello bob #1",
            "hello cy #2",
            "hello dee #3",
            "hello eve #4"
        ]
    );
    assert_eq!(greet["attempts"], 5, "each item is its own attempt");
    assert_eq!(step(&status, "total")["output"]["count"], 5);
    assert_eq!(step(&status, "total")["output"]["first"], "hello ann #0");
    assert!(started.elapsed() < Duration::from_secs(30));
    let id = status["id"].as_str().unwrap();
    let events =
        std::fs::read_to_string(sandbox.export(id).join("steps/greet/events.jsonl")).unwrap();
    assert_eq!(events.matches("item_completed").count(), 5);

    let failing = sandbox.write(
        "each-fail.yaml",
        "name: f\nsteps:\n  - id: each\n    for_each: \"[1, 2, 3]\"\n    fail_fast: false\n    run: 'test {{ item }} -ne 2'\n",
    );
    let (output, status) = sandbox.run(&failing, &[]);
    assert_exit(&output, 1);
    let error = step(status.as_ref().unwrap(), "each")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("1 of 3 items failed; item 1"), "{error}");
}

#[test]
fn on_failure_block_parks_the_run_until_resume() {
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "block.yaml",
        &format!(
            "name: b\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [\"@coreutils\"]}}}}\nsteps:\n  - id: deploy\n    run: 'test -f {d}/approved'\n    on_failure: {{escalate: block}}\n  - id: after\n    needs: [deploy]\n    run: echo after\n  - id: lenient\n    run: exit 1\n    on_failure: {{escalate: skip}}\n  - id: lenient_child\n    needs: [lenient]\n    run: 'true'\n",
            d = data.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 3);
    assert!(
        text(&output.stderr).contains("blocks the run"),
        "{}",
        text(&output.stderr)
    );
    let status = status.unwrap();
    assert_eq!(status["status"], "blocked");
    assert_eq!(step(&status, "after")["status"], "pending");
    let id = status["id"].as_str().unwrap();

    std::fs::write(data.join("approved"), "").unwrap();
    let resumed = sandbox.wfhost(&["resume", id, "--json", "--quiet"]);
    assert_exit(&resumed, 0);
    let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(step(&status, "deploy")["attempts"], 2);
    assert_eq!(step(&status, "after")["output"]["stdout"], "after");
    assert_eq!(step(&status, "lenient")["status"], "skipped");
    assert!(step(&status, "lenient")["error"]
        .as_str()
        .unwrap()
        .contains("on_failure: skip"));
    assert_eq!(step(&status, "lenient_child")["status"], "skipped");
}

#[test]
fn a_stage_loop_repeats_until_its_condition_holds() {
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "stage.yaml",
        &format!(
            "name: s\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [\"@coreutils\"]}}}}\nsteps:\n  - id: draft\n    run: 'echo x >> {d}/drafts'\n  - id: review\n    needs: [draft]\n    run: 'echo \"count=$(wc -l < {d}/drafts | tr -d \" \")\" >> \"$WFHOST_OUTPUT\"'\n    loop: {{steps: [draft], until: \"steps.review.output.count | int >= 3\", max_iterations: 5}}\n  - id: publish\n    needs: [review]\n    run: echo published\n",
            d = data.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(step(&status, "draft")["attempts"], 3);
    assert_eq!(step(&status, "review")["output"]["count"], 3);
    assert_eq!(step(&status, "publish")["status"], "completed");

    let endless = sandbox.write(
        "endless.yaml",
        "name: e\nsteps:\n  - id: try\n    run: 'true'\n    loop: {until: 'false', max_iterations: 2}\n",
    );
    let (output, status) = sandbox.run(&endless, &[]);
    assert_exit(&output, 1);
    let error = step(status.as_ref().unwrap(), "try")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("still false after 2 iteration(s)"),
        "{error}"
    );
}

#[test]
fn total_timeout_bounds_all_attempts_together() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "total.yaml",
        "name: t\nsteps:\n  - id: slow\n    run: sleep 5\n    grants: {exec: [sleep]}\n    timeout: 400ms\n    total_timeout: 1s\n    retry: {max_attempts: 10, initial_interval: 50ms, jitter: 0}\n",
    );
    let started = Instant::now();
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    assert!(started.elapsed() < Duration::from_secs(15));
    let slow = step(status.as_ref().unwrap(), "slow").clone();
    let attempts = slow["attempts"].as_u64().unwrap();
    assert!((2..=4).contains(&attempts), "{slow:#}");
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow:#}"
    );
}

#[test]
fn resume_keeps_the_pinned_definition_unless_upgraded() {
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let original = format!(
        "name: pin\ndefaults: {{grants: {{files: [{{path: data}}]}}}}\nsteps:\n  - id: gate\n    run: 'test -f {d}/open'\n    on_failure: {{escalate: block}}\n  - id: after\n    needs: [gate]\n    run: echo old\n",
        d = data.display()
    );
    let path = sandbox.write("pin.yaml", &original);
    let (first, status) = sandbox.run(&path, &[]);
    assert_exit(&first, 3);
    let pinned_run = status.unwrap()["id"].as_str().unwrap().to_string();
    let (second, status) = sandbox.run(&path, &[]);
    assert_exit(&second, 3);
    let upgraded_run = status.unwrap()["id"].as_str().unwrap().to_string();

    // The file changes while both runs wait.
    std::fs::write(
        &path,
        original.replace("echo old", "echo new")
            + "  - id: extra\n    needs: [after]\n    run: echo extra\n",
    )
    .unwrap();
    std::fs::write(data.join("open"), "").unwrap();

    let resumed = sandbox.wfhost(&["resume", &pinned_run, "--json", "--quiet"]);
    assert_exit(&resumed, 0);
    let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(
        step(&status, "after")["output"]["stdout"],
        "old",
        "the pinned definition is used"
    );
    assert_eq!(status["steps"].as_array().unwrap().len(), 2);

    let upgraded = sandbox.wfhost(&["resume", &upgraded_run, "--upgrade", "--json"]);
    assert_exit(&upgraded, 0);
    let stderr = text(&upgraded.stderr);
    assert!(
        stderr.contains("+ extra (new step)") && stderr.contains("~ after (changed)"),
        "{stderr}"
    );
    let status: Value = serde_json::from_slice(&upgraded.stdout).unwrap();
    assert_eq!(step(&status, "after")["output"]["stdout"], "new");
    assert_eq!(step(&status, "extra")["status"], "completed");
    assert_ne!(
        status["definition_hash"],
        sandbox.status(&pinned_run)["definition_hash"]
    );
}

#[test]
fn a_run_past_its_run_timeout_is_cancelled_and_cleans_up() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "runtimeout.yaml",
        "name: rt\nconfig: {run_timeout: 1s}\nsteps:\n  - id: slow\n    run: sleep 57.1\n    grants: {exec: [sleep]}\n  - id: cleanup\n    finally: true\n    run: echo tidy\n",
    );
    let started = Instant::now();
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    assert!(started.elapsed() < Duration::from_secs(20));
    let status = status.unwrap();
    assert_eq!(status["status"], "cancelled");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("run_timeout of 1s reached"),
        "{status:#}"
    );
    assert_eq!(step(&status, "slow")["status"], "cancelled");
    assert_eq!(step(&status, "cleanup")["output"]["stdout"], "tidy");
    let bad = sandbox.write(
        "badrt.yaml",
        "name: b\nconfig: {run_timeout: soon}\nsteps:\n  - id: a\n    run: 'true'\n",
    );
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("config.run_timeout"));
}

#[test]
fn a_driver_stopped_past_its_lease_runs_nothing_after_the_takeover() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("logs")).unwrap();
    let log = sandbox.path().join("logs/ran.txt");
    let path = chains(&sandbox, &log, true, "0.2");
    let mut first = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&log).len() < 10 {
        assert!(Instant::now() < deadline, "the run did not progress");
        std::thread::sleep(Duration::from_millis(5));
    }

    // While its driver is alive and beating, nobody else may drive the run.
    let refused = sandbox.wfhost(&["resume", &id, "--quiet"]);
    assert_exit(&refused, 2);
    let message = text(&refused.stderr);
    assert!(
        message.contains(&format!("being driven by process {}", first.id())),
        "{message}"
    );

    // SIGSTOP: the driver is alive but stops beating; its lease runs out.
    let pid = first.id() as i32;
    stop_outside_a_write(pid, &sandbox.home().join("wfhost.db"));
    std::thread::sleep(Duration::from_secs(7));
    let resumed = sandbox.wfhost(&["resume", &id, "--json", "--quiet"]);
    assert_exit(&resumed, 0);
    let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(status["status"], "completed", "{status:#}");
    let after_takeover = lines(&log);

    // The old driver continues: it must notice at once, run nothing more
    // and overwrite nothing.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let output = wait_child(first);
    assert_ne!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("lost its lease"), "{stderr}");
    assert_eq!(
        lines(&log),
        after_takeover,
        "the stopped driver started steps after the takeover"
    );
    for chain in 0..10 {
        for link in 0..5 {
            let step = format!("c{chain}s{link}");
            let count = after_takeover.iter().filter(|l| **l == step).count();
            assert!((1..=2).contains(&count), "{step} ran {count} times");
        }
    }
    assert_eq!(sandbox.status(&id)["status"], "completed");
}

/// Stop process `pid` (SIGSTOP) at a moment it holds no write lock on the
/// SQLite database `db`. Nothing can take SQLite's lock from a stopped
/// process: stopped inside a transaction, it would hold every other
/// process's writes off until continued (they fail with "database is
/// locked" after their busy timeout), which is not what the test is about.
fn stop_outside_a_write(pid: i32, db: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the driver never left its transactions"
        );
        // SAFETY: signals to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // The signal is asynchronous: wait until the process is stopped.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let probe = rusqlite::Connection::open(db).unwrap();
        probe.busy_timeout(Duration::ZERO).unwrap();
        if probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `path` with the process killed right after it commits the first
/// event of kind `crash_after`, then resume it in a fresh process.
fn crash_then_resume(sandbox: &Sandbox, path: &Path, crash_after: &str) -> Value {
    let crashed = sandbox
        .command(&["run", path.to_str().unwrap(), "--quiet"])
        .env("WFHOST_TEST_CRASH_AFTER", crash_after)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGKILL),
        "the crash point was not reached: {}",
        text(&crashed.stderr)
    );
    let id = wait_for_run(sandbox);
    let resumed = sandbox.wfhost(&["resume", &id, "--json", "--quiet"]);
    serde_json::from_slice(&resumed.stdout)
        .unwrap_or_else(|_| panic!("resume printed no status: {}", text(&resumed.stderr)))
}

#[test]
fn a_crash_right_after_a_loop_decision_keeps_the_decision() {
    // retry_step: the failure and the going back are one transaction.
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "loops.yaml",
        &format!(
            "name: l\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [grep]}}}}\nsteps:\n  - id: prepare\n    run: 'echo prepare >> {d}/log'\n  - id: check\n    needs: [prepare]\n    run: 'echo check >> {d}/log; test $(grep -c prepare {d}/log) -ge 2'\n    on_failure: {{retry_step: prepare, max_loops: 3}}\n",
            d = data.display()
        ),
    );
    let status = crash_then_resume(&sandbox, &path, "step_failed");
    assert_eq!(status["status"], "completed", "{status:#}");
    let log = std::fs::read_to_string(data.join("log")).unwrap();
    assert_eq!(log, "prepare\ncheck\nprepare\ncheck\n");

    // A stage loop: the completion and the going back are one transaction.
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "stage.yaml",
        &format!(
            "name: s\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [grep]}}}}\nsteps:\n  - id: draft\n    run: 'echo x >> {d}/drafts'\n  - id: review\n    needs: [draft]\n    run: 'echo \"count=$(grep -c x {d}/drafts)\" >> \"$WFHOST_OUTPUT\"'\n    loop: {{steps: [draft], until: \"steps.review.output.count | int >= 2\", max_iterations: 5}}\n  - id: publish\n    needs: [review]\n    run: echo published\n",
            d = data.display()
        ),
    );
    let status = crash_then_resume(&sandbox, &path, "step_loop");
    assert_eq!(status["status"], "completed", "{status:#}");
    let status = sandbox.status(status["id"].as_str().unwrap());
    assert_eq!(step(&status, "review")["output"]["count"], 2, "{status:#}");
    assert_eq!(step(&status, "draft")["attempts"], 2);

    // escalate: skip: the failure and the skip are one transaction.
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "skip.yaml",
        "name: k\nsteps:\n  - id: flaky\n    run: exit 1\n    on_failure: {escalate: skip}\n  - id: after\n    needs: [flaky]\n    run: echo after\n  - id: other\n    idempotent: true\n    run: echo other\n",
    );
    let status = crash_then_resume(&sandbox, &path, "step_failed");
    assert_eq!(status["status"], "completed", "{status:#}");
    let status = sandbox.status(status["id"].as_str().unwrap());
    assert_eq!(step(&status, "flaky")["status"], "skipped", "{status:#}");
    assert_eq!(step(&status, "after")["status"], "skipped", "{status:#}");
}

#[test]
fn a_grant_swapped_for_a_link_while_the_run_was_down_is_refused_on_resume() {
    let sandbox = Sandbox::new();
    let data = with_data(&sandbox);
    let path = sandbox.write(
        "swap.yaml",
        &format!(
            "name: s\ndefaults: {{grants: {{files: [{{path: data, access: read-write}}], exec: [cat]}}}}\nsteps:\n  - id: a\n    run: echo a > {d}/a\n  - id: b\n    needs: [a]\n    run: cat {d}/a\n",
            d = data.display()
        ),
    );
    let crashed = sandbox
        .command(&["run", path.to_str().unwrap(), "--quiet"])
        .env("WFHOST_TEST_CRASH_AFTER", "step_completed")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        text(&crashed.stderr)
    );
    let id = wait_for_run(&sandbox);
    std::fs::rename(&data, sandbox.path().join("data.old")).unwrap();
    std::os::unix::fs::symlink("/etc", &data).unwrap();
    let resumed = sandbox.wfhost(&["resume", &id, "--quiet"]);
    assert_ne!(resumed.status.code(), Some(0));
    let stderr = text(&resumed.stderr);
    assert!(
        stderr.contains("files grant 'data' now leads to '/etc'")
            && stderr.contains("as when the run started"),
        "{stderr}"
    );
    assert_ne!(step(&sandbox.status(&id), "b")["status"], "completed");
}

/// Ctrl-C (SIGINT) on `wfhost run` is a cancel: the running program is
/// stopped, the `finally` step runs, the run ends `cancelled`, exit 130.
#[test]
fn ctrl_c_cancels_the_run_and_its_finally_steps_run() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "interrupt.yaml",
        "name: i\nsteps:\n  - id: long\n    run: sleep 57.1\n    grants: {exec: [sleep]}\n  - id: cleanup\n    finally: true\n    run: echo cleaned\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "long running", |s| {
        step(s, "long")["status"] == "running"
    });
    // SAFETY: signalling the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = wait_child(child);
    assert_exit(&output, 130);
    assert!(
        text(&output.stderr).contains(&format!("interrupted (SIGINT): cancelling run {id}")),
        "{}",
        text(&output.stderr)
    );
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(step(&status, "long")["status"], "cancelled");
    assert_eq!(step(&status, "cleanup")["status"], "completed");
    assert_eq!(step(&status, "cleanup")["output"]["stdout"], "cleaned");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 57.1$"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the program was stopped");
}

/// A second SIGTERM while the first one's cancel waits on a program that
/// ignores SIGTERM stops at once (exit 143): the program is killed and the
/// run is left for `wfhost resume`, not marked cancelled.
#[test]
fn a_second_signal_stops_at_once_and_leaves_the_run_resumable() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "stubborn.yaml",
        "name: s\nsteps:\n  - id: stubborn\n    kill_grace: 50s\n    run: trap '' TERM; sleep 57.2\n    grants: {exec: [sleep]}\n",
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "stubborn running", |s| {
        step(s, "stubborn")["status"] == "running"
    });
    let pid = child.id() as i32;
    // SAFETY: signalling the child we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The cancel has begun (the program got its SIGTERM and ignores it).
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let output = wait_child(child);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_exit(&output, 143);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("terminated (SIGTERM): stopped at once")
            && stderr.contains(&format!("`wfhost resume {id}` continues it")),
        "{stderr}"
    );
    let status = sandbox.status(&id);
    assert_ne!(status["status"], "cancelled", "{status:#}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 57.2$"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the program was killed");
}

/// `wfhost run` whose stdout and stderr readers went away (`| head`) and
/// whose terminal hung up (SIGHUP) drives its run to the end all the same.
#[test]
fn a_run_whose_output_goes_away_still_finishes() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "chatty.yaml",
        "name: c\nsteps:\n  - id: talk\n    run: 'for i in $(seq 2000); do echo line $i; done'\n  - id: nap\n    needs: [talk]\n    run: sleep 1.3\n    grants: {exec: [sleep]}\n  - id: after\n    needs: [nap]\n    run: echo done\n",
    );
    let mut child = sandbox
        .command(&["run", path.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let id = wait_for_child_run(&sandbox, &mut child);
    wait_until(&sandbox, &id, "nap running", |s| {
        step(s, "nap")["status"] == "running"
    });
    // SAFETY: signalling the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let status = sandbox.status(&id);
    assert_eq!(status["status"], "completed");
    assert_eq!(step(&status, "after")["output"]["stdout"], "done");
}

/// A step killed while it waits in `host.suspend` is not an interrupted
/// step awaiting a decision: `resume` goes on with the wait (what is left of
/// it) as the step's next attempt, and hands the step the state it left.
#[test]
fn a_step_killed_while_suspended_goes_on_waiting_on_resume() {
    let sandbox = Sandbox::new();
    let hostile = test_plugin("hostile");
    let path = sandbox.write(
        "wait.yaml",
        &format!(
            "name: w\nplugins:\n  hostile: {}\nsteps:\n  - id: nap\n    type: hostile\n    \
             with: {{ attack: suspend-recall, ms: 3000 }}\n  - id: after\n    needs: [nap]\n    \
             type: function\n    component: echo\n    with: {{ state: '{{{{ steps.nap.output.state }}}}' }}\n",
            hostile.display()
        ),
    );
    let mut child = sandbox.spawn_run(&path);
    let id = wait_for_child_run(&sandbox, &mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&sandbox.wfhost(&["logs", &id]).stdout).contains("waiting (host.suspend) until") {
        assert!(Instant::now() < deadline, "the step never suspended");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let resumed = sandbox.wfhost(&["resume", &id, "--json", "--quiet"]);
    assert_exit(&resumed, 0);
    let status: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(status["status"], "completed", "{status:#}");
    let nap = step(&status, "nap");
    assert_eq!(nap["output"]["state"], "handed over", "{nap:#}");
    assert_eq!(nap["output"]["static_survived"], false);
    assert_eq!(nap["attempts"], 2, "{nap:#}");
    assert_eq!(step(&status, "after")["output"]["state"], "handed over");
    let logs = text(&sandbox.wfhost(&["logs", &id, "nap"]).stdout);
    assert!(
        logs.contains("the wait goes on") && logs.contains("woken: called again"),
        "{logs}"
    );
}

/// Killed right after its wait was recorded, a step goes on waiting on
/// `resume`; killed right after the wait's end was recorded (its next call
/// may have started, and what that did is unknown), it is an interrupted
/// step as any other and the run waits for the operator.
#[test]
fn a_crash_on_either_side_of_a_wait_goes_on_only_when_no_code_ran() {
    let workflow = "name: n\nsteps:\n  - id: nap\n    type: function\n    component: sleep\n    \
                    with: { ms: 200 }\n";
    let sandbox = Sandbox::new();
    let path = sandbox.write("nap.yaml", workflow);
    let status = crash_then_resume(&sandbox, &path, "step_suspended");
    assert_eq!(status["status"], "completed", "{status:#}");
    let nap = step(&status, "nap");
    assert_eq!(nap["attempts"], 2, "{nap:#}");
    assert_eq!(nap["output"]["ms"], 200);

    let sandbox = Sandbox::new();
    let path = sandbox.write("nap.yaml", workflow);
    let status = crash_then_resume(&sandbox, &path, "step_woken");
    assert_eq!(status["status"], "blocked", "{status:#}");
    assert_eq!(step(&status, "nap")["status"], "interrupted");
}
