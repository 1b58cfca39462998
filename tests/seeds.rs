//! The seed systems' files, as their users bring them: each spelling loads
//! with the seed's meaning, `validate` shows how it was read, and the
//! seeds' example workflows (with neutral commands and scripted models)
//! run unchanged. Real binary, real wasmtime, real SQLite.

mod common;

use common::*;
use serde_json::Value;

/// `wfhost validate FILE --json`, expected to succeed.
fn validate_json(sandbox: &Sandbox, path: &std::path::Path) -> Value {
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap(), "--json"]);
    assert_exit(&output, 0);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The `read_as` entries of a validate document as `place: written → read`.
fn readings(doc: &Value) -> Vec<String> {
    doc["read_as"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}: {} → {}",
                r["place"].as_str().unwrap(),
                r["written"].as_str().unwrap(),
                r["read_as"].as_str().unwrap()
            )
        })
        .collect()
}

fn has_reading(all: &[String], needle: &str) {
    assert!(
        all.iter().any(|r| r.contains(needle)),
        "no reading with {needle:?} in {all:#?}"
    );
}

/// The agents file AutomatosX users keep their agents in, with scripted
/// models answering per step.
fn home_agents(sandbox: &Sandbox) {
    sandbox.write(
        "home/replies.yaml",
        r#"steps:
  parse-changes:
    - content: '{"functions": ["executeWorkflow", "resumeWorkflow"]}'
  security-scan:
    - content: "no vulnerabilities"
  quality-check:
    - content: "quality ok"
  generate-report:
    - content: "report written"
  parse-diff:
    - content: "changed: a.rs"
  security-audit:
    - content: "audit clean"
  aggregate-results:
    - content: "all good"
"#,
    );
    let mut agents = String::from("# agents shared by every workflow of this home\n");
    for name in [
        "backend",
        "security",
        "quality",
        "writer",
        "product",
        "planner",
        "developer",
    ] {
        agents.push_str(&format!(
            "- id: {name}\n  model: {{provider: scripted, script: replies.yaml}}\n"
        ));
    }
    sandbox.write("home/agents.yaml", &agents);
}

/// AutomatosX's `my-workflow.yaml`, exactly as its documentation shows it.
const AUTOMATOSX_EXAMPLE: &str = r#"name: "code-review-workflow"
description: "Multi-agent code review workflow"
version: "1.0.0"
author: "AutomatosX Team"
tags: ["code-review", "quality", "security"]

config:
  timeout: 300000  # 5 minutes
  maxRetries: 2
  checkpointInterval: 30000  # 30 seconds
  parallelism: 3
  continueOnError: false

steps:
  - key: "parse-changes"
    agent: "backend"
    prompt: "Parse the code changes in {{filePath}} and extract modified functions"
    dependencies: []
    parallel: false
    optional: false

  - key: "security-scan"
    agent: "security"
    prompt: "Scan {{parse-changes.functions}} for security vulnerabilities"
    dependencies: ["parse-changes"]
    parallel: true
    optional: false
    retryPolicy:
      maxRetries: 3
      retryDelayMs: 1000
      retryBackoffMultiplier: 2.0

  - key: "quality-check"
    agent: "quality"
    prompt: "Check code quality of {{parse-changes.functions}}"
    dependencies: ["parse-changes"]
    parallel: true
    optional: false

  - key: "generate-report"
    agent: "writer"
    prompt: "Generate code review report from security findings {{security-scan.result}} and quality issues {{quality-check.result}}"
    dependencies: ["security-scan", "quality-check"]
    parallel: false
    optional: false
"#;

