//! End-to-end tests of agent steps: the scripted and the OpenAI-compatible
//! providers, tools confined by the agent's list, the step's grants and its
//! policies, approvals from another process, and replay after a crash.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Wait until the sandbox's run has a pending approval; returns (run, approval).
fn wait_for_approval(sandbox: &Sandbox) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = sandbox.wfhost(&["approvals", "--json"]);
        if let Ok(Value::Array(pending)) = serde_json::from_slice::<Value>(&output.stdout) {
            if let Some(first) = pending.first() {
                return (first["run_id"].as_str().unwrap().to_string(), first.clone());
            }
        }
        assert!(Instant::now() < deadline, "no approval was requested");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(sandbox: &Sandbox, run: &str, step: &str) -> Vec<Value> {
    std::fs::read_to_string(
        sandbox
            .export(run)
            .join("steps")
            .join(step)
            .join("events.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn decisions(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["kind"] == "tool_decision")
        .map(|e| {
            (
                e["data"]["tool"].as_str().unwrap_or_default().to_string(),
                e["data"]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// A copy of the agent-review example in the sandbox (so reports stay there).
fn example(sandbox: &Sandbox) -> std::path::PathBuf {
    for name in [
        "agent-review.yaml",
        "agent-review.replies.yaml",
        "hello.yaml",
        "code-review.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("workflows").join(name)).unwrap();
        sandbox.write(name, &text);
    }
    std::fs::create_dir_all(sandbox.path().join("reports")).unwrap();
    sandbox.path().join("agent-review.yaml")
}

#[test]
fn the_agent_review_example_runs_offline_and_waits_for_approval() {
    let sandbox = Sandbox::new();
    let path = example(&sandbox);
    // Not quiet: the run's terminal announces the wait.
    let mut child = sandbox
        .command(&["run", path.to_str().unwrap(), "--json", "--no-logs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, terminal) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let (run, approval) = wait_for_approval(&sandbox);
    assert_eq!(approval["tool"], "exec");
    let id = approval["id"].to_string();
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|l: &String| l.contains("answer: wfhost approve"))
    {
        match terminal.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => said.push(line),
            Err(_) => panic!("the run's terminal did not announce the approval: {said:#?}"),
        }
    }
    let said = said.join("\n");
    assert!(
        said.contains("⏸ review: waiting for your approval of exec")
            && said.contains(&format!(
                "answer: wfhost approve {run} {id}   or   wfhost deny {run} {id} --reason TEXT"
            )),
        "{said}"
    );
    assert!(
        approval["prompt"].as_str().unwrap().contains("exec(wc *)"),
        "{approval:#}"
    );
    let waiting = sandbox.status(&run);
    assert_eq!(
        waiting["status"], "blocked",
        "the run shows blocked while it waits"
    );
    assert_eq!(
        waiting["pending_approvals"][0]["tool"], "exec",
        "{waiting:#}"
    );
    let human = text(&sandbox.wfhost(&["status", &run]).stdout);
    assert!(
        human.contains("waiting   approval #") && human.contains("wfhost approve"),
        "{human}"
    );

    let approved = sandbox.wfhost(&["approve", &run, &id, "--note", "go ahead", "--json"]);
    assert_exit(&approved, 0);
    let answered: Value = serde_json::from_slice(&approved.stdout).unwrap();
    assert_eq!(
        (&answered["status"], &answered["note"]),
        (&json!("approved"), &json!("go ahead"))
    );
    let again = sandbox.wfhost(&["approve", &run, &id]);
    assert_exit(&again, 2);

    let output = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_exit(&output, 0);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["status"], "completed");
    let report = std::fs::read_to_string(sandbox.path().join("reports/review.md")).unwrap();
    assert!(report.starts_with("# Review of the example workflows"));
    assert!(
        !sandbox.path().join("reports/hello.yaml").exists(),
        "the denied write had no effect"
    );
    assert!(step(&status, "show")["output"]["stdout"]
        .as_str()
        .unwrap()
        .contains("Review of the example"));

    let events = events(&sandbox, &run, "review");
    let decisions = decisions(&events);
    assert!(
        decisions.contains(&("write_file".into(), "deny".into())),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("exec".into(), "ask".into()))
            || decisions.iter().any(|(t, d)| t == "exec" && d == "allow")
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "model_call" && e["data"]["usage"].is_object()),
        "usage is audited"
    );
    // The denial's reason went back to the model as the tool result.
    let messages = step(&status, "review")["output"]["messages"]
        .as_array()
        .unwrap()
        .clone();
    let denial = messages
        .iter()
        .find(|m| {
            m["role"] == "tool"
                && m["content"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("denied")
        })
        .expect("a denied tool result");
    assert!(
        denial["content"]
            .as_str()
            .unwrap()
            .contains("write(**/*.yaml)"),
        "{denial:#}"
    );
    let summary =
        std::fs::read_to_string(sandbox.export(&run).join("steps/review/summary.md")).unwrap();
    assert!(
        summary.contains("## Agent audit") && summary.contains("| write_file | deny | rules |"),
        "{summary}"
    );
    let transcript = sandbox.wfhost(&["logs", &run, "review", "--transcript"]);
    assert_exit(&transcript, 0);
    assert!(
        text(&transcript.stdout).contains("Review written to reports/review.md"),
        "{}",
        text(&transcript.stdout)
    );
}

fn agent_workflow(
    sandbox: &Sandbox,
    tools: &str,
    rules: &str,
    grants: &str,
    replies: &Value,
) -> std::path::PathBuf {
    sandbox.write("replies.json", &replies.to_string());
    sandbox.write(
        "agent.yaml",
        &format!(
            "name: a\nagents:\n  - id: bot\n    model: {{provider: scripted, script: replies.json}}\n    tools: {tools}\n    policy: [{{rules: {rules}}}]\nsteps:\n  - id: work\n    type: agent\n    agent: bot\n    prompt: do it\n    grants: {grants}\n"
        ),
    )
}

/// What the tools answered in step `id`'s conversation, in order.
fn tool_results(status: &Value, id: &str) -> Vec<String> {
    step(status, id)["output"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

fn call(name: &str, arguments: Value) -> Value {
    json!({ "tool_calls": [{ "name": name, "arguments": arguments }] })
}

#[test]
fn the_tool_list_the_grants_and_the_rules_each_decide() {
    let sandbox = Sandbox::new();
    sandbox.write("docs/a.md", "alpha");
    sandbox.write("secret/key.txt", "hunter2");
    let replies = json!([
        call("write_file", json!({"path": "docs/b.md", "content": "x"})),
        call("read_file", json!({"path": "secret/key.txt"})),
        call("read_file", json!({"path": "docs/a.md"})),
        call("exec", json!({"command": "cargo test -p x"})),
        call("exec", json!({"command": "cargo test && rm -rf x"})),
        { "content": "done" }
    ]);
    let path = agent_workflow(
        &sandbox,
        "[read, exec]",
        "{allow: ['read(**)', 'exec(cargo test *)'], deny: ['exec(rm *)']}",
        "{files: [{path: docs}], exec: [sh]}",
        &replies,
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let run = status["id"].as_str().unwrap();
    let results = tool_results(&status, "work");
    assert_eq!(results.len(), 5, "{results:#?}");
    assert!(
        results[0].starts_with("denied") && results[0].contains("not in agent 'bot'"),
        "{}",
        results[0]
    );
    assert!(
        results[1].starts_with("denied") && results[1].contains("grant"),
        "rule allows read(**), the grant does not: {}",
        results[1]
    );
    assert!(!results[1].contains("hunter2"));
    assert_eq!(results[2], "alpha");
    assert!(
        !results[3].starts_with("denied"),
        "exec(cargo test *) allows `cargo test -p x`: {}",
        results[3]
    );
    assert!(
        results[4].starts_with("denied") && results[4].contains("exec(rm *)"),
        "{}",
        results[4]
    );
    let decided = decisions(&events(&sandbox, run, "work"));
    assert_eq!(
        decided.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(),
        ["deny", "deny", "allow", "allow", "deny"],
        "{decided:?}"
    );
}

#[test]
fn a_crash_while_waiting_for_approval_repeats_no_tool_call() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("data")).unwrap();
    let replies = json!([
        call("exec", json!({"command": "echo ran >> data/count"})),
        call("exec", json!({"command": "echo approved >> data/count"})),
        { "content": "finished" }
    ]);
    let path = agent_workflow(
        &sandbox,
        "[exec]",
        "{allow: [exec], ask: ['exec(*approved*)']}",
        "{files: [{path: ., access: read}, {path: data, access: read-write}], exec: [sh]}",
        &replies,
    );
    let text_yaml = std::fs::read_to_string(&path).unwrap().replace(
        "    prompt: do it\n",
        "    prompt: do it\n    idempotent: true\n",
    );
    std::fs::write(&path, text_yaml).unwrap();
    let mut child = sandbox.spawn_run(&path);
    let (run, approval) = wait_for_approval(&sandbox);
    child.kill().unwrap(); // SIGKILL while the call waits
    child.wait().unwrap();
    let count = || std::fs::read_to_string(sandbox.path().join("data/count")).unwrap_or_default();
    assert_eq!(count(), "ran\n");

    let resumed = sandbox
        .command(&["resume", &run, "--json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Approvals belong to one attempt: the resumed step (a new attempt)
    // asks again, and the question of the attempt that died is closed.
    // (The run still shows `blocked` from before the crash until the new
    // driver claims it: wait for the new question itself.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let listed: Value = serde_json::from_slice(
            &sandbox
                .wfhost(&["approvals", &run, "--all", "--json"])
                .stdout,
        )
        .unwrap();
        if listed.as_array().is_some_and(|all| all.len() >= 2) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed run did not ask again: {listed:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[0]["id"], approval["id"]);
    assert_eq!(listed[0]["status"], "denied", "{listed:#?}");
    assert!(
        listed[0]["note"].as_str().unwrap().contains("expired"),
        "{listed:#?}"
    );
    assert_eq!(listed[1]["status"], "pending");
    assert_eq!(listed[1]["attempt"], 2);
    assert_ne!(
        sandbox
            .wfhost(&["approve", &run, &approval["id"].to_string()])
            .status
            .code(),
        Some(0),
        "the old question cannot be answered any more"
    );
    assert_exit(
        &sandbox.wfhost(&["approve", &run, &listed[1]["id"].to_string()]),
        0,
    );
    let output = resumed.wait_with_output().unwrap();
    assert_exit(&output, 0);
    assert_eq!(
        count(),
        "ran\napproved\n",
        "the first call was replayed, not run again"
    );
}

/// A loopback server speaking enough of the OpenAI chat-completions API:
/// the first request gets a 429, then a tool call, then a final answer.
fn fake_openai() -> (u16, std::thread::JoinHandle<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for (n, stream) in listener.incoming().enumerate().take(3) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut request: Value = serde_json::from_slice(&body).unwrap();
            request["auth"] = json!(auth);
            bodies.push(request);
            let (status, reply) = match n {
                0 => (
                    "429 Too Many Requests",
                    json!({"error": {"message": "slow down"}}),
                ),
                1 => (
                    "200 OK",
                    json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\": \"docs/a.md\"}"}}]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
                ),
                _ => (
                    "200 OK",
                    json!({"choices": [{"message": {"role": "assistant", "content": "it says alpha"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 20, "completion_tokens": 3}}),
                ),
            };
            let text = reply.to_string();
            write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len()).unwrap();
        }
        bodies
    });
    (port, handle)
}

#[test]
fn the_openai_provider_calls_tools_and_a_429_is_retried() {
    let sandbox = Sandbox::new();
    sandbox.write("docs/a.md", "alpha");
    let (port, server) = fake_openai();
    let path = sandbox.write(
        "openai.yaml",
        &format!(
            "name: o\nagents:\n  - id: bot\n    model: {{provider: openai, base_url: 'http://127.0.0.1:{port}/v1', model: test-model, api_key_env: WFHOST_TEST_KEY}}\n    tools: [read]\n    policy: [{{rules: {{allow: ['read(**)']}}}}]\nsteps:\n  - id: ask\n    type: agent\n    agent: bot\n    prompt: what does docs/a.md say?\n    grants: {{files: [{{path: docs}}]}}\n    retry: {{max_attempts: 3, initial_interval: 50ms}}\n"
        ),
    );
    let output = sandbox
        .command(&["run", path.to_str().unwrap(), "--json", "--quiet"])
        .env("WFHOST_TEST_KEY", "sk-test")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    let ask = step(&status, "ask");
    assert_eq!(ask["output"]["text"], "it says alpha");
    assert_eq!(
        ask["attempts"], 2,
        "the 429 failed the first attempt transiently; the retry succeeded"
    );
    let bodies = server.join().unwrap();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[1]["model"], "test-model");
    assert!(
        bodies[1]["auth"]
            .as_str()
            .unwrap()
            .ends_with("Bearer sk-test"),
        "{}",
        bodies[1]["auth"]
    );
    assert_eq!(bodies[1]["tools"][0]["function"]["name"], "read_file");
    let tool_message = bodies[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(tool_message["content"], "alpha");
    assert_eq!(tool_message["tool_call_id"], "c1");
}

#[test]
fn a_reused_session_continues_the_agents_conversation() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "reuse.yaml",
        "name: r\nagents:\n  - id: bot\n    model: {provider: scripted, script: replies.yaml}\nsteps:\n  - id: first\n    type: agent\n    agent: bot\n    prompt: remember 42\n  - id: second\n    type: agent\n    agent: bot\n    needs: [first]\n    session: reuse\n    prompt: what did I say?\n  - id: fresh\n    type: agent\n    agent: bot\n    needs: [first]\n    prompt: hello\n",
    );
    sandbox.write(
        "replies.yaml",
        "steps:\n  first: [{content: 'I will remember 42.'}]\n  second: [{content: 'You said 42.'}]\n  fresh: [{content: 'Hello.'}]\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let status = status.unwrap();
    let contents = |id: &str| -> Vec<String> {
        step(&status, id)["output"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        contents("second"),
        [
            "remember 42",
            "I will remember 42.",
            "what did I say?",
            "You said 42."
        ]
    );
    assert_eq!(contents("fresh"), ["hello", "Hello."]);
}

/// A workflow with an OpenAI-compatible agent at `base_url` (key in
/// `WFHOST_TEST_MODEL_KEY`) and an offline scripted one, one step each.
fn two_provider_workflow(sandbox: &Sandbox, base_url: &str) -> std::path::PathBuf {
    sandbox.write("replies.yaml", "- {content: 'offline answer'}\n");
    sandbox.write(
        "providers.yaml",
        &format!(
            "name: p\nagents:\n  - id: remote\n    model: {{provider: openai, base_url: '{base_url}', model: m, api_key_env: WFHOST_TEST_MODEL_KEY}}\n  - id: offline\n    model: {{provider: scripted, script: replies.yaml}}\nsteps:\n  - id: ask\n    type: agent\n    agent: remote\n    prompt: hi\n  - id: local\n    type: agent\n    agent: offline\n    prompt: hi\n"
        ),
    )
}

#[test]
fn model_providers_are_under_the_operator_ceiling() {
    let sandbox = Sandbox::new();
    // A listener that must never be called: validation stops the run first.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = two_provider_workflow(&sandbox, &format!("http://127.0.0.1:{port}/v1"));
    let closed = sandbox.write("closed.toml", "[ceiling]\nenv = []\nnetwork = []\n");
    let closed = closed.to_str().unwrap();
    let file = path.to_str().unwrap();

    let output = sandbox.wfhost(&["--config", closed, "validate", file]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.iter().all(|l| l.contains("step 'ask'")
            && l.contains("providers.yaml:")
            && l.contains("closed.toml")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "model endpoint '127.0.0.1:{port}' of agent 'remote' (openai model) exceeds the operator ceiling"
        )) && stderr.contains("(ceiling network: none)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "api_key_env 'WFHOST_TEST_MODEL_KEY' of agent 'remote' (openai model) exceeds the operator ceiling"
        ) && stderr.contains("(ceiling env: none)"),
        "{stderr}"
    );

    // `run` refuses it too, before anything is sent.
    let run = sandbox
        .command(&["--config", closed, "run", file])
        .env("WFHOST_TEST_MODEL_KEY", "sk-secret")
        .output()
        .unwrap();
    assert_exit(&run, 2);
    assert!(
        text(&run.stderr).contains("model endpoint"),
        "{}",
        text(&run.stderr)
    );
    assert!(listener.accept().is_err(), "the endpoint was not called");
    let runs = sandbox.wfhost(&["runs", "--json"]);
    assert_eq!(text(&runs.stdout).trim(), "[]", "nothing ran");

    // A ceiling on another port, or the default port of https: network only.
    let narrow = sandbox.write(
        "narrow.toml",
        "[ceiling]\nenv = [\"WFHOST_TEST_MODEL_KEY\"]\nnetwork = [\"127.0.0.1:1\", \"api.example.com:8443\"]\n",
    );
    let output = sandbox.wfhost(&["--config", narrow.to_str().unwrap(), "validate", file]);
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("model endpoint '127.0.0.1:{port}'"))
            && stderr.contains("ceiling network: 127.0.0.1:1, api.example.com:8443"),
        "{stderr}"
    );
    let default_port = two_provider_workflow(&sandbox, "https://API.example.com/v1");
    let output = sandbox.wfhost(&[
        "--config",
        narrow.to_str().unwrap(),
        "validate",
        default_port.to_str().unwrap(),
    ]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("model endpoint 'api.example.com:443'"),
        "{}",
        text(&output.stderr)
    );

    // Within the ceiling: validate shows each agent step's endpoint and key.
    let open = sandbox.write(
        "open.toml",
        &format!(
            "[ceiling]\nenv = [\"WFHOST_TEST_MODEL_KEY\"]\nnetwork = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    let path = two_provider_workflow(&sandbox, &format!("http://127.0.0.1:{port}/v1"));
    let output = sandbox.wfhost(&[
        "--config",
        open.to_str().unwrap(),
        "validate",
        path.to_str().unwrap(),
    ]);
    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "model: openai at 127.0.0.1:{port}, key from $WFHOST_TEST_MODEL_KEY"
        )) && stdout.contains("model: scripted (offline), no key"),
        "{stdout}"
    );
    let output = sandbox.wfhost(&[
        "--config",
        open.to_str().unwrap(),
        "validate",
        path.to_str().unwrap(),
        "--json",
    ]);
    assert_exit(&output, 0);
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        step(&doc, "ask")["model"],
        json!({"agent": "remote", "provider": "openai", "endpoint": format!("127.0.0.1:{port}"), "api_key_env": "WFHOST_TEST_MODEL_KEY"})
    );
    assert_eq!(
        step(&doc, "local")["model"],
        json!({"agent": "offline", "provider": "scripted", "endpoint": null, "api_key_env": null})
    );
}

