//! End-to-end tests of the `wfhost` binary: real wasmtime, real SQLite,
//! real child processes.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn hello_runs_and_every_step_completes() {
    let sandbox = Sandbox::new();
    let (output, status) = sandbox.run(
        &repo().join("workflows/hello.yaml"),
        &["--arg", "who=tester"],
    );
    assert_exit(&output, 0);
    let status = status.expect("run --json prints the run");
    let id = status["id"].as_str().unwrap();

    let status = sandbox.status(id);
    assert_eq!(status["status"], "completed");
    assert_eq!(status["workflow"], "hello");
    for step in status["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "completed", "{step:#}");
        assert_eq!(step["attempts"], 1);
        assert!(step["started_at"].is_string() && step["finished_at"].is_string());
        assert!(step["error"].is_null());
    }
    let greet = step(&status, "greet");
    assert_eq!(greet["output"]["exit_code"], 0);
    assert_eq!(greet["output"]["stdout"], "Hello, tester!");
    assert_eq!(
        greet["output"]["greeting"],
        format!("Hello, tester, from run {id}")
    );
    assert_eq!(step(&status, "count")["output"]["words"], 5);
    assert!(
        text(&output.stderr).contains(&format!("run {id}")),
        "the run id is printed"
    );

    // The run folder mirrors the journal for people; `export` writes the
    // per-step files from the store.
    let folder = sandbox.home().join("runs").join(id);
    assert!(std::fs::read_to_string(folder.join("progress.md"))
        .unwrap()
        .contains("completed"));
    let journal = std::fs::read_to_string(folder.join("events.jsonl")).unwrap();
    assert!(journal.contains("\"step_completed\""), "{journal}");
    // Complete once `wfhost run` has exited (it ends the process as soon as
    // the drive is over): the last line is the run's end.
    let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "run_status", "{journal}");
    assert_eq!(last["data"]["status"], "completed", "{journal}");
    assert!(
        !folder.join("steps").exists(),
        "no per-step files while running"
    );
    let dir = sandbox.export(id);
    for name in ["input.json", "output.json", "events.jsonl", "summary.md"] {
        assert!(
            dir.join("steps/count").join(name).is_file(),
            "missing {name}"
        );
    }
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("steps/count/input.json")).unwrap())
            .unwrap();
    assert_eq!(
        input["config"]["text"],
        format!("Hello, tester, from run {id}")
    );
    assert_eq!(input["inputs"]["greet"]["exit_code"], 0);
    assert_eq!(input["idempotency_key"], format!("{id}:count:0:1"));
    let output: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("steps/count/output.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(output["words"], 5);
    let summary = std::fs::read_to_string(dir.join("steps/count/summary.md")).unwrap();
    assert!(summary.contains("- status: **completed**"), "{summary}");
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "completed");
    assert!(dir.join("definition.yaml").is_file());
    // An export never writes into a folder that holds something.
    let again = sandbox.wfhost(&["export", id, dir.to_str().unwrap()]);
    assert_exit(&again, 2);
    assert!(
        text(&again.stderr).contains("exists and is not empty (pass --force"),
        "{}",
        text(&again.stderr)
    );
    assert_exit(
        &sandbox.wfhost(&["export", id, dir.to_str().unwrap(), "--force"]),
        0,
    );

    // Prefixes work; the log shows what the script printed.
    let logs = sandbox.wfhost(&["logs", &id[..6], "greet"]);
    assert_exit(&logs, 0);
    assert!(
        text(&logs.stdout).contains("Hello, tester!"),
        "{}",
        text(&logs.stdout)
    );
    let runs = sandbox.wfhost(&["runs"]);
    assert!(text(&runs.stdout).contains(id));
}

#[test]
fn code_review_checks_run_in_parallel() {
    let sandbox = Sandbox::new();
    let (output, status) = sandbox.run(&repo().join("workflows/code-review.yaml"), &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let (size, markers) = (step(&status, "size"), step(&status, "markers"));
    let (a0, a1) = (millis(&size["started_at"]), millis(&size["finished_at"]));
    let (b0, b1) = (
        millis(&markers["started_at"]),
        millis(&markers["finished_at"]),
    );
    assert!(
        a0 <= b1 && b0 <= a1,
        "intervals overlap: size {a0}..{a1}, markers {b0}..{b1}"
    );
    let parse = step(&status, "parse");
    assert!(
        millis(&parse["finished_at"]) <= a0.min(b0),
        "checks start after parse"
    );
    assert!(size["output"]["lines"].as_u64().unwrap() > 100);
    assert!(size["output"]["files"].as_u64().unwrap() >= 10);
    let report = step(&status, "report");
    assert!(report["output"]["stdout"]
        .as_str()
        .unwrap()
        .contains("lines:"));
}

#[test]
fn json_workflow_runs() {
    let sandbox = Sandbox::new();
    let (output, status) = sandbox.run(&repo().join("workflows/word-stats.json"), &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let summary = step(&status, "summary");
    assert!(
        summary["output"]["words"].as_u64().unwrap() > 50,
        "{summary:#}"
    );
    assert!(step(&status, "show")["output"]["stdout"]
        .as_str()
        .unwrap()
        .contains("words on"));
}

fn invalid(sandbox: &Sandbox, name: &str, workflow: &str) -> String {
    let path = sandbox.write(name, workflow);
    for command in ["validate", "run"] {
        let output = sandbox.wfhost(&[command, path.to_str().unwrap()]);
        assert_exit(&output, 2);
        assert!(output.stdout.is_empty() || command == "validate");
        let stderr = text(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    text(&sandbox.wfhost(&["validate", path.to_str().unwrap()]).stderr)
}

#[test]
fn a_cycle_is_rejected_with_its_path() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "cycle.yaml",
        "name: c\nsteps:\n  - id: a\n    needs: [b]\n    run: 'true'\n  - id: b\n    needs: [a]\n    run: 'true'\n",
    );
    assert!(
        stderr.contains("a → b → a") || stderr.contains("b → a → b"),
        "{stderr}"
    );
    assert!(stderr.contains("cycle.yaml:"), "{stderr}");
}

#[test]
fn an_unknown_need_is_rejected_naming_the_step() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "need.yaml",
        "name: n\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    needs: [zz]\n    run: 'true'\n",
    );
    assert!(stderr.contains("need.yaml:6:"), "{stderr}");
    assert!(
        stderr.contains("step 'b'") && stderr.contains("'zz'"),
        "{stderr}"
    );
}

#[test]
fn a_duplicate_id_is_rejected() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "dup.yaml",
        "name: d\nsteps:\n  - id: a\n    run: 'true'\n  - id: a\n    run: 'true'\n",
    );
    assert!(stderr.contains("dup.yaml:5:"), "{stderr}");
    assert!(
        stderr.contains("'a'") && stderr.contains("duplicate"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_step_type_is_rejected() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "type.yaml",
        "name: t\nsteps:\n  - id: a\n    type: telepathy\n",
    );
    assert!(
        stderr.contains("step 'a'") && stderr.contains("unknown step type 'telepathy'"),
        "{stderr}"
    );
}