#[test]
fn automatosx_example_loads_and_runs_unchanged() {
    let sandbox = Sandbox::new();
    home_agents(&sandbox);
    let path = sandbox.write("my-workflow.yaml", AUTOMATOSX_EXAMPLE);
    let doc = validate_json(&sandbox, &path);
    let all = readings(&doc);
    has_reading(&all, "config.timeout: 300000 → 5m");
    has_reading(
        &all,
        "steps[1] (security-scan).dependencies: dependencies → needs",
    );
    has_reading(
        &all,
        "steps[1] (security-scan).retryPolicy: retryPolicy → retry",
    );
    has_reading(
        &all,
        "config.maxRetries: 2 → defaults.retry.max_attempts: 3",
    );
    has_reading(&all, "config.checkpointInterval: 30000ms → not needed");
    has_reading(&all, "parallel: false → exclusive: true");
    has_reading(&all, ".retry.maxRetries: 3 → retry.max_attempts: 4");
    has_reading(&all, "agent: backend → agent 'backend' from ");
    has_reading(&all, "{{filePath}} → {{ args[\"filePath\"] }}");
    has_reading(
        &all,
        "{{parse-changes.functions}} → {{ steps[\"parse-changes\"].output | seed_path(\"functions\") }}",
    );
    has_reading(
        &all,
        "args: (none; placeholders name arguments) → args: required filePath",
    );
    let human = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert_exit(&human, 0);
    assert!(
        text(&human.stdout).contains("read as (seed spellings → the wfhost form):"),
        "{}",
        text(&human.stdout)
    );

    // Without the argument the run does not start, and says which.
    let (output, _) = sandbox.run(&path, &[]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("filePath"),
        "{}",
        text(&output.stderr)
    );

    let (output, status) = sandbox.run(
        &path,
        &[
            "--context",
            r#"{"filePath": "src/services/WorkflowEngine.ts"}"#,
        ],
    );
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(status["workflow"], "code-review-workflow");
    for id in [
        "parse-changes",
        "security-scan",
        "quality-check",
        "generate-report",
    ] {
        assert_eq!(step(&status, id)["status"], "completed", "{id}");
    }
    let run = status["id"].as_str().unwrap();
    let dir = sandbox.export(run);
    let prompt = |id: &str| -> String {
        let input: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("steps/{id}/input.json"))).unwrap(),
        )
        .unwrap();
        input["config"]["prompt"].as_str().unwrap().to_string()
    };
    assert_eq!(
        prompt("parse-changes"),
        "Parse the code changes in src/services/WorkflowEngine.ts and extract modified functions"
    );
    // The agent answered JSON in text: its fields are what the seed reads.
    assert!(
        prompt("security-scan").contains("executeWorkflow"),
        "{}",
        prompt("security-scan")
    );
    assert_eq!(
        prompt("generate-report"),
        "Generate code review report from security findings no vulnerabilities and quality issues quality ok"
    );
}

#[test]
fn automatosx_progress_report_example_with_a_missing_agent_names_both_places() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "review.yaml",
        r#"name: code-review-workflow
description: Multi-agent code review with security and quality checks
version: 1.0.0
steps:
  - key: parse-diff
    agent: backend
    prompt: "Parse git diff and extract changed files: {{git_diff}}"
    dependencies: []
    parallel: false
  - key: security-audit
    agent: security
    prompt: "Audit these changes for vulnerabilities: {{parse-diff.result}}"
    dependencies: ["parse-diff"]
    parallel: true
  - key: aggregate-results
    agent: product
    prompt: "Aggregate: security={{security-audit.result}}"
    dependencies: ["security-audit"]
    parallel: false