#[test]
fn an_offline_model_runs_under_a_closed_ceiling() {
    let sandbox = Sandbox::new();
    sandbox.write("replies.yaml", "- {content: 'offline answer'}\n");
    let path = sandbox.write(
        "offline.yaml",
        "name: o\nagents:\n  - id: offline\n    model: {provider: scripted, script: replies.yaml}\nsteps:\n  - id: local\n    type: agent\n    agent: offline\n    prompt: hi\n",
    );
    let closed = sandbox.write("closed.toml", "[ceiling]\nenv = []\nnetwork = []\n");
    let (output, status) = sandbox.run(&path, &["--config", closed.to_str().unwrap()]);
    assert_exit(&output, 0);
    assert_eq!(
        step(&status.unwrap(), "local")["output"]["text"],
        "offline answer"
    );
}

#[test]
fn a_step_cannot_pass_a_model_key_through_its_env_grant() {
    let sandbox = Sandbox::new();
    // Through defaults.grants: the script step and the agent step both get it.
    let path = sandbox.write(
        "leak.yaml",
        "name: l\ndefaults:\n  grants: {env: [WFHOST_TEST_MODEL_KEY]}\nagents:\n  - id: remote\n    model: {provider: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: WFHOST_TEST_MODEL_KEY}\nsteps:\n  - id: leak\n    run: 'echo $WFHOST_TEST_MODEL_KEY'\n  - id: fixed\n    run: 'echo $WFHOST_TEST_MODEL_KEY'\n    grants: {inherit: false, env: ['WFHOST_TEST_MODEL_KEY=not-the-key']}\n",
    );
    let output = sandbox
        .command(&["validate", path.to_str().unwrap()])
        .env("WFHOST_TEST_MODEL_KEY", "sk-secret")
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("step 'leak'")
            && stderr.contains("env grant 'WFHOST_TEST_MODEL_KEY' would pass the API key of agent 'remote' (openai model, api_key_env)"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-secret"), "{stderr}");
}

/// Whether `text` holds anything a terminal would act on.
fn has_controls(text: &str) -> bool {
    text.chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}')
}