#[test]
fn an_undefined_template_variable_is_rejected() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "tpl.yaml",
        "name: t\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    needs: [a]\n    run: echo {{ steps.nope.output.x }}\n",
    );
    assert!(
        stderr.contains("step 'b'") && stderr.contains("nope"),
        "{stderr}"
    );
    let stderr = invalid(
        &sandbox,
        "arg.yaml",
        "name: t\nargs: {type: object, properties: {x: {type: string}}}\nsteps:\n  - id: a\n    run: echo {{ args.y }}\n",
    );
    assert!(
        stderr.contains("step 'a'") && stderr.contains("y"),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_point_at_the_file() {
    let sandbox = Sandbox::new();
    let stderr = invalid(
        &sandbox,
        "key.yaml",
        "name: k\nsteps:\n  - id: a\n    run: 'true'\n    colour: blue\n",
    );
    assert!(
        stderr.contains("key.yaml:") && stderr.contains("colour"),
        "{stderr}"
    );
    let stderr = invalid(&sandbox, "bad.json", "{\"name\": \"j\", \"steps\": [}\n");
    assert!(stderr.contains("bad.json:1:"), "{stderr}");
}

#[test]
fn arguments_are_checked_against_the_schema() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "args.yaml",
        "name: a\nargs:\n  type: object\n  required: [count]\n  properties:\n    count: {type: integer}\n    label: {type: string, default: items}\nsteps:\n  - id: show\n    run: echo {{ args.count * 2 }} {{ args.label }}\n",
    );
    let missing = sandbox.wfhost(&["run", path.to_str().unwrap()]);
    assert_exit(&missing, 2);
    assert!(
        text(&missing.stderr).contains("count"),
        "{}",
        text(&missing.stderr)
    );
    let wrong = sandbox.wfhost(&["run", path.to_str().unwrap(), "--arg", "count=many"]);
    assert_exit(&wrong, 2);
    assert!(
        text(&wrong.stderr).contains("count"),
        "{}",
        text(&wrong.stderr)
    );

    let (output, status) = sandbox.run(&path, &["--arg", "count=21"]);
    assert_exit(&output, 0);
    assert_eq!(
        step(&status.unwrap(), "show")["output"]["stdout"],
        "42 items"
    );

    let file = sandbox.write("args.json", "{\"count\": 2, \"label\": \"boxes\"}");
    let (output, status) = sandbox.run(&path, &["--args-file", file.to_str().unwrap()]);
    assert_exit(&output, 0);
    assert_eq!(
        step(&status.unwrap(), "show")["output"]["stdout"],
        "4 boxes"
    );
}

#[test]
fn a_failing_script_fails_the_run_and_skips_dependents() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "fail.yaml",
        "name: f\nsteps:\n  - id: boom\n    run: |\n      echo 'about to fail' >&2\n      exit 3\n  - id: after\n    needs: [boom]\n    run: 'true'\n  - id: later\n    needs: [after]\n    run: 'true'\n  - id: independent\n    run: echo fine\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    assert_eq!(status["status"], "failed");
    let boom = step(&status, "boom");
    assert_eq!(boom["status"], "failed");
    assert!(
        boom["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{boom:#}"
    );
    assert_eq!(step(&status, "after")["status"], "skipped");
    assert_eq!(step(&status, "later")["status"], "skipped");
    assert!(step(&status, "after")["error"]
        .as_str()
        .unwrap()
        .contains("boom"));
    assert_eq!(step(&status, "independent")["status"], "completed");

    let id = status["id"].as_str().unwrap();
    let logs = sandbox.wfhost(&["logs", id, "boom"]);
    assert_exit(&logs, 0);
    assert!(
        text(&logs.stdout).contains("about to fail"),
        "{}",
        text(&logs.stdout)
    );
    let all = sandbox.wfhost(&["logs", id]);
    assert!(
        text(&all.stdout).contains("boom │ about to fail"),
        "{}",
        text(&all.stdout)
    );
    // Each line starts with its time of day (UTC, as stored).
    let first = text(&all.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let time = first.split(' ').next().unwrap_or_default();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
        "{first}"
    );
}

#[test]
fn a_step_cannot_read_files_outside_its_grants() {
    let sandbox = Sandbox::new();
    sandbox.write("secret/data.txt", "one two three\n");
    sandbox.write("public/data.txt", "four five\n");
    let path = sandbox.write(
        "grants.yaml",
        "name: g\nsteps:\n  - id: sneaky\n    type: function\n    component: wordcount\n    grants: {files: [{path: public, access: read}]}\n    with: {paths: [secret/data.txt]}\n  - id: allowed\n    type: function\n    component: wordcount\n    grants: {files: [{path: public, access: read}]}\n    with: {paths: [public/data.txt]}\n  - id: nothing\n    type: function\n    component: wordcount\n    with: {paths: [/etc/passwd]}\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    let sneaky = step(&status, "sneaky");
    assert_eq!(sneaky["status"], "failed");
    let error = sneaky["error"].as_str().unwrap();
    assert!(
        error.contains("data.txt") && error.contains("no files grant"),
        "{error}"
    );
    let nothing = step(&status, "nothing")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        nothing.contains("/etc/passwd") && nothing.contains("no files grant"),
        "{nothing}"
    );
    assert_eq!(step(&status, "allowed")["output"]["words"], 2);
}

#[test]
fn script_output_file_becomes_output_fields() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "out.yaml",
        "name: o\nsteps:\n  - id: produce\n    run: |\n      echo 'answer=42' >> \"$WFHOST_OUTPUT\"\n      echo 'ok=true' >> \"$WFHOST_OUTPUT\"\n      echo 'list=[1, \"two\"]' >> \"$WFHOST_OUTPUT\"\n      echo 'version=1.10' >> \"$WFHOST_OUTPUT\"\n      printf 'code<<EOF\\n7\\nEOF\\n' >> \"$WFHOST_OUTPUT\"\n      printf 'notes<<EOF\\nline one\\nline two\\nEOF\\n' >> \"$WFHOST_OUTPUT\"\n  - id: consume\n    needs: [produce]\n    run: echo 'got {{ steps.produce.output.answer }}'\n  - id: big\n    needs: [produce]\n    if: steps.produce.output.answer > 99\n    run: 'true'\n  - id: wrong\n    needs: [produce]\n    optional: true\n    if: steps.produce.output.code > 5\n    run: 'true'\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let produce = step(&status, "produce");
    // Values that spell JSON are typed; the rest, and heredocs, are text.
    assert_eq!(produce["output"]["answer"], 42);
    assert_eq!(produce["output"]["ok"], true);
    assert_eq!(produce["output"]["list"], serde_json::json!([1, "two"]));
    assert_eq!(produce["output"]["version"], "1.10");
    assert_eq!(produce["output"]["code"], "7");
    assert_eq!(produce["output"]["notes"], "line one\nline two");
    assert_eq!(step(&status, "consume")["output"]["stdout"], "got 42");
    // 42 > 99 compares numbers: false (as text, "42" would sort after 99).
    assert_eq!(step(&status, "big")["status"], "skipped");
    // Text against a number is an error, never a silent answer.
    let wrong = step(&status, "wrong");
    assert_eq!(wrong["status"], "failed");
    assert!(
        wrong["error"]
            .as_str()
            .unwrap()
            .contains("`steps.produce.output.code > 5` compares text (\"7\") with a number (5)"),
        "{wrong:#}"
    );
}

