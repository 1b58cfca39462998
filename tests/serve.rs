//! `wfhost serve`: the REST API and live events over real HTTP on
//! loopback, driving real runs; the CLI and the server agree.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `wfhost serve` on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(sandbox: &Sandbox, bind: &str) -> Server {
        let mut child = sandbox
            .command(&["serve", "--bind", bind])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("the server stopped before listening");
            }
        }
        // Keep reading what it says, so its stderr never closes under it.
        std::thread::spawn(move || {
            let mut rest = String::new();
            while stderr.read_line(&mut rest).unwrap_or(0) > 0 {
                rest.clear();
            }
        });
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, address }
    }

    /// One HTTP/1.1 request; returns (status, content type, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.address
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        match body {
            Some(body) => request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => request.push_str("\r\n"),
        }
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, content_type, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.request("GET", path, None, &[]);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, text) = self.request("POST", path, Some(&body.to_string()), &[]);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn wait_for(&self, run: &str, wanted: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, doc) = self.get(&format!("/api/runs/{run}"));
            assert_eq!(status, 200, "{doc:#}");
            if wanted.contains(&doc["status"].as_str().unwrap_or_default()) {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "run never reached {wanted:?}: {doc:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn runs_started_over_the_api_match_the_cli_and_every_route_is_documented() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, "127.0.0.1:0");

    let (status, openapi) = server.get("/api/openapi.json");
    assert_eq!(status, 200);
    assert!(
        openapi["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        openapi["openapi"]
    );
    let paths = openapi["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/runs", "get"),
        ("/api/runs", "post"),
        ("/api/runs/{id}", "get"),
        ("/api/runs/{id}/pause", "post"),
        ("/api/runs/{id}/resume", "post"),
        ("/api/runs/{id}/cancel", "post"),
        ("/api/runs/{id}/steps/{step}", "get"),
        ("/api/runs/{id}/steps/{step}/logs", "get"),
        ("/api/runs/{id}/checkpoints", "get"),
        ("/api/runs/{id}/events", "get"),
        ("/api/events", "get"),
        ("/api/workflows", "get"),
        ("/api/workflows/{name}", "get"),
        ("/api/workflows/validate", "post"),
        ("/api/approvals", "get"),
        ("/api/runs/{id}/approvals/{approval}/approve", "post"),
        ("/api/runs/{id}/approvals/{approval}/deny", "post"),
        ("/api/runs/{id}/artifacts", "get"),
        ("/api/runs/{id}/artifacts/{artifact}", "get"),
        ("/api/runs/{id}/comments", "get"),
        ("/api/runs/{id}/comments", "post"),
        ("/api/runs/{id}/checkpoints", "post"),
        ("/api/runs/{id}/retry", "post"),
        ("/api/runs/{id}/restore", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not in the OpenAPI document"
        );
    }

    let hello = repo().join("workflows/hello.yaml");
    let (status, started) = server.post(
        "/api/runs",
        &json!({ "workflow": hello, "args": { "who": "api" }, "triggered_by": "test", "priority": 3 }),
    );
    assert_eq!(status, 201, "{started:#}");
    let run = started["id"].as_str().unwrap().to_string();
    let done = server.wait_for(&run, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["triggered_by"], "test");
    assert_eq!(done["priority"], 3);
    assert_eq!(done["counts"]["completed"], 3);
    // The CLI reads the same run the same way.
    let cli = sandbox.status(&run);
    assert_eq!(cli["steps"], done["steps"]);
    assert_eq!(cli["status"], done["status"]);
    let (status, step) = server.get(&format!("/api/runs/{run}/steps/greet"));
    assert_eq!(status, 200);
    assert_eq!(step["output"]["stdout"], "Hello, api!");
    let (status, logs) = server.get(&format!("/api/runs/{run}/steps/greet/logs?limit=1000"));
    assert_eq!(status, 200);
    assert!(
        logs["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "log"),
        "{logs:#}"
    );
    let (status, list) = server.get("/api/runs?limit=5");
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    let (status, workflows) = server.get("/api/workflows");
    assert_eq!(status, 200);
    assert_eq!(workflows[0]["name"], "hello");
    assert_eq!(workflows[0]["executions"], 1);
    let (status, one) = server.get("/api/workflows/hello");
    assert_eq!(status, 200);
    assert_eq!(one["args"]["properties"]["who"]["default"], "world");
    assert_eq!(server.get("/api/workflows/nope").0, 404);
    let (_, count) = server.get(&format!("/api/runs/{run}/steps/count"));
    assert_eq!(
        count["input"]["config"]["text"],
        format!("Hello, api, from run {run}")
    );

    // Live events: the whole run replays from the store, each with the
    // store's id; reconnecting after an id replays only what followed it.
    let events = sse(&server, &format!("/api/runs/{run}/events"), None, 5);
    assert!(events.len() >= 5);
    let third = events[2].0;
    let again = sse(&server, &format!("/api/runs/{run}/events"), Some(third), 2);
    assert_eq!(again[0].0, events[3].0, "resumes right after Last-Event-ID");
    assert_eq!(again[1].0, events[4].0);

    // Posted definitions validate and run; a pause/cancel from the API is
    // seen by the CLI.
    let (status, valid) = server.post(
        "/api/workflows/validate",
        &json!({ "definition": "name: x\nsteps:\n  - {id: a, run: 'true', needs: [b]}\n" }),
    );
    assert_eq!(status, 200);
    assert_eq!(valid["valid"], false);
    assert!(
        valid["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("b"),
        "{valid:#}"
    );
    let (status, slow) = server.post(
        "/api/runs",
        &json!({ "definition": "name: slow\nsteps:\n  - {id: nap, run: sleep 30, grants: {exec: [sleep]}}\n" }),
    );
    assert_eq!(status, 201, "{slow:#}");
    let slow = slow["id"].as_str().unwrap().to_string();
    server.wait_for(&slow, &["running"]);
    let (status, cancelled) = server.post(&format!("/api/runs/{slow}/cancel"), &json!({}));
    assert_eq!(status, 202, "{cancelled:#}");
    server.wait_for(&slow, &["cancelled"]);
    assert_eq!(sandbox.status(&slow)["status"], "cancelled");
    let (status, again) = server.post(&format!("/api/runs/{slow}/cancel"), &json!({}));
    assert_eq!(status, 409, "{again:#}");
}

/// Reads `count` events of an SSE stream: (id, kind, data).
fn sse(server: &Server, path: &str, last: Option<i64>, count: usize) -> Vec<(i64, String, Value)> {
    let mut stream = TcpStream::connect(&server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
    if let Some(id) = last {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut events = Vec::new();
    let (mut id, mut kind, mut data) = (None, String::new(), String::new());
    let mut line = String::new();
    while events.len() < count {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let text = line.trim_end();
        if let Some(value) = text
            .strip_prefix("id: ")
            .or_else(|| text.strip_prefix("id:"))
        {
            id = value.trim().parse().ok();
        } else if let Some(value) = text
            .strip_prefix("event: ")
            .or_else(|| text.strip_prefix("event:"))
        {
            kind = value.trim().to_string();
        } else if let Some(value) = text
            .strip_prefix("data: ")
            .or_else(|| text.strip_prefix("data:"))
        {
            data = value.to_string();
        } else if text.is_empty() {
            if let Some(seq) = id.take() {
                let parsed: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(parsed["seq"], seq, "the event id is the store's");
                events.push((seq, std::mem::take(&mut kind), parsed));
            }
        }
    }
    events
}

#[test]
fn bad_requests_are_clear_problems_never_5xx() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("POST", "/api/runs", Some("{not json".into()), 400, ""),
        (
            "POST",
            "/api/runs",
            Some(r#"{"workflow": "x.yaml", "colour": 1}"#.into()),
            422,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/runs",
            Some(format!(r#"{{"definition": "{}"}}"#, "x".repeat(2 << 20))),
            413,
            "larger than the limit",
        ),
        (
            "POST",
            "/api/runs",
            Some(r#"{}"#.into()),
            400,
            "give exactly one of",
        ),
        (
            "POST",
            "/api/runs",
            Some(r#"{"workflow": "/no/such.yaml"}"#.into()),
            422,
            "cannot read the workflow file",
        ),
        (
            "POST",
            "/api/runs",
            Some(r#"{"definition": "name: x\nsteps: []\n"}"#.into()),
            422,
            "no steps",
        ),
        ("GET", "/api/runs/nosuchrun", None, 404, "no run"),
        ("GET", "/api/runs/..%2F..%2Fetc", None, 404, ""),
        ("GET", "/api/nothing-here", None, 404, "no such route"),
        ("DELETE", "/api/runs", None, 405, ""),
        ("GET", "/api/runs?limit=lots", None, 400, ""),
        (
            "POST",
            "/api/runs/abc/approvals/1/deny",
            Some("{}".into()),
            400,
            "needs a `note`",
        ),
    ];
    for (method, path, body, expected, detail) in cases {
        let (status, content_type, text) = server.request(method, path, body.as_deref(), &[]);
        assert_eq!(status, expected, "{method} {path}: {text}");
        assert!(
            content_type.starts_with("application/problem+json"),
            "{method} {path}: {content_type}"
        );
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], expected);
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{method} {path}: {problem:#}"
        );
    }
}

#[test]
fn other_addresses_need_a_token_made_by_the_cli() {
    let sandbox = Sandbox::new();
    let refused = sandbox.wfhost(&["serve", "--bind", "0.0.0.0:0"]);
    assert_exit(&refused, 2);
    assert!(
        text(&refused.stderr).contains("wfhost token create"),
        "{}",
        text(&refused.stderr)
    );
    let made = sandbox.wfhost(&["token", "create", "--name", "ci"]);
    assert_exit(&made, 0);
    let token = text(&made.stdout).trim().to_string();
    assert!(token.starts_with("wfh_") && token.len() > 40, "{token}");
    let server = Server::start(&sandbox, "0.0.0.0:0");
    let port = server.address.rsplit(':').next().unwrap().to_string();
    let server = Server {
        child: server.child_take(),
        address: format!("127.0.0.1:{port}"),
    };
    let (status, _, body) = server.request("GET", "/api/runs", None, &[]);
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = server.request(
        "GET",
        "/api/runs",
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    let bearer = format!("Bearer {token}");
    let (status, _, body) = server.request("GET", "/api/runs", None, &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let bad = sandbox.wfhost(&["serve", "--bind", "nowhere"]);
    assert_exit(&bad, 2);
    assert!(text(&bad.stderr).contains("expected ADDRESS:PORT"));
}

impl Server {
    fn child_take(mut self) -> Child {
        let child = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true").spawn().unwrap(),
        );
        std::mem::forget(self);
        child
    }
}

#[test]
fn an_agent_call_held_for_approval_is_answered_over_the_api_and_pause_resume_work_across_cli_and_api(
) {
    let sandbox = Sandbox::new();
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
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let (status, started) = server.post(
        "/api/runs",
        &json!({ "workflow": sandbox.path().join("agent-review.yaml") }),
    );
    assert_eq!(status, 201, "{started:#}");
    let run = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let approval = loop {
        let (status, list) = server.get(&format!("/api/approvals?run={run}"));
        assert_eq!(status, 200, "{list:#}");
        if let Some(first) = list.as_array().and_then(|l| l.first()) {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no approval was requested");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(approval["tool"], "exec");
    // The CLI sees the same held call.
    let cli: Value =
        serde_json::from_slice(&sandbox.wfhost(&["approvals", "--json"]).stdout).unwrap();
    assert_eq!(cli[0]["id"], approval["id"]);
    let id = approval["id"].as_i64().unwrap();
    let (status, answered) = server.post(
        &format!("/api/runs/{run}/approvals/{id}/approve"),
        &json!({ "note": "fine" }),
    );
    assert_eq!(status, 200, "{answered:#}");
    assert_eq!(answered["status"], "approved");
    let (status, again) = server.post(
        &format!("/api/runs/{run}/approvals/{id}/approve"),
        &json!({}),
    );
    assert_eq!(status, 409, "{again:#}");
    let done = server.wait_for(&run, &["completed", "failed"]);
    assert_eq!(done["status"], "completed", "{done:#}");

    // Pause from the CLI, resume from the API.
    let slow = sandbox.write(
        "steps.yaml",
        "name: steps\nsteps:\n  - {id: one, run: sleep 1, grants: {exec: [sleep]}}\n  - {id: two, needs: [one], run: echo two}\n",
    );
    let (status, started) = server.post("/api/runs", &json!({ "workflow": slow }));
    assert_eq!(status, 201);
    let run = started["id"].as_str().unwrap().to_string();
    server.wait_for(&run, &["running"]);
    assert_exit(&sandbox.wfhost(&["pause", &run]), 0);
    server.wait_for(&run, &["paused"]);
    let (status, resumed) = server.post(&format!("/api/runs/{run}/resume"), &json!({}));
    assert_eq!(status, 202, "{resumed:#}");
    let done = server.wait_for(&run, &["completed", "failed"]);
    assert_eq!(done["status"], "completed");
    assert_eq!(sandbox.status(&run)["steps"], done["steps"]);
}

#[test]
fn artifacts_are_kept_inside_their_grants_and_comments_reach_status_cli_and_api() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("out")).unwrap();
    std::fs::write(sandbox.path().join("secret.txt"), "do not copy").unwrap();
    std::os::unix::fs::symlink(
        sandbox.path().join("secret.txt"),
        sandbox.path().join("out/link.md"),
    )
    .unwrap();
    let path = sandbox.write(
        "art.yaml",
        "name: art\nsteps:\n  - id: make\n    grants: {files: [{path: out, access: read-write}], exec: [mkdir]}\n    artifacts: ['out/**/*.md', 'out/data.json']\n    run: |\n      mkdir -p out/sub\n      echo '# Report' > out/report.md\n      echo 'deep' > out/sub/deep.md\n      echo '{\"a\": 1}' > out/data.json\n      echo 'not kept' > out/other.txt\n",
    );
    let (output, status) = sandbox.run(&path, &[]);
    assert_exit(&output, 0);
    let run = status.unwrap()["id"].as_str().unwrap().to_string();
    let listed = sandbox.wfhost(&["artifacts", &run, "--json"]);
    assert_exit(&listed, 0);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["out/report.md", "out/sub/deep.md", "out/data.json"],
        "the symlink is not followed"
    );
    let report = &list[0];
    assert_eq!(report["media_type"], "text/markdown");
    assert_eq!(report["size"], 9);
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    let id = report["id"].to_string();
    let got = sandbox.wfhost(&["artifacts", &run, "--get", &id, "--out", "-"]);
    assert_exit(&got, 0);
    assert_eq!(text(&got.stdout), "# Report\n");
    let into = sandbox.path().join("copy.md");
    assert_exit(
        &sandbox.wfhost(&[
            "artifacts",
            &run,
            "--get",
            &id,
            "--out",
            into.to_str().unwrap(),
        ]),
        0,
    );
    let again = sandbox.wfhost(&[
        "artifacts",
        &run,
        "--get",
        &id,
        "--out",
        into.to_str().unwrap(),
    ]);
    assert_exit(&again, 2);
    assert_exit(&sandbox.wfhost(&["artifacts", &run, "--get", "999"]), 2);

    // Comments from the CLI and the API, on the run and on a step.
    assert_exit(
        &sandbox.wfhost(&["comment", &run, "looks good", "--author", "ann"]),
        0,
    );
    assert_exit(
        &sandbox.wfhost(&["comment", &run, "make", "report is short"]),
        0,
    );
    let bad = sandbox.wfhost(&["comment", &run, "nosuchstep", "x"]);
    assert_exit(&bad, 2);
    assert!(text(&bad.stderr).contains("has no step 'nosuchstep'"));
    let human = text(&sandbox.wfhost(&["status", &run]).stdout);
    assert!(
        human.contains("ann: looks good") && human.contains("on 'make': report is short"),
        "{human}"
    );
    assert!(human.contains("artifacts 3"), "{human}");

    let server = Server::start(&sandbox, "127.0.0.1:0");
    let (status, api_list) = server.get(&format!("/api/runs/{run}/artifacts?step=make"));
    assert_eq!(status, 200);
    assert_eq!(api_list, list);
    let (status, content_type, body) =
        server.request("GET", &format!("/api/runs/{run}/artifacts/{id}"), None, &[]);
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/markdown");
    assert_eq!(body, "# Report\n");
    let (status, _, _) = server.request(
        "GET",
        &format!("/api/runs/{run}/artifacts/..%2F..%2Fwfhost.db"),
        None,
        &[],
    );
    assert_eq!(status, 400, "artifact names are ids, not paths");
    let (status, _, _) = server.request(
        "GET",
        &format!("/api/runs/{run}/artifacts/12345"),
        None,
        &[],
    );
    assert_eq!(status, 404);
    let (status, added) = server.post(
        &format!("/api/runs/{run}/comments"),
        &json!({"text": "from the api", "step": "make"}),
    );
    assert_eq!(status, 201, "{added:#}");
    assert_eq!(added["author"], "api");
    let (status, comments) = server.get(&format!("/api/runs/{run}/comments"));
    assert_eq!(status, 200);
    assert_eq!(comments.as_array().unwrap().len(), 3);
    let (status, _) = server.post(
        &format!("/api/runs/{run}/comments"),
        &json!({"text": "   "}),
    );
    assert_eq!(status, 409);

    // A pattern outside the step's read-write grants stops the run before it starts.
    let outside = sandbox.write(
        "outside.yaml",
        "name: o\nsteps:\n  - id: a\n    run: 'true'\n    grants: {files: [{path: out, access: read}]}\n    artifacts: ['out/*.md']\n",
    );
    let (output, _) = sandbox.run(&outside, &[]);
    assert_exit(&output, 2);
    assert!(
        text(&output.stderr).contains("not inside a read-write grant"),
        "{}",
        text(&output.stderr)
    );
}

/// Load, bounded: SSE clients on `/api/events` while runs are started
/// concurrently over the API; every client sees exactly the store's events
/// of those runs, each once, in store order.
#[test]
fn many_event_clients_while_runs_start_concurrently_lose_and_repeat_nothing() {
    const CLIENTS: usize = 20;
    const RUNS: usize = 8;
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let path = sandbox.write(
        "quick.yaml",
        "name: quick\nsteps:\n  - {id: a, run: echo a}\n  - {id: b, needs: [a], run: echo b}\n",
    );
    let address = server.address.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&address).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(90)))
                    .unwrap();
                stream
                    .write_all(
                        b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
                    )
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut seen: Vec<(String, i64)> = Vec::new();
                let mut finished = std::collections::BTreeSet::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if let Some(data) = line.trim_end().strip_prefix("data: ") {
                        let event: Value = serde_json::from_str(data).unwrap();
                        let run = event["run_id"].as_str().unwrap().to_string();
                        if event["kind"] == "run_status" && event["data"]["status"] == "completed" {
                            finished.insert(run.clone());
                            if finished.len() == RUNS {
                                // What follows the last run's end, then stop.
                                stream
                                    .set_read_timeout(Some(Duration::from_secs(2)))
                                    .unwrap();
                            }
                        }
                        seen.push((run, event["seq"].as_i64().unwrap()));
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let starters: Vec<_> = (0..RUNS)
        .map(|_| {
            let address = address.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                let client = Server {
                    child: std::process::Command::new("true").spawn().unwrap(),
                    address,
                };
                let (status, started) = client.post("/api/runs", &json!({ "workflow": path }));
                assert_eq!(status, 201, "{started:#}");
                let id = started["id"].as_str().unwrap().to_string();
                client.wait_for(&id, &["completed"]);
                id
            })
        })
        .collect();
    let runs: Vec<String> = starters.into_iter().map(|t| t.join().unwrap()).collect();
    // The store's own events of each run (`watch --json` of a finished run).
    let store: Vec<(String, Vec<i64>)> = runs
        .iter()
        .map(|run| {
            let out = sandbox.wfhost(&["watch", run, "--json"]);
            let seqs = text(&out.stdout)
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["seq"]
                        .as_i64()
                        .unwrap()
                })
                .collect();
            (run.clone(), seqs)
        })
        .collect();
    for client in clients {
        let seen = client.join().unwrap();
        let seqs: Vec<i64> = seen.iter().map(|(_, seq)| *seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(seqs, sorted, "each event once, in store order");
        for (run, expected) in &store {
            let got: Vec<i64> = seen
                .iter()
                .filter(|(r, _)| r == run)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(
                &got, expected,
                "run {run}: the client's events are the store's"
            );
        }
    }
}

/// A run the server started whose driver was killed is resumed by the
/// next server: an idempotent step runs again and the run completes.
#[test]
fn a_restarted_server_resumes_the_runs_it_owns() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "nap.yaml",
        "name: nap\nsteps:\n  - {id: nap, run: sleep 2, grants: {exec: [sleep]}, idempotent: true}\n  - {id: after, needs: [nap], run: echo after}\n",
    );
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let (status, started) = server.post("/api/runs", &json!({ "workflow": path }));
    assert_eq!(status, 201);
    let run = started["id"].as_str().unwrap().to_string();
    let running = server.wait_for(&run, &["running"]);
    let pid = running["driver_pid"].as_i64().unwrap();
    drop(server);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.status(&run)["status"] != "stale" {
        assert!(Instant::now() < deadline, "the run never went stale");
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let done = server.wait_for(&run, &["completed", "failed", "blocked"]);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(step(&done, "after")["output"]["stdout"], "after");
}