#[test]
fn model_written_text_reaches_the_terminal_without_control_sequences() {
    let sandbox = Sandbox::new();
    let hostile = "echo hi\u{1b}]0;pwned\u{7}\u{1b}[2K\r# harmless\u{9b}31m\u{7f}";
    let replies = json!([
        call("exec", json!({ "command": hostile })),
        { "content": "done\u{1b}[1A\u{1b}[2Kforged" }
    ]);
    let path = agent_workflow(
        &sandbox,
        "[exec]",
        "{ask: ['exec']}",
        "{exec: [sh]}",
        &replies,
    );
    // The script is read as YAML, which wants DEL and C1 escaped.
    let escaped = replies
        .to_string()
        .replace('\u{7f}', "\\u007f")
        .replace('\u{9b}', "\\u009b");
    sandbox.write("replies.json", &escaped);
    let child = sandbox.spawn_run(&path);
    let (run, approval) = wait_for_approval(&sandbox);
    // The JSON keeps the text as it was (escaped by JSON).
    assert!(
        approval["arguments"]
            .as_str()
            .unwrap()
            .contains("\\u001b]0;pwned"),
        "{approval:#}"
    );

    let listed = sandbox.wfhost(&["approvals"]);
    assert_exit(&listed, 0);
    let listed = text(&listed.stdout);
    assert!(!has_controls(&listed), "{listed:?}");
    assert!(
        listed.contains("exec {\"command\":\"echo hi") && listed.contains("# harmless\"}"),
        "{listed:?}"
    );
    let status = text(&sandbox.wfhost(&["status", &run]).stdout);
    assert!(!has_controls(&status), "{status:?}");
    assert!(status.contains("waiting   approval #"), "{status}");

    let id = approval["id"].to_string();
    let denied = sandbox.wfhost(&["deny", &run, &id, "--reason", "no\u{1b}[31m thanks"]);
    assert_exit(&denied, 0);
    let said = text(&denied.stderr);
    assert!(
        !has_controls(&said) && said.contains("denied #"),
        "{said:?}"
    );
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);

    let all = text(&sandbox.wfhost(&["approvals", "--all"]).stdout);
    assert!(
        !has_controls(&all) && all.contains("reason: no thanks"),
        "{all:?}"
    );
    let logs = sandbox.wfhost(&["logs", &run, "work"]);
    assert_exit(&logs, 0);
    assert!(
        !has_controls(&text(&logs.stdout)),
        "{:?}",
        text(&logs.stdout)
    );
    let transcript = sandbox.wfhost(&["logs", &run, "work", "--transcript"]);
    assert_exit(&transcript, 0);
    let transcript = text(&transcript.stdout);
    assert!(
        !has_controls(&transcript) && transcript.contains("doneforged"),
        "{transcript:?}"
    );
}