#[test]
fn a_plain_command_starts_without_the_shell() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "plain.yaml",
        "name: p\nsteps:\n  - id: direct\n    run: env\n    grants: {exec: [env]}\n  - id: shell\n    run: 'env; true'\n    grants: {exec: [env]}\n  - id: builtin\n    run: echo plain\n  - id: ungranted\n    optional: true\n    run: env\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    // Started directly, `env` sees the step's environment and nothing a
    // shell adds (its PWD); through the shell it does.
    let direct = step(&status, "direct")["output"]["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(direct.contains("WFHOST_STEP_ID=direct"), "{direct}");
    assert!(direct.contains("WFHOST_OUTPUT="), "{direct}");
    assert!(!direct.contains("PWD="), "{direct}");
    let shell = step(&status, "shell")["output"]["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shell.contains("PWD="), "{shell}");
    // A builtin first is the shell's; it needs no grant.
    assert_eq!(step(&status, "builtin")["output"]["stdout"], "plain");
    // Not granted: the shell tries, and the error names the grant.
    let ungranted = step(&status, "ungranted");
    assert_eq!(ungranted["status"], "failed");
    let error = ungranted["error"].as_str().unwrap();
    assert!(error.contains("exec: [env]"), "{error}");
}

#[test]
fn an_undefined_value_at_run_time_fails_the_step_not_silently() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "undef.yaml",
        "name: u\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    needs: [a]\n    run: echo '[{{ steps.a.output.missing }}]'\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let b = step(status.as_ref().unwrap(), "b").clone();
    assert_eq!(b["status"], "failed");
    assert!(b["error"].as_str().unwrap().contains("undefined"), "{b:#}");
}

#[test]
fn a_step_past_its_timeout_is_stopped() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "slow.yaml",
        "name: s\nsteps:\n  - id: slow\n    timeout: 1s\n    run: sleep 30\n    grants: {exec: [sleep]}\n",
    );
    let started = std::time::Instant::now();
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    assert!(started.elapsed().as_secs() < 20, "the sleep was not killed");
    let slow = step(status.as_ref().unwrap(), "slow").clone();
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow:#}"
    );
}

#[test]
fn the_scheduler_respects_parallelism_and_does_not_wait_for_levels() {
    let sandbox = Sandbox::new();
    let mut workflow = String::from("name: p\nconfig: {parallelism: 2}\nsteps:\n");
    for i in 0..5 {
        workflow.push_str(&format!(
            "  - id: w{i}\n    run: sleep 0.3\n    grants: {{exec: [sleep]}}\n"
        ));
    }
    // fast → after_fast must start before slow finishes.
    workflow.push_str("  - id: fast\n    type: function\n    component: echo\n    needs: [w0]\n");
    workflow.push_str(
        "  - id: after_fast\n    type: function\n    component: echo\n    needs: [fast]\n",
    );
    let path = sandbox.write("par.yaml", &workflow);
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let intervals: Vec<(i64, i64)> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (millis(&s["started_at"]), millis(&s["finished_at"])))
        .collect();
    for &(start, _) in &intervals {
        let running = intervals
            .iter()
            .filter(|(s, e)| *s <= start && start < *e)
            .count();
        assert!(
            running <= 2,
            "more than 2 steps running at {start}: {intervals:?}"
        );
    }
    let after_fast = millis(&step(&status, "after_fast")["started_at"]);
    let last_sleeper = millis(&step(&status, "w4")["finished_at"]);
    assert!(
        after_fast < last_sleeper,
        "after_fast waited for an unrelated level"
    );
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let sandbox = Sandbox::new();
    let file = repo().join("workflows/code-review.yaml");
    let mermaid = sandbox.wfhost(&["graph", file.to_str().unwrap()]);
    assert_exit(&mermaid, 0);
    let text_m = text(&mermaid.stdout);
    assert!(
        text_m.contains("flowchart") && text_m.contains("parse") && text_m.contains("-->"),
        "{text_m}"
    );
    let dot = sandbox.wfhost(&["graph", file.to_str().unwrap(), "--format", "dot"]);
    assert_exit(&dot, 0);
    let text_d = text(&dot.stdout);
    assert!(
        text_d.contains("digraph") && text_d.contains("->"),
        "{text_d}"
    );
}

#[test]
fn validate_accepts_the_examples_and_shows_grants() {
    let sandbox = Sandbox::new();
    for name in [
        "hello.yaml",
        "code-review.yaml",
        "word-stats.json",
        "agent-review.yaml",
    ] {
        let file = repo().join("workflows").join(name);
        let output = sandbox.wfhost(&["validate", file.to_str().unwrap()]);
        assert_exit(&output, 0);
        assert!(text(&output.stdout).contains("is valid"));
    }
    let output = sandbox.wfhost(&[
        "validate",
        repo().join("workflows/code-review.yaml").to_str().unwrap(),
        "--json",
    ]);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    let size = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "size")
        .unwrap();
    assert_eq!(size["grants"]["files"][0]["access"], "read");
}