"#,
    );
    // No agents file yet: the error names the workflow and the home file.
    let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
    assert_exit(&output, 2);
    let error = text(&output.stderr);
    assert!(
        error.contains("unknown agent 'backend': it is neither in the workflow's `agents:` (none) nor in the home's agents.yaml (there is none)"),
        "{error}"
    );
    assert!(error.contains("review.yaml:6:"), "{error}");

    home_agents(&sandbox);
    let (output, status) = sandbox.run(&path, &["--arg", "git_diff=+a.rs"]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let run = status["id"].as_str().unwrap();
    let dir = sandbox.export(run);
    let input: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("steps/aggregate-results/input.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(input["config"]["prompt"], "Aggregate: security=audit clean");
}

/// agentcmd's `simple-pipeline.yaml` with neutral commands.
const AGENTCMD_EXAMPLE: &str = r#"name: Simple Build Pipeline
description: Build, test, and deploy

argsSchema:
  type: object
  properties:
    environment:
      type: string
      enum: [dev, staging, production]
  required: [environment]

phases:
  - build
  - test
  - deploy

steps:
  - id: install-deps
    name: Install Dependencies
    phase: build
    type: script
    command: echo installing

  - id: build-app
    name: Build Application
    phase: build
    type: script
    command: echo building

  - id: run-tests
    name: Run Tests
    phase: test
    type: script
    command: echo testing

  - id: deploy
    name: Deploy
    phase: deploy
    type: script
    command: echo deploying to {{ args.environment }}
"#;

#[test]
fn agentcmd_pipeline_runs_phase_by_phase_in_file_order() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("simple-pipeline.yaml", AGENTCMD_EXAMPLE);
    let doc = validate_json(&sandbox, &path);
    let all = readings(&doc);
    has_reading(
        &all,
        "one after another, phase by phase: install-deps → build-app → run-tests → deploy",
    );
    has_reading(&all, "phases: build, test, deploy → phases with these ids");
    has_reading(&all, "argsSchema: argsSchema → args");
    has_reading(&all, "steps[0] (install-deps).command: command → run");

    let (output, _) = sandbox.run(&path, &["--arg", "environment=moon"]);
    assert_exit(&output, 2);
    let (output, status) = sandbox.run(&path, &["--arg", "environment=staging"]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let order = ["install-deps", "build-app", "run-tests", "deploy"];
    for pair in order.windows(2) {
        let before = millis(&step(&status, pair[0])["finished_at"]);
        let after = millis(&step(&status, pair[1])["started_at"]);
        assert!(
            before <= after,
            "{} ran before {} finished",
            pair[1],
            pair[0]
        );
    }
    assert_eq!(
        step(&status, "deploy")["output"]["stdout"],
        "deploying to staging"
    );
}

#[test]
fn run_service_agents_with_provider_model_strings_load_and_name_the_provider_when_run() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "feature.yaml",
        r#"name: feature
agents:
  - id: reviewer
    name: Reviewer
    role: analysis
    model: github-copilot/claude-opus-4.6
    tools: [read, write]
    description: Code reviewer
  - id: planner
    model: openai/gpt-4o
steps:
  - id: plan
    agent: reviewer
    session: fresh
    input: |
      Plan the feature...
  - id: implement
    agent: reviewer
    needs: [plan]
    fresh_session: false
    input: |
      Implement based on the plan: {{ steps.plan.output }}
"#,
    );
    let doc = validate_json(&sandbox, &path);
    let all = readings(&doc);
    has_reading(&all, "fresh_session: false → session: reuse");
    has_reading(&all, "agent: reviewer → type: agent");
    let plan = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "plan")
        .unwrap();
    assert_eq!(plan["model"]["provider"], "unknown provider");
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let error = step(&status.unwrap(), "plan")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("wfhost has no endpoint for provider 'github-copilot' (known: openai,"),
        "{error}"
    );
}

#[test]
fn codecafe_stage_loop_falls_back_and_on_failure_words_apply() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "cafe.yaml",
        r#"id: feature-cafe
description: plan, code, test, check
steps:
  - id: plan
    run: echo plan
  - id: code
    needs: [plan]
    run: echo "attempt={{ steps.plan.status }}" >> "$WFHOST_OUTPUT"
  - id: check
    needs: [code]
    run: echo "ok=no" >> "$WFHOST_OUTPUT"
    loop:
      steps: [code]
      stop_when: steps.check.output.ok == "yes"
      max_iters: 2
      fallback_next_stage: review
  - id: ship
    needs: [check]
    run: echo shipping
  - id: review
    needs: [check]
    run: echo "manual review"
  - id: lint
    needs: [plan]
    run: exit 3
    on_failure: continue
  - id: after-lint
    needs: [lint]
    run: echo after lint