#[test]
fn retry_checkpoint_and_restore_over_the_api_as_the_cli_does() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, "127.0.0.1:0");
    let path = sandbox.write(
        "abc.yaml",
        "name: abc\nsteps:\n  - {id: a, run: echo a}\n  - {id: b, needs: [a], run: echo b}\n  - {id: c, needs: [b], run: echo c}\n",
    );
    let (_, started) = server.post("/api/runs", &json!({ "workflow": path }));
    let run = started["id"].as_str().unwrap().to_string();
    server.wait_for(&run, &["completed"]);
    let (status, retried) = server.post(&format!("/api/runs/{run}/retry"), &json!({ "from": "b" }));
    assert_eq!(status, 202, "{retried:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (_, doc) = server.get(&format!("/api/runs/{run}"));
        if doc["status"] == "completed" && step(&doc, "c")["attempts"] == 2 {
            break doc;
        }
        assert!(Instant::now() < deadline, "{doc:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(step(&doc, "a")["attempts"], 1);
    assert_eq!(step(&doc, "b")["attempts"], 2);
    let (status, bad) = server.post(&format!("/api/runs/{run}/retry"), &json!({ "from": "zz" }));
    assert_eq!(status, 404, "{bad:#}");
    let (status, _) = server.post(&format!("/api/runs/{run}/retry"), &json!({}));
    assert_eq!(status, 400);

    let (status, made) = server.post(
        &format!("/api/runs/{run}/checkpoints"),
        &json!({ "label": "all done" }),
    );
    assert_eq!(status, 201, "{made:#}");
    let listed: Value =
        serde_json::from_slice(&sandbox.wfhost(&["checkpoints", &run, "--json"]).stdout).unwrap();
    let after_a = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["step"] == "a")
        .unwrap()["checkpoint"]
        .as_i64()
        .unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["label"] == "all done"));
    let (status, restored) = server.post(
        &format!("/api/runs/{run}/restore"),
        &json!({ "checkpoint": after_a }),
    );
    assert_eq!(status, 202, "{restored:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = sandbox.status(&run);
        if doc["status"] == "completed" && step(&doc, "c")["attempts"] == 3 {
            assert_eq!(step(&doc, "a")["attempts"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "{doc:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = server.post(
        &format!("/api/runs/{run}/restore"),
        &json!({ "checkpoint": 999999 }),
    );
    assert_eq!(status, 404);
}