#[test]
fn unknown_and_ambiguous_run_ids_are_user_errors() {
    let sandbox = Sandbox::new();
    // A home where nothing ran: said plainly, and nothing is created.
    let output = sandbox.wfhost(&["status", "doesnotexist"]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("no runs recorded in"));
    assert!(!sandbox.home().join("wfhost.db").exists());
    let path = sandbox.write(
        "ok.yaml",
        "name: ok\nsteps:\n  - id: a\n    type: function\n    component: echo\n",
    );
    for _ in 0..20 {
        assert_exit(&sandbox.run(&path, &[]).0, 0);
    }
    let output = sandbox.wfhost(&["status", "doesnotexist"]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("no run matches 'doesnotexist'"));
    // `runs` filters: by state, by workflow name, the newest N.
    let listed = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["runs", "--json"];
        all.extend(args);
        serde_json::from_slice(&sandbox.wfhost(&all).stdout).unwrap()
    };
    assert_eq!(listed(&["--limit", "3"]).len(), 3);
    assert_eq!(
        listed(&["--status", "completed", "--workflow", "ok"]).len(),
        20
    );
    assert!(listed(&["--status", "failed"]).is_empty());
    assert!(listed(&["--workflow", "other"]).is_empty());
    let none = sandbox.wfhost(&["runs", "--status", "failed"]);
    assert!(text(&none.stdout).contains("no runs match in"));
    assert_exit(&sandbox.wfhost(&["runs", "--status", "bogus"]), 2);
    // 20 random hex ids: some share a first character.
    let ids: Vec<String> =
        serde_json::from_slice::<Value>(&sandbox.wfhost(&["runs", "--json"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
    let shared = ids
        .iter()
        .find(|a| {
            ids.iter()
                .filter(|b| b.as_bytes()[0] == a.as_bytes()[0])
                .count()
                > 1
        })
        .unwrap();
    let output = sandbox.wfhost(&["status", &shared[..1]]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("ambiguous"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_strict_ceiling_forbids_best_effort_sandboxes() {
    let sandbox = Sandbox::new();
    let config = sandbox.write("home/config.toml", "[ceiling]\nsandbox = \"strict\"\n");
    let path = sandbox.write(
        "lax.yaml",
        "name: l\nsteps:\n  - id: fine\n    run: echo ok\n  - id: lax\n    run: echo ok\n    sandbox: best-effort\n",
    );
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("step 'lax': sandbox: best-effort is forbidden by the operator ceiling in")
            && stderr.contains(&format!("{} (ceiling sandbox: strict)", config.display()))
            && stderr.contains("lax.yaml:"),
        "{stderr}"
    );
    // The workflow-wide default is refused the same way.
    let path = sandbox.write(
        "lax-default.yaml",
        "name: l\ndefaults:\n  sandbox: best-effort\nsteps:\n  - id: a\n    run: echo ok\n",
    );
    let output = sandbox.wfhost(&["run", path.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("step 'a': sandbox: best-effort is forbidden"));
    std::fs::remove_file(&config).unwrap();
    assert_exit(&sandbox.wfhost(&["validate", path.to_str().unwrap()]), 0);
}

#[test]
fn the_operator_ceiling_rejects_wider_grants() {
    let sandbox = Sandbox::new();
    sandbox.write("allowed/data.txt", "ok\n");
    sandbox.write("secret/data.txt", "no\n");
    let config = sandbox.write(
        "home/config.toml",
        &format!(
            "[ceiling]\nfiles = [{{ path = \"{}\", access = \"read\" }}]\nexec = [\"sh\"]\nmemory = \"64MiB\"\n",
            sandbox.path().join("allowed").display()
        ),
    );
    let path = sandbox.write(
        "wide.yaml",
        "name: w\nsteps:\n  - id: fine\n    type: function\n    component: wordcount\n    grants: {files: [{path: allowed}], memory: 32MiB}\n    with: {paths: [allowed/data.txt]}\n  - id: greedy\n    run: cat secret/data.txt\n    grants: {files: [{path: secret}, {path: allowed, access: read-write}], exec: [cat], memory: 1GiB}\n",
    );
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    for line in &lines {
        assert!(
            line.contains("step 'greedy'") && line.contains("exceeds the operator ceiling"),
            "{line}"
        );
        assert!(
            line.contains(config.to_str().unwrap()),
            "names the ceiling's file: {line}"
        );
        assert!(line.contains("wide.yaml:"), "{line}");
    }
    assert!(
        stderr.contains("secret' (read)") && stderr.contains("ceiling files:"),
        "{stderr}"
    );
    assert!(stderr.contains("allowed' (read-write)"), "{stderr}");
    assert!(
        stderr.contains("exec grant 'cat'") && stderr.contains("ceiling exec: sh"),
        "{stderr}"
    );
    assert!(
        stderr.contains("memory grant of 1024 MiB") && stderr.contains("ceiling memory: 64 MiB"),
        "{stderr}"
    );

    let run = sandbox.wfhost(&["run", path.to_str().unwrap()]);
    assert_exit(&run, 2);
    let runs = sandbox.wfhost(&["runs", "--json"]);
    assert_eq!(text(&runs.stdout).trim(), "[]", "nothing ran");

    // The same workflow passes without the ceiling; --config picks another file.
    std::fs::remove_file(&config).unwrap();
    assert_exit(&sandbox.wfhost(&["validate", path.to_str().unwrap()]), 0);
    let other = sandbox.write("strict.toml", "[ceiling]\nexec = []\n");
    let output = sandbox.wfhost(&[
        "--config",
        other.to_str().unwrap(),
        "validate",
        path.to_str().unwrap(),
    ]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("ceiling exec: none"),
        "{}",
        text(&output.stderr)
    );
    let broken = sandbox.write("broken.toml", "[ceiling]\nmemroy = \"1GiB\"\n");
    let output = sandbox.wfhost(&[
        "--config",
        broken.to_str().unwrap(),
        "validate",
        path.to_str().unwrap(),
    ]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("broken.toml:2:1"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn validate_shows_effective_grants_with_defaults_merged() {
    let sandbox = Sandbox::new();
    sandbox.write("data/x.txt", "x");
    let path = sandbox.write(
        "merge.yaml",
        "name: m\ndefaults:\n  grants:\n    files: [{path: data}]\n    env: [HOME]\n    memory: 128MiB\nsteps:\n  - id: inherits\n    run: 'true'\n    grants: {exec: [cat], env: ['MODE=fast']}\n  - id: alone\n    type: function\n    component: echo\n    grants: {inherit: false, env: ['ONLY=1']}\n",
    );
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap(), "--json"]);
    assert_exit(&output, 0);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    let inherits = &doc["steps"][0]["grants"];
    assert_eq!(inherits["env"], serde_json::json!(["HOME", "MODE=fast"]));
    assert_eq!(inherits["memory"], 128 << 20);
    assert!(inherits["files"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("/data"));
    let exec: Vec<&str> = inherits["exec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(exec.len(), 2, "cat and the implicit shell: {exec:?}");
    assert!(
        exec[0].ends_with("/cat") && exec[0].starts_with('/'),
        "resolved to an absolute path: {exec:?}"
    );
    let alone = &doc["steps"][1]["grants"];
    assert_eq!(alone["env"], serde_json::json!(["ONLY=1"]));
    assert_eq!(alone["files"], serde_json::json!([]));
    assert_eq!(alone["memory"], 512 << 20);

    let human = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert!(
        text(&human.stdout).contains("effective grants:"),
        "{}",
        text(&human.stdout)
    );
}

#[test]
fn bad_grants_are_invalid_input_naming_the_step() {
    let sandbox = Sandbox::new();
    let cases = [
        (
            "exec: [no-such-program-wfhost]",
            "exec grant 'no-such-program-wfhost': no such program on PATH",
        ),
        ("memory: lots", "memory grant 'lots' is not a size"),
        (
            "network: ['a.*.com']",
            "a wildcard must be '*' or lead the name",
        ),
        (
            "files: [{path: missing-dir}]",
            "files grant 'missing-dir' does not exist",
        ),
        (
            "env: ['BAD NAME']",
            "env grant 'BAD NAME': expected NAME or NAME=value",
        ),
    ];
    for (grant, expected) in cases {
        let path = sandbox.write(
            "bad.yaml",
            &format!("name: b\nsteps:\n  - id: s\n    type: function\n    component: echo\n    grants: {{{grant}}}\n"),
        );
        let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
        assert_exit(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("step 's'") && stderr.contains(expected),
            "{grant}: {stderr}"
        );
        assert!(stderr.contains("bad.yaml:"), "{stderr}");
    }
}

#[test]
fn granted_env_reaches_the_step_and_nothing_else_does() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "env.yaml",
        "name: e\nsteps:\n  - id: show\n    grants: {env: [WFHOST_TEST_VISIBLE, 'FIXED=set-here']}\n    run: echo \"$WFHOST_TEST_VISIBLE/$FIXED/${WFHOST_TEST_HIDDEN:-unset}\"\n",
    );
    let output = sandbox
        .command(&["run", path.to_str().unwrap(), "--json"])
        .env("WFHOST_TEST_VISIBLE", "seen")
        .env("WFHOST_TEST_HIDDEN", "leaked")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        step(&status, "show")["output"]["stdout"],
        "seen/set-here/unset"
    );
}

#[test]
fn validate_warns_about_unquoted_values_in_scripts() {
    let sandbox = Sandbox::new();
    let wf = sandbox.write(
        "wf.yaml",
        "name: w\nargs: {type: object, properties: {who: {type: string, default: x}}}\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: [a]\n    run: |\n      echo {{ steps.a.output.stdout }}\n      echo {{ args.who | shq }}\n",
    );
    let output = sandbox.wfhost(&["validate", wf.to_str().unwrap()]);
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("wf.yaml:9:")
            && stderr.contains("step 'b'")
            && stderr.contains("{{ steps.a.output.stdout | shq }}"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    let output = sandbox.wfhost(&["validate", wf.to_str().unwrap(), "--json"]);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 1, "{doc:#}");
}

#[test]
fn quoted_outputs_reach_the_script_as_one_word() {
    let sandbox = Sandbox::new();
    let wf = sandbox.write(
        "wf.yaml",
        "name: w\nsteps:\n  - id: a\n    run: |\n      echo \"evil=x'; touch pwned; echo '\" >> \"$WFHOST_OUTPUT\"\n  - id: b\n    needs: [a]\n    run: printf '%s' {{ steps.a.output.evil | shq }}\n",
    );
    let (output, status) = sandbox.run(&wf, &[]);
    assert_exit(&output, 0);
    let id = status.unwrap()["id"].as_str().unwrap().to_string();
    let status = sandbox.status(&id);
    assert_eq!(
        step(&status, "b")["output"]["stdout"],
        "x'; touch pwned; echo '"
    );
}

#[test]
fn absurd_durations_are_clear_errors() {
    let sandbox = Sandbox::new();
    let wf = sandbox.write(
        "wf.yaml",
        "name: w\nsteps:\n  - id: a\n    timeout: 500000000000y\n    run: echo hi\n",
    );
    let output = sandbox.wfhost(&["validate", wf.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("wf.yaml:4:") && stderr.contains("invalid duration '500000000000y'"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn store_durability_is_read_from_the_config() {
    let sandbox = Sandbox::new();
    let wf = sandbox.write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: echo hi\n");
    sandbox.write("home/config.toml", "[store]\ndurability = \"full\"\n");
    let (output, _) = sandbox.run(&wf, &[]);
    assert_exit(&output, 0);
    sandbox.write("home/config.toml", "[store]\ndurability = \"fast\"\n");
    let (output, _) = sandbox.run(&wf, &[]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("config.toml:2:") && stderr.contains("fast"),
        "{stderr}"
    );
}

#[test]
fn every_bench_workload_runs() {
    let sandbox = Sandbox::new();
    let output = sandbox.wfhost(&[
        "bench",
        "--workload",
        "w1",
        "--workload",
        "w2",
        "--workload",
        "w3",
        "--fan-out",
        "5",
        "--chain",
        "5",
    ]);
    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    for workload in ["W1", "W2", "W3"] {
        assert!(stdout.contains(workload), "{stdout}");
    }
}

#[test]
fn printing_commands_end_quietly_on_a_closed_pipe() {
    use std::process::Stdio;
    let sandbox = Sandbox::new();
    let (output, _) = sandbox.run(&repo().join("workflows/hello.yaml"), &[]);
    assert_exit(&output, 0);
    for args in [
        vec!["runs"],
        vec!["validate", "../../workflows/code-review.yaml"],
        vec!["plugins"],
    ] {
        let mut args = args;
        let code_review = repo().join("workflows/code-review.yaml");
        if args[0] == "validate" {
            args[1] = code_review.to_str().unwrap();
        }
        let mut child = sandbox
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away at once
        let output = child.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
    }
}

/// `plugins` lists the built-in step components and the built-in tool
/// policies, each with its world.
#[test]
fn plugins_lists_steps_and_policies() {
    let sandbox = Sandbox::new();
    let output = sandbox.command(&["plugins", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let world_of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["world"].as_str().unwrap().to_string())
    };
    assert_eq!(world_of("script").as_deref(), Some("step"));
    assert_eq!(world_of("rules-policy").as_deref(), Some("tool-policy"));
    let text = sandbox.command(&["plugins"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("rules-policy") && l.contains("policy")),
        "{text}"
    );
}

/// A big component's first compile takes seconds: the user is told, once;
/// the second run reads the compiled code from the cache and says nothing.
#[test]
fn a_big_components_first_compile_is_announced_once() {
    let sandbox = Sandbox::new();
    // 2 MB of data: big enough to be announced (compiles quickly all the same).
    let data = "\\00".repeat(2_000_000);
    let wasm = wat::parse_str(format!(
        "(component (core module (memory 32) (data (i32.const 0) \"{data}\")))"
    ))
    .unwrap();
    std::fs::write(sandbox.path().join("big.wasm"), wasm).unwrap();
    let path = sandbox.write(
        "big.yaml",
        "name: big\nsteps:\n  - id: a\n    type: function\n    component: ./big.wasm\n",
    );
    let cache = sandbox.path().join("cache");
    let run = || {
        sandbox
            .command(&["run", path.to_str().unwrap()])
            .env("WFHOST_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let first = text(&run().stderr);
    assert!(
        first.contains(
            "compiling big.wasm (2.0 MB) for this machine (first use only: cached afterwards)"
        ) && first.contains("compiled big.wasm (2.0 MB) in"),
        "{first}"
    );
    let second = text(&run().stderr);
    assert!(!second.contains("compiling big.wasm"), "{second}");
}

/// A component file past the size a component may be is refused from its
/// size (a sparse file here), with one line naming it, not read into memory.
#[test]
fn an_oversized_component_file_is_refused_without_being_read() {
    let sandbox = Sandbox::new();
    // A component's header, then a hole.
    let huge = sandbox.path().join("huge.wasm");
    std::fs::write(&huge, b"\0asm\x0d\0\x01\0").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(600 << 20)
        .unwrap();
    let path = sandbox.write(
        "huge.yaml",
        "name: huge\nsteps:\n  - id: a\n    type: function\n    component: ./huge.wasm\n",
    );
    let out = sandbox
        .command(&["run", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("629145600 bytes, more than the 512 MiB a component file may be"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A component of 4 MB or more runs its first use on a quick (Winch) build;
/// a background process (this binary, at the lowest priority) makes the
/// optimized build and caches it, and later runs use that one, quietly.
#[test]
fn a_big_component_runs_on_a_quick_build_until_its_optimized_one_is_cached() {
    let sandbox = Sandbox::new();
    let data = "\\00".repeat(5_000_000);
    let wasm = wat::parse_str(format!(
        r#"(component
             (core module $m (memory 80) (data (i32.const 0) "{data}")
               (func (export "answer") (result i32) i32.const 42))
             (core instance $i (instantiate $m))
             (func (export "answer") (result s32) (canon lift (core func $i "answer"))))"#
    ))
    .unwrap();
    std::fs::write(sandbox.path().join("big.wasm"), wasm).unwrap();
    let path = sandbox.write(
        "big.yaml",
        "name: big\nsteps:\n  - id: a\n    type: function\n    component: ./big.wasm\n    function: answer\n",
    );
    let cache = sandbox.path().join("cache");
    let run = || {
        let out = sandbox
            .command(&["run", path.to_str().unwrap()])
            .env("WFHOST_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}{}", text(&out.stdout));
        stderr
    };
    let builds = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "cwasm")
            })
            .count()
    };
    let first = run();
    assert!(
        first.contains(
            "compiling big.wasm (5.0 MB) for this machine (quick build for first use; an optimized build follows in the background)"
        ),
        "{first}"
    );
    // The optimizer reports by its result: the second build in the cache,
    // its pending file gone.
    let waited = std::time::Instant::now();
    while (builds() < 2 || cache.join("pending").read_dir().unwrap().count() > 0)
        && waited.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(builds(), 2, "the optimized build was cached");
    let later = run();
    assert!(!later.contains("compiling big.wasm"), "{later}");
    assert_eq!(builds(), 2);
}

/// The home is `--home`/`WFHOST_HOME`, else the nearest `.wfhost` upward,
/// else the per-user one; reading where nothing ran creates nothing, and a
/// command that creates a home says where.
#[test]
fn the_home_is_found_upward_else_per_user_and_reading_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("user");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("sub/deeper")).unwrap();
    let per_user = user.join(".local/share/wfhost");
    let wfhost = |cwd: &std::path::Path, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wfhost"))
            .args(args)
            .current_dir(cwd)
            .env_remove("WFHOST_HOME")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", &user)
            .env(
                "WFHOST_CACHE_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"),
            )
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };

    let runs = wfhost(&project, &["runs"]);
    assert_exit(&runs, 0);
    assert!(
        text(&runs.stdout).contains(&format!("no runs recorded in {}", per_user.display())),
        "{}",
        text(&runs.stdout)
    );
    let status = wfhost(&project, &["status", "abc"]);
    assert_exit(&status, 2);
    assert!(text(&status.stderr).contains("no runs recorded in"));
    assert!(
        !user.exists() && !project.join(".wfhost").exists(),
        "nothing created"
    );

    std::fs::write(
        project.join("one.yaml"),
        "name: one\nsteps:\n  - id: a\n    type: function\n    component: echo\n",
    )
    .unwrap();
    let first = wfhost(&project.join("sub"), &["run", "../one.yaml", "-q"]);
    assert_exit(&first, 0);
    assert!(
        text(&first.stderr).contains(&format!(
            "created wfhost home {} (the per-user home",
            per_user.display()
        )),
        "{}",
        text(&first.stderr)
    );
    assert!(per_user.join("wfhost.db").is_file());

    let init = wfhost(&project, &["init"]);
    assert_exit(&init, 0);
    assert!(project.join(".wfhost/wfhost.db").is_file());
    assert!(std::fs::read_to_string(project.join(".wfhost/config.toml"))
        .unwrap()
        .contains("# [ceiling]"));
    let run = wfhost(
        &project.join("sub/deeper"),
        &[
            "run",
            "../../workflow.yaml",
            "--json",
            "-q",
            "--arg",
            "who=ann",
        ],
    );
    assert_exit(&run, 0);
    let status: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(step(&status, "count")["output"]["words"], 2);
    let id = status["id"].as_str().unwrap();
    let listed = text(&wfhost(&project.join("sub"), &["runs"]).stdout);
    assert!(listed.contains(id), "{listed}");
    let elsewhere = text(&wfhost(dir.path(), &["runs"]).stdout);
    assert!(
        !elsewhere.contains(id),
        "the per-user home has only the first run"
    );

    let again = wfhost(&project, &["init"]);
    assert_exit(&again, 2);
    assert!(text(&again.stderr).contains("is already a wfhost project"));
}

/// What a user writes wrong is one line naming the place: a component file
/// that is garbage, empty, a directory or a core module; `{{ args.x }}`
/// without `args`; a huge or binary file. `needs: a` is `needs: [a]`.
#[test]
fn wrong_files_and_references_are_one_line_validation_errors() {
    let sandbox = Sandbox::new();
    sandbox.write("garbage.wasm", "garbage");
    sandbox.write("empty.wasm", "");
    std::fs::create_dir_all(sandbox.path().join("dir.wasm")).unwrap();
    std::fs::write(sandbox.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    for (file, problem) in [
        ("garbage.wasm", "is not WebAssembly"),
        ("empty.wasm", "is empty"),
        ("dir.wasm", "is a directory"),
        ("core.wasm", "is a core WebAssembly module, not a component"),
    ] {
        let path = sandbox.write(
            "c.yaml",
            &format!("name: c\nsteps:\n  - id: a\n    type: function\n    component: ./{file}\n"),
        );
        let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
        assert_exit(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "c.yaml:5:5: step 'a': component file './{file}' {problem}"
            )) && stderr.lines().count() == 1,
            "{stderr}"
        );
    }

    let path = sandbox.write(
        "noargs.yaml",
        "name: n\nsteps:\n  - id: a\n    run: echo {{ args.who | shq }}\n",
    );
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains(
            "step 'a': template references arg 'who', but the workflow has no `args` block"
        ),
        "{}",
        text(&output.stderr)
    );

    let path = sandbox.write(
        "needs.yaml",
        "name: n\nsteps:\n  - id: a\n    run: 'true'\n  - id: b\n    needs: a\n    run: 'true'\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert!(
        millis(&step(&status, "b")["started_at"]) >= millis(&step(&status, "a")["finished_at"])
    );
    // A workflow without `args` takes no arguments.
    let output = sandbox.wfhost(&["run", path.to_str().unwrap(), "--arg", "x=1"]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("arg 'x' given, but the workflow declares no `args`"),
        "{}",
        text(&output.stderr)
    );

    let huge = sandbox.path().join("huge.yaml");
    std::fs::write(&huge, format!("name: {}\n", "x".repeat(5 << 20))).unwrap();
    let output = sandbox.wfhost(&["validate", huge.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("workflow files are limited to 4 MiB"),
        "{}",
        text(&output.stderr)
    );
    // Not a workflow at all: the error quotes a short excerpt, not the file.
    let blob = sandbox.path().join("blob.yaml");
    std::fs::write(&blob, "y".repeat(3 << 20)).unwrap();
    let output = sandbox.wfhost(&["validate", blob.to_str().unwrap()]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.len() < 1000 && stderr.contains("more characters"),
        "{}",
        &stderr[..stderr.len().min(600)]
    );
}

/// `wfhost completions SHELL` prints a completion script that knows the
/// commands; an unknown shell is a usage error listing the known ones.
#[test]
fn shell_completions_are_printed() {
    let sandbox = Sandbox::new();
    // `--home`/`--config` are offered only by commands that use a home.
    for (command, has_them) in [
        ("run", true),
        ("logs", true),
        ("completions", false),
        ("graph", false),
        ("init", false),
    ] {
        let help = text(&sandbox.wfhost(&[command, "--help"]).stdout);
        assert_eq!(
            (help.contains("--home"), help.contains("--config")),
            (has_them, has_them),
            "{command}: {help}"
        );
    }
    let bash = sandbox.wfhost(&["completions", "bash"]);
    assert_exit(&bash, 0);
    let script = text(&bash.stdout);
    assert!(
        script.contains("_wfhost()") && script.contains("export"),
        "{script}"
    );
    let zsh = sandbox.wfhost(&["completions", "zsh"]);
    assert!(text(&zsh.stdout).starts_with("#compdef wfhost"));
    let fish = sandbox.wfhost(&["completions", "fish"]);
    assert!(text(&fish.stdout).contains("complete -c wfhost"));
    let unknown = sandbox.wfhost(&["completions", "nushell"]);
    assert_exit(&unknown, 2);
    assert!(text(&unknown.stderr).contains("possible values: bash"));
}

/// A command's arguments are built only when it is used (`cli/lazy.rs`):
/// its help still starts with the command's own description, by each way of
/// asking, its arguments are checked and completed, and nested commands
/// (`plugin new`, `token create`) are known to `help` and completions.
#[test]
fn a_command_s_help_and_arguments_are_whole_when_used() {
    let sandbox = Sandbox::new();
    for (asked, first) in [
        (&["run", "--help"][..], "Run a workflow"),
        (&["run", "-h"], "Run a workflow"),
        (&["help", "run"], "Run a workflow"),
        (&["status", "--help"], "Show a run and its steps"),
        (&["plugin", "new", "--help"], "Write a new plugin project"),
        (&["help", "plugin", "new"], "Write a new plugin project"),
        (&["help", "token", "create"], "Make a bearer token"),
    ] {
        let output = sandbox.wfhost(asked);
        assert_exit(&output, 0);
        let help = text(&output.stdout);
        assert!(help.starts_with(first), "{asked:?}: {help}");
        assert!(help.contains("Usage: wfhost "), "{asked:?}: {help}");
    }
    assert!(text(&sandbox.wfhost(&["run", "--help"]).stdout).contains("--args-file"));
    assert!(text(&sandbox.wfhost(&["token", "create", "--help"]).stdout).contains("--name"));
    let missing = sandbox.wfhost(&["run"]);
    assert_exit(&missing, 2);
    assert!(
        text(&missing.stderr).contains("the following required arguments were not provided")
            && text(&missing.stderr).contains("<FILE>"),
        "{}",
        text(&missing.stderr)
    );
    let unknown = sandbox.wfhost(&["plugin", "check", "--bogus"]);
    assert_exit(&unknown, 2);
    assert!(text(&unknown.stderr).contains("unexpected argument '--bogus'"));
    let bash = text(&sandbox.wfhost(&["completions", "bash"]).stdout);
    assert!(
        bash.contains("--args-file") && bash.contains("--rerun"),
        "{bash}"
    );
    assert!(bash.contains("wfhost__subcmd__help__subcmd__plugin__subcmd__new"));
}

/// The id of the only run in the sandbox, once it is recorded.
fn wait_for_run(sandbox: &Sandbox) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = sandbox.wfhost(&["runs", "--json"]);
        if let Ok(Value::Array(runs)) = serde_json::from_slice::<Value>(&output.stdout) {
            if let Some(run) = runs.first() {
                return run["id"].as_str().unwrap().to_string();
            }
        }
        assert!(Instant::now() < deadline, "no run was recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A script's lines reach the step log while it runs (`logs` shows them
/// before the script ends, `logs -f` follows to the end), and the lines of
/// an attempt killed by its timeout are kept.
#[test]
fn script_output_is_live_and_kept_when_the_attempt_is_killed() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("go")).unwrap();
    let path = sandbox.write(
        "live.yaml",
        "name: live\nsteps:\n  - id: talk\n    run: |\n      echo first\n      echo warned >&2\n      \
         while [ ! -e go/flag ]; do sleep 0.1; done\n      printf 'second\\nno line end'\n    \
         grants:\n      exec: [sleep]\n      files: [{ path: ./go, access: read }]\n",
    );
    let running = sandbox.spawn_run(&path);
    let run = wait_for_run(&sandbox);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = text(&sandbox.wfhost(&["logs", &run, "talk"]).stdout);
        if logs.contains("first") && logs.contains("warned") {
            assert!(!logs.contains("second"), "{logs}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first lines never showed while the script ran: {logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let follower = sandbox
        .command(&["logs", "-f", &run, "talk"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(sandbox.path().join("go/flag"), "").unwrap();
    assert_exit(&running.wait_with_output().unwrap(), 0);
    let followed = follower.wait_with_output().unwrap();
    assert_exit(&followed, 0);
    let followed = text(&followed.stdout);
    let seen: Vec<&str> = ["first", "warned", "second", "no line end", "── completed"]
        .into_iter()
        .filter(|word| followed.contains(word))
        .collect();
    assert_eq!(seen.len(), 5, "{followed}");

    // Killed by its timeout: the lines written before the kill stay.
    let path = sandbox.write(
        "killed.yaml",
        "name: killed\nsteps:\n  - id: slow\n    timeout: 2s\n    run: |\n      echo before the kill\n      \
         sleep 30\n    grants:\n      exec: [sleep]\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let run = status.unwrap()["id"].as_str().unwrap().to_string();
    let logs = text(&sandbox.wfhost(&["logs", &run, "slow"]).stdout);
    assert!(logs.contains("before the kill"), "{logs}");
}

/// Scripts start in the workflow's folder (granted or not: relative paths
/// into a granted subfolder work), `working_directory` moves them, and
/// `{{ workflow.dir }}` names the folder.
#[test]
fn scripts_run_in_the_workflow_folder() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("project/out")).unwrap();
    let path = sandbox.write(
        "project/wf.yaml",
        r#"name: where
steps:
  - id: here
    run: |
      echo x >> out/log
      echo "pwd=$(pwd)" >> "$WFHOST_OUTPUT"
      echo "dir={{ workflow.dir }}" >> "$WFHOST_OUTPUT"
    grants:
      exec: ["@coreutils"]
      files: [{ path: ./out, access: read-write }]
  - id: moved
    needs: here
    working_directory: out
    run: cat log && echo "pwd=$(pwd)" >> "$WFHOST_OUTPUT"
    grants:
      exec: ["@coreutils"]
      files: [{ path: ./out, access: read }]
"#,
    );
    let project = sandbox.path().join("project").canonicalize().unwrap();
    // From another directory: the workflow's folder counts, not the caller's.
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let here = &step(&status, "here")["output"];
    assert_eq!(here["pwd"], project.display().to_string(), "{status:#}");
    assert_eq!(here["dir"], project.display().to_string());
    let moved = &step(&status, "moved")["output"];
    assert_eq!(moved["pwd"], project.join("out").display().to_string());
    assert_eq!(moved["stdout"], "x");
    // Human status shows each step's output on a line.
    let human = text(
        &sandbox
            .wfhost(&["status", status["id"].as_str().unwrap()])
            .stdout,
    );
    assert!(human.contains("→ exit_code=0  pwd="), "{human}");

    let gone = sandbox.write(
        "project/gone.yaml",
        "name: gone\nsteps:\n  - id: a\n    working_directory: nowhere\n    run: pwd\n",
    );
    let (output, status) = sandbox.run(&gone, &[]);
    assert_exit(&output, 1);
    let error = step(&status.unwrap(), "a")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!(
            "working directory '{}' does not exist",
            project.join("nowhere").display()
        )),
        "{error}"
    );
    let bad = sandbox.write(
        "project/bad.yaml",
        "name: bad\nsteps:\n  - id: a\n    run: echo {{ workflow.home }}\n",
    );
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr)
            .contains("template references unknown workflow field 'home' (known: name, dir)"),
        "{}",
        text(&output.stderr)
    );
}

/// `--json` on every command that reports something, failures included
/// (with structured diagnostics for a broken workflow).
#[test]
fn every_command_speaks_json() {
    let sandbox = Sandbox::new();
    let json = |output: &std::process::Output| -> Value {
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
    };
    let project = sandbox.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let init = sandbox.wfhost(&["init", project.to_str().unwrap(), "--json"]);
    assert_exit(&init, 0);
    assert_eq!(
        json(&init)["home"],
        project.join(".wfhost").display().to_string()
    );

    let path = sandbox.write(
        "wf.yaml",
        "name: j\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: a\n    run: sleep 60\n    \
         grants: { exec: [sleep] }\n",
    );
    let graph = sandbox.wfhost(&["graph", path.to_str().unwrap(), "--format", "text"]);
    assert_eq!(text(&graph.stdout), "a\n  b  ← a\n");
    let graph = json(&sandbox.wfhost(&["graph", path.to_str().unwrap(), "--json"]));
    assert_eq!(graph["steps"][1]["needs"][0], "a");
    assert_eq!(graph["steps"][1]["depth"], 1);

    let running = sandbox.spawn_run(&path);
    let run = wait_for_run(&sandbox);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.status(&run)["steps"][1]["status"] != "running" {
        assert!(Instant::now() < deadline, "b never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancel = sandbox.wfhost(&["cancel", &run, "--json"]);
    assert_exit(&cancel, 0);
    assert_eq!(
        json(&cancel),
        serde_json::json!({ "run_id": run, "request": "cancel" })
    );
    assert_exit(&running.wait_with_output().unwrap(), 1);

    let logs = sandbox.wfhost(&["logs", &run, "--json"]);
    let events: Vec<Value> = text(&logs.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "log" && e["step"] == "a" && e["data"]["message"] == "hi"),
        "{events:?}"
    );

    // A failure is JSON too: the message and the exit code.
    let pause = sandbox.wfhost(&["pause", &run, "--json"]);
    assert_exit(&pause, 2);
    assert_eq!(json(&pause)["error"]["kind"], "invalid");
    assert!(json(&pause)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing to pause"));

    let dir = sandbox.path().join("exported");
    let export = sandbox.wfhost(&["export", &run, dir.to_str().unwrap(), "--json"]);
    assert_eq!(json(&export)["steps"], 2);
    std::thread::sleep(Duration::from_millis(1100));
    let prune = sandbox.wfhost(&["prune", "--older-than", "1s", "--json"]);
    assert_eq!(json(&prune), serde_json::json!({ "removed": [run] }));

    let broken = sandbox.write(
        "broken.yaml",
        "name: b\nsteps:\n  - id: a\n    run: echo\n    needs: [nope]\n",
    );
    let validate = sandbox.wfhost(&["validate", broken.to_str().unwrap(), "--json"]);
    assert_exit(&validate, 2);
    let diagnostic = &json(&validate)["error"]["diagnostics"][0];
    assert_eq!(
        (
            &diagnostic["file"],
            &diagnostic["line"],
            &diagnostic["step"]
        ),
        (
            &Value::from(broken.display().to_string()),
            &Value::from(5),
            &Value::from("a")
        ),
        "{diagnostic:#}"
    );
    assert!(diagnostic["message"]
        .as_str()
        .unwrap()
        .contains("needs unknown step 'nope'"));
}

/// On a terminal, `run` keeps the running steps listed at the bottom of
/// the screen with their time and last output line (a pseudo-terminal from
/// util-linux `script`); elsewhere it prints plain lines only.
#[test]
fn a_terminal_shows_the_running_steps_live() {
    let script = std::process::Command::new("script")
        .arg("--version")
        .output();
    if script.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "util-linux `script` is needed for this test (apt-get install bsdutils)"
        );
        return;
    }
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "live.yaml",
        "name: live\nsteps:\n  - id: slow\n    run: |\n      echo halfway there\n      sleep 1.5\n    \
         grants: { exec: [sleep] }\n",
    );
    let command = format!("{} run {}", env!("CARGO_BIN_EXE_wfhost"), path.display());
    let mut pty = std::process::Command::new("script");
    pty.args(["-qfec", &command, "/dev/null"]);
    for (name, value) in sandbox.command(&[]).get_envs() {
        match value {
            Some(value) => pty.env(name, value),
            None => pty.env_remove(name),
        };
    }
    let output = pty.env("TERM", "xterm").output().unwrap();
    assert_exit(&output, 0);
    let screen = text(&output.stdout);
    // The live line: spinner, step, time so far, its last output line;
    // redrawn in place (cursor up, clear to the end of the screen).
    assert!(
        screen.contains(" slow 0s  │ halfway there") && screen.contains("F\u{1b}[J"),
        "{screen:?}"
    );
    assert!(screen.contains("run completed"), "{screen:?}");

    // Not a terminal: no cursor movement at all.
    let (plain, _) = sandbox.run(&path, &[]);
    assert!(
        !text(&plain.stderr).contains('\u{1b}'),
        "{}",
        text(&plain.stderr)
    );
}

/// The `sleep` component waits on a host timer and returns its config; a
/// bad `ms` is a one-line error naming the field.
#[test]
fn the_sleep_component_waits_and_checks_its_config() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "nap.yaml",
        "name: nap\nsteps:\n  - id: nap\n    type: function\n    component: sleep\n    with: { ms: 300 }\n  \
         - id: bad\n    type: function\n    component: sleep\n    optional: true\n    with: { ms: -1 }\n",
    );
    let started = Instant::now();
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let status = status.unwrap();
    assert_eq!(
        step(&status, "nap")["output"],
        serde_json::json!({ "ms": 300 })
    );
    assert!(
        step(&status, "bad")["error"]
            .as_str()
            .unwrap()
            .contains("`ms` must be an integer from 0 to 86400000"),
        "{status:#}"
    );
}