#[test]
fn a_program_started_by_an_agent_gets_its_grace_on_cancel() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("data")).unwrap();
    let replies = json!([
        call(
            "exec",
            json!({"command": "trap 'sleep 0.5; echo stopped > data/marker; exit 0' TERM; echo up > data/started; sleep 60 & wait"})
        ),
        { "content": "finished" }
    ]);
    let path = agent_workflow(
        &sandbox,
        "[exec]",
        "{allow: [exec]}",
        "{files: [{path: ., access: read}, {path: data, access: read-write}], exec: [sh, sleep]}",
        &replies,
    );
    let mut child = sandbox.spawn_run(&path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sandbox.path().join("data/started").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the run ended ({status}) before the program started: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "the agent's program never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs: Value = serde_json::from_slice(&sandbox.wfhost(&["runs", "--json"]).stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_exit(&sandbox.wfhost(&["cancel", &id]), 0);
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 1);
    assert_eq!(
        std::fs::read_to_string(sandbox.path().join("data/marker")).unwrap_or_default(),
        "stopped\n",
        "the program's TERM handler had its grace period"
    );
    assert_eq!(sandbox.status(&id)["status"], "cancelled");
}

/// A policy component that spins, hogs memory or sleeps is stopped (two
/// seconds per decision, 64 MiB) and the call it was asked about is denied,
/// saying why; the run goes on.
#[test]
fn a_runaway_policy_denies_the_call_and_the_run_goes_on() {
    let policy = common::test_plugin("hostile_policy");
    for (config, expected) in [
        ("spin", "interrupt"),
        ("hog", "policy component failed"),
        ("sleep", "did not decide within 2s"),
    ] {
        let sandbox = Sandbox::new();
        sandbox.write("docs/a.md", "alpha");
        let replies =
            json!([call("read_file", json!({"path": "docs/a.md"})), { "content": "done" }]);
        sandbox.write("replies.json", &replies.to_string());
        let path = sandbox.write(
            "agent.yaml",
            &format!(
                "name: a\nagents:\n  - id: bot\n    model: {{provider: scripted, script: replies.json}}\n    tools: [read]\n    policy: [{{plugin: '{}', config: {config}}}]\nsteps:\n  - id: work\n    type: agent\n    agent: bot\n    prompt: do it\n    grants: {{files: [{{path: docs}}]}}\n",
                policy.display()
            ),
        );
        let (output, status) = sandbox.run(&path, &[]);
        assert_exit(&output, 0);
        let status = status.unwrap();
        let results = tool_results(&status, "work");
        assert_eq!(results.len(), 1, "{config}: {results:#?}");
        assert!(
            results[0].starts_with("denied") && results[0].contains("could not decide"),
            "{config}: {}",
            results[0]
        );
        assert!(results[0].contains(expected), "{config}: {}", results[0]);
        assert!(!results[0].contains("alpha"), "{config}: {}", results[0]);
    }
}