"#,
    );
    let doc = validate_json(&sandbox, &path);
    let all = readings(&doc);
    has_reading(&all, "id: feature-cafe → name: feature-cafe");
    has_reading(&all, "on_failure: continue → continue_on_error: true");
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    assert_eq!(status["workflow"], "feature-cafe");
    assert_eq!(status["status"], "completed_with_errors");
    assert_eq!(step(&status, "check")["status"], "completed");
    assert_eq!(step(&status, "review")["status"], "completed");
    assert_eq!(step(&status, "ship")["status"], "skipped");
    assert_eq!(step(&status, "lint")["status"], "failed");
    assert_eq!(step(&status, "after-lint")["status"], "completed");
    let run = status["id"].as_str().unwrap();
    let events =
        std::fs::read_to_string(sandbox.home().join("runs").join(run).join("events.jsonl"))
            .unwrap();
    assert!(events.contains("\"loop_fallback\""), "{events}");

    // A fallback that does not need the loop step is refused at validation.
    let bad = sandbox.write(
        "bad.yaml",
        "name: b\nsteps:\n  - {id: a, run: 'true'}\n  - id: c\n    needs: [a]\n    run: 'true'\n    loop: {until: 'false', fallback_next_stage: a}\n",
    );
    let output = sandbox.wfhost(&["validate", bad.to_str().unwrap()]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("loop.fallback 'a' must be a step that needs 'c'"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn max_retries_retries_a_failing_script_and_retryable_errors_narrow_it() {
    let sandbox = Sandbox::new();
    let state = sandbox.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let flaky = format!(
        "n=$(cat {dir}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {dir}/count; [ $n -ge 3 ]",
        dir = state.display()
    );
    let path = sandbox.write(
        "retries.yaml",
        &format!(
            "name: r\nsteps:\n  - id: flaky\n    run: '{flaky}'\n    grants: {{files: [{{path: state, access: read-write}}], exec: [cat]}}\n    maxRetries: 2\n    retryDelayMs: 10\n  - id: narrowed\n    run: 'echo boom >&2; exit 1'\n    retryPolicy: {{maxAttempts: 3, initialDelayMs: 10, retryableErrors: [ETIMEDOUT]}}\n  - id: matching\n    run: 'echo connect ETIMEDOUT >&2; exit 1'\n    retryPolicy: {{maxRetries: 1, initialDelayMs: 10, retryableErrors: [etimedout]}}\n"
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    let flaky = step(&status, "flaky");
    assert_eq!(flaky["status"], "completed", "{flaky:#}");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(step(&status, "narrowed")["attempts"], 1);
    assert_eq!(step(&status, "matching")["attempts"], 2);
}

#[test]
fn retry_context_and_progress_reach_templates() {
    let sandbox = Sandbox::new();
    let state = sandbox.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let path = sandbox.write(
        "loop.yaml",
        &format!(
            r#"name: l
steps:
  - id: plan
    run: |
      echo "note=attempt {{{{ retry.attempt }}}} from '{{{{ retry.from }}}}'" >> "$WFHOST_OUTPUT"
      case {{{{ retry.error | shq }}}} in *"compile error"*) echo "saw=error" >> "$WFHOST_OUTPUT";; esac
      echo planned
  - id: build
    needs: [plan]
    grants: {{files: [{{path: state, access: read-write}}]}}
    run: |
      if [ -e {dir}/built ]; then echo built; else : > {dir}/built; echo "compile error" >&2; exit 1; fi
    on_failure: {{retry_step: plan, max_loops: 1}}
  - id: summary
    needs: [build]
    run: printf '%s\n' {{{{ progress | shq }}}}
"#,
            dir = state.display()
        ),
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let plan = step(&status, "plan");
    assert_eq!(plan["output"]["note"], "attempt 1 from 'build'", "{plan:#}");
    assert_eq!(plan["output"]["saw"], "error", "{plan:#}");
    let summary = step(&status, "summary")["output"]["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("## Step: plan ("), "{summary}");
    assert!(summary.contains("## Step: build ("), "{summary}");
    assert!(summary.contains("built"), "{summary}");
    let run = status["id"].as_str().unwrap();
    let progress =
        std::fs::read_to_string(sandbox.home().join("runs").join(run).join("progress.md")).unwrap();
    assert!(progress.contains("# Progress"), "{progress}");
    assert!(progress.contains("## Step: summary ("), "{progress}");
}

#[test]
fn finally_after_run_timeout_sees_the_steps() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "timeout.yaml",
        r#"name: t
config: {run_timeout: 1500ms}
steps:
  - id: quick
    run: echo "value=42" >> "$WFHOST_OUTPUT"
  - id: slow
    needs: [quick]
    run: sleep 30
    grants: {exec: [sleep]}
  - id: cleanup
    finally: true
    needs: [quick, slow]
    run: echo "quick={{ steps.quick.output.value }} slow={{ steps.slow.status }}"
"#,
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 1);
    let status = status.unwrap();
    assert_eq!(status["status"], "cancelled");
    let cleanup = step(&status, "cleanup");
    assert_eq!(cleanup["status"], "completed", "{cleanup:#}");
    assert_eq!(cleanup["output"]["stdout"], "quick=42 slow=cancelled");
}

#[test]
fn seed_spelling_errors_are_one_line_with_a_position() {
    let sandbox = Sandbox::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown.yaml",
            "name: x\nauthor: me\nsteps:\n  - {key: a, command: 'true', colour: red}\n",
            "unknown.yaml:4:",
        ),
        (
            "word.yaml",
            "name: x\nsteps:\n  - {id: a, run: 'true', on_failure: maybe}\n",
            "unknown on_failure 'maybe'",
        ),
        (
            "model.yaml",
            "name: x\nagents:\n  - {id: a, model: gpt4}\nsteps: []\n",
            "model 'gpt4': expected `provider/model`",
        ),
        (
            "ambiguous.yaml",
            "name: x\nargsSchema: {type: object, properties: {plan: {type: string}}}\nsteps:\n  - {id: plan, run: 'true'}\n  - {id: b, needs: [plan], run: 'echo {{plan}}'}\n",
            "placeholder 'plan' is ambiguous: 'plan' is both an argument (args.plan) and a step id",
        ),
        (
            "noname.yaml",
            "steps:\n  - {id: a, run: 'true'}\n",
            "missing field `name` (or `id`)",
        ),
        (
            "parallel.yaml",
            "name: x\nsteps:\n  - {id: a, run: 'true', parallel: 0}\n",
            "parallel must be at least 1",
        ),
    ];
    for (name, source, expected) in cases {
        let path = sandbox.write(name, source);
        let output = sandbox.wfhost(&["validate", path.to_str().unwrap()]);
        assert_exit(&output, 2);
        let error = text(&output.stderr);
        assert!(error.contains(expected), "{name}: {error}");
        assert!(!error.contains("panicked"), "{error}");
    }
    let path = sandbox.write("ok.yaml", "name: x\nsteps:\n  - {id: a, run: 'true'}\n");
    for (context, expected) in [
        (
            "[1]",
            "--context must be a JSON object of arguments, not a list",
        ),
        ("{oops", "--context is not valid JSON"),
    ] {
        let output = sandbox.wfhost(&["run", path.to_str().unwrap(), "--context", context]);
        assert_exit(&output, 2);
        assert!(
            text(&output.stderr).contains(expected),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn exclusive_steps_run_alone() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "alone.yaml",
        r#"name: alone
config: {parallelism: 4}
steps:
  - {id: a, run: sleep 0.3, grants: {exec: [sleep]}}
  - {id: b, run: sleep 0.3, grants: {exec: [sleep]}, parallel: false}
  - {id: c, run: sleep 0.3, grants: {exec: [sleep]}}
"#,
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let span = |id: &str| {
        let s = step(&status, id);
        (millis(&s["started_at"]), millis(&s["finished_at"]))
    };
    let (b_start, b_end) = span("b");
    for other in ["a", "c"] {
        let (start, end) = span(other);
        assert!(
            end <= b_start || start >= b_end,
            "{other} ({start}..{end}) overlapped b ({b_start}..{b_end})"
        );
    }
}

#[test]
fn status_counts_phase_and_background_runs_with_who_and_priority() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("simple-pipeline.yaml", AGENTCMD_EXAMPLE);
    let (output, status) = sandbox.run(&path, &["--arg", "environment=dev"]);
    assert_exit(&output, 0);
    let run = status.unwrap()["id"].as_str().unwrap().to_string();
    let status = sandbox.status(&run);
    assert_eq!(status["counts"]["completed"], 4);
    assert_eq!(status["counts"]["total"], 4);
    assert_eq!(status["counts"]["failed"], 0);
    assert_eq!(status["current_phase"], "deploy");
    assert_eq!(status["running"], serde_json::json!([]));
    let human = text(&sandbox.wfhost(&["status", &run]).stdout);
    assert!(
        human.contains("steps     4/4 completed · 0 failed · 0 skipped"),
        "{human}"
    );
    assert!(human.contains("phase     deploy"), "{human}");

    // In the background: the id comes back at once, the run goes on.
    let slow = sandbox.write(
        "slow.yaml",
        "name: slow\nphases: [wait, done]\nsteps:\n  - {id: nap, phase: wait, run: sleep 1, grants: {exec: [sleep]}}\n  - {id: end, phase: done, run: echo end}\n",
    );
    let output = sandbox.wfhost(&[
        "run",
        slow.to_str().unwrap(),
        "--detach",
        "--triggered-by",
        "ci-pipeline",
        "--priority",
        "10",
    ]);
    assert_exit(&output, 0);
    let id = text(&output.stdout).trim().to_string();
    assert!(!id.is_empty() && !id.contains(' '), "{id}");
    assert!(
        text(&output.stderr).contains("driver.log"),
        "{}",
        text(&output.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen_running = false;
    let finished = loop {
        let status = sandbox.status(&id);
        if status["current_phase"] == "wait" && status["running"] == serde_json::json!(["nap"]) {
            seen_running = true;
        }
        if status["status"] == "completed" {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status:#}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(seen_running, "status showed the running step and its phase");
    assert_eq!(finished["triggered_by"], "ci-pipeline");
    assert_eq!(finished["priority"], 10);
    let log =
        std::fs::read_to_string(sandbox.home().join("runs").join(&id).join("driver.log")).unwrap();
    assert!(log.contains(&id), "{log}");
    let human = text(&sandbox.wfhost(&["status", &id]).stdout);
    assert!(human.contains("by        ci-pipeline"), "{human}");
    assert!(human.contains("priority  10"), "{human}");

    // The registry: both workflows with their executions and success rate.
    let output = sandbox.wfhost(&["workflows", "--json"]);
    assert_exit(&output, 0);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let row = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list:#}"))
            .clone()
    };
    assert_eq!(row("slow")["executions"], 1);
    assert_eq!(row("slow")["success_rate"], 1.0);
    assert!(row("slow")["average_duration_ms"].as_u64().unwrap() >= 1000);
    assert_eq!(row("Simple Build Pipeline")["executions"], 1);
    let output = sandbox.wfhost(&[
        "workflows",
        "--dir",
        sandbox.path().to_str().unwrap(),
        "--json",
    ]);
    assert_exit(&output, 0);
    let files: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(files.as_array().unwrap().len(), 2, "{files:#}");
    let table = text(&sandbox.wfhost(&["workflows"]).stdout);
    assert!(
        table.contains("EXECUTIONS") && table.contains("100%"),
        "{table}"
    );
    let output = sandbox.wfhost(&["workflows", "--dir", "/no/such/dir"]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("cannot read directory /no/such/dir"));
}

#[test]
fn labelled_checkpoints_list_limit_restore_and_prune() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("simple-pipeline.yaml", AGENTCMD_EXAMPLE);
    let (output, status) = sandbox.run(&path, &["--arg", "environment=dev"]);
    assert_exit(&output, 0);
    let run = status.unwrap()["id"].as_str().unwrap().to_string();
    let output = sandbox.wfhost(&[
        "checkpoint",
        &run,
        "--label",
        "after the first run",
        "--json",
    ]);
    assert_exit(&output, 0);
    let made: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(made["size_bytes"].as_u64().unwrap() > 0);
    let output = sandbox.wfhost(&["checkpoints", &run, "--json", "--limit", "2"]);
    assert_exit(&output, 0);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["created_by"], "engine");
    assert_eq!(list[0]["label"], "after 'deploy' completed");
    assert_eq!(list[1]["created_by"], "user");
    assert_eq!(list[1]["label"], "after the first run");
    assert_eq!(list[1]["checkpoint"], made["checkpoint"]);
    let table = text(&sandbox.wfhost(&["checkpoints", &run]).stdout);
    assert!(
        table.contains("after the first run") && table.contains("engine"),
        "{table}"
    );

    let output = sandbox.wfhost(&["checkpoint", &run, "--label", ""]);
    assert_exit(&output, 2);
    assert!(text(&output.stderr).contains("--label: give 1 to 200 characters"));

    let output = sandbox.wfhost(&[
        "prune",
        "--checkpoints",
        "--keep",
        "1",
        "--run",
        &run,
        "--json",
    ]);
    assert_exit(&output, 0);
    let output = sandbox.wfhost(&["checkpoints", &run, "--json"]);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["created_by"], "user");
    let output = sandbox.wfhost(&["prune"]);
    assert_exit(&output, 2);
}

/// One small seed-shaped file per spelling: it loads, and validate says how
/// it was read.
#[test]
fn each_seed_spelling_loads_and_validate_says_how_it_was_read() {
    let sandbox = Sandbox::new();
    let step = |extra: &str| format!("name: s\nsteps:\n  - id: a\n    run: 'true'\n{extra}");
    let cases: Vec<(String, &str)> = vec![
        (
            "name: s\nargsSchema: {type: object, properties: {x: {type: string}}}\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "argsSchema: argsSchema → args",
        ),
        (
            "name: s\nauthor: Team\ntags: [a, b]\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "",
        ),
        ("id: only-id\nsteps:\n  - {id: a, run: 'true'}\n".into(), "id: only-id → name: only-id"),
        ("name: s\nparallel: 2\nsteps:\n  - {id: a, run: 'true'}\n".into(), "parallel: 2 → config.parallelism: 2"),
        (
            "name: s\nconfig: {parallel: false}\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "config.parallel: false → config.parallelism: 1",
        ),
        (step("    parallel: false\n"), "parallel: false → exclusive: true"),
        (
            "name: s\nsteps:\n  - id: a\n    for_each: '[1, 2]'\n    run: 'true'\n    parallel: 2\n".into(),
            "parallel: 2 → parallelism: 2",
        ),
        (
            step("    retryPolicy: {maxAttempts: 3, initialDelayMs: 100, backoffMultiplier: 2, maxDelayMs: 5000, retryableErrors: [ETIMEDOUT]}\n"),
            "retryPolicy.retryableErrors: retryableErrors → errors",
        ),
        (
            step("    retryPolicy: {maxRetries: 2, retryDelayMs: 100}\n"),
            "retry.maxRetries: 2 → retry.max_attempts: 3",
        ),
        (step("    timeoutMs: 5000\n"), "timeout: 5000 → 5s"),
        ("name: s\nconfig: {timeout: 300000}\nsteps:\n  - {id: a, run: 'true'}\n".into(), "config.timeout: 300000 → 5m"),
        (
            "name: s\nconfig: {maxRetries: 2}\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "config.maxRetries: 2 → defaults.retry.max_attempts: 3",
        ),
        (
            "name: s\nconfig: {continueOnError: true}\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "config.continueOnError: true → continue_on_error: true on every step",
        ),
        (
            "name: s\nconfig: {checkpointInterval: 30000}\nsteps:\n  - {id: a, run: 'true'}\n".into(),
            "config.checkpointInterval: 30000ms → not needed",
        ),
        (
            "name: s\nphases: [p1, p2]\nsteps:\n  - {id: a, phase: p2, run: 'true'}\n  - {id: b, phase: p1, run: 'true'}\n".into(),
            "one after another, phase by phase: b → a",
        ),
        (
            "name: s\nsteps:\n  - {id: a, type: script, command: 'true'}\n".into(),
            "command: command → run",
        ),
        (step("    on_failure: stop\n"), "on_failure: stop → on_failure: {escalate: fail}"),
        (step("    on_failure: continue\n"), "on_failure: continue → continue_on_error: true"),
        (step("    on_failure: retry\n"), "on_failure: retry → retry: {max_attempts: 3}"),
        (
            step("    retries: 4\n    retry_backoff: 1.5\n"),
            "retry: {max_attempts: 5, backoff_coefficient: 1.5}",
        ),
        (
            step("    on_failure: {retry: 1, retry_delay_ms: 50, escalation: skip}\n"),
            "on_failure.escalation: escalation → escalate",
        ),
        (
            "name: s\nsteps:\n  - {id: a, run: 'true'}\n  - id: b\n    needs: [a]\n    run: 'true'\n    loop: {steps: [a], stop_when: 'true', max_iters: 2, fallback_next_stage: c}\n  - {id: c, needs: [b], run: 'true'}\n".into(),
            "loop.fallback_next_stage: fallback_next_stage → fallback",
        ),
        (
            "name: s\nagents:\n  - {key: r, model: openai/gpt-4o}\nsteps:\n  - {key: a, agent: r, input: hi, fresh_session: false}\n".into(),
            "fresh_session: false → session: reuse",
        ),
        (
            "name: s\nsteps:\n  - {key: a, run: 'true'}\n  - {key: b, dependencies: [a], run: 'echo {{a.stdout}}'}\n".into(),
            "{{a.stdout}} → {{ steps[\"a\"].output | seed_path(\"stdout\") }}",
        ),
        (
            "name: s\nsteps:\n  - {id: a, run: 'echo {{who}}'}\n".into(),
            "args: required who",
        ),
    ];
    for (i, (source, expected)) in cases.iter().enumerate() {
        let path = sandbox.write(&format!("spelling-{i}.yaml"), source);
        let doc = validate_json(&sandbox, &path);
        if !expected.is_empty() {
            has_reading(&readings(&doc), expected);
        }
    }
}