#[test]
fn prune_cache_removes_what_this_build_cannot_load_and_keeps_what_it_uses() {
    let sandbox = Sandbox::new();
    let cache = sandbox.path().join("cache");
    let wfhost = |args: &[&str]| {
        sandbox
            .command(args)
            .env("WFHOST_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let workflow = sandbox.write(
        "w.yaml",
        "name: w\nsteps:\n  - id: a\n    type: function\n    component: echo\n",
    );
    let workflow = workflow.to_str().unwrap();
    assert_exit(&wfhost(&["run", "-q", workflow]), 0);
    let compiled = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".cwasm"))
            .collect();
        names.sort();
        names
    };
    let current = compiled(&cache);
    assert!(!current.is_empty(), "the run cached its component");

    // Another build's entry with its record, a temporary file a killed
    // writer left two hours ago, and a file the cache did not write.
    let other = cache.join(format!("{}-{}.cwasm", "a".repeat(64), "0".repeat(16)));
    std::fs::write(&other, vec![0u8; 4096]).unwrap();
    std::fs::write(
        cache.join(format!(
            "{}-{}.cwasm.sha256",
            "a".repeat(64),
            "0".repeat(16)
        )),
        "x\n",
    )
    .unwrap();
    let leftover = cache.join(".0f0f.tmp");
    std::fs::write(&leftover, "half").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let notes = cache.join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();

    let prune = wfhost(&["prune", "--cache", "--json"]);
    assert_exit(&prune, 0);
    assert_eq!(
        serde_json::from_slice::<Value>(&prune.stdout).unwrap(),
        serde_json::json!({ "cache": cache, "components": 1, "files": 3, "bytes": 4096 + 2 + 4 })
    );
    assert_eq!(compiled(&cache), current, "this build's entries stay");
    assert!(!other.exists() && !leftover.exists() && notes.exists());

    // Entries used within the age stay; the run after it still works.
    let prune = wfhost(&["prune", "--cache", "--older-than", "30d"]);
    assert_exit(&prune, 0);
    assert!(
        text(&prune.stdout).starts_with("removed 0 compiled component(s)"),
        "{}",
        text(&prune.stdout)
    );
    assert_eq!(compiled(&cache), current);
    assert_exit(&wfhost(&["run", "-q", workflow]), 0);

    let bad = wfhost(&["prune", "--cache", "--older-than", "soon"]);
    assert_exit(&bad, 2);
    assert!(
        text(&bad.stderr).contains("--older-than: invalid duration 'soon'"),
        "{}",
        text(&bad.stderr)
    );
    let both = wfhost(&["prune", "--cache", "--checkpoints", "--keep", "1"]);
    assert_exit(&both, 2);
    assert!(
        text(&both.stderr).contains("'--cache' cannot be used with '--checkpoints'"),
        "{}",
        text(&both.stderr)
    );
}
