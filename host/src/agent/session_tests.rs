//! A whole agent session against a real store: scripted model, tools,
//! policy chain, an approval answered from another thread, and replay of a
//! crashed attempt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::step::bindings::model::Role;
use crate::step::grants::{resolve_program, ExecGrant, ResolvedGrants};
use crate::store::{AgentStore, EngineStore, NewRun, RunStatus};
use crate::workflow::model::{Agent, ModelSpec, PolicySpec};

const SCRIPT: &str = r#"
- content: "Looking around."
  tool_calls:
    - {name: read_file, arguments: {path: src/a.rs}}
    - {name: write_file, arguments: {path: out/evil.txt, content: "x"}}
    - {name: http_get, arguments: {url: "http://example.com/"}}
    - {name: read_file, arguments: {path: /etc/passwd}}
    - {name: exec, arguments: {command: "echo ran >> OUT/count; echo done"}}
    - {name: write_file, arguments: {path: out/second.txt, content: "y"}}
- content: "Report written."
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    store: Arc<dyn EngineStore>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(base.join("src")).unwrap();
    std::fs::create_dir_all(base.join("out")).unwrap();
    std::fs::write(base.join("src/a.rs"), "fn main() {}\n").unwrap();
    let script = SCRIPT.replace("OUT", base.join("out").to_str().unwrap());
    std::fs::write(base.join("script.yaml"), script).unwrap();
    std::fs::write(base.join("policy.wasm"), policy::tests::test_policy_wasm()).unwrap();
    let store = crate::store::open(&base.join(".wfhost"), Default::default()).unwrap();
    store
        .create_run(&NewRun {
            id: "run1",
            workflow_name: "wf",
            workflow_path: "wf.yaml",
            workflow_dir: base.to_str().unwrap(),
            definition: "name: wf\n",
            args: &json!({}),
            steps: &["review"],
            triggered_by: None,
            priority: 0,
        })
        .unwrap();
    store
        .set_run_status("run1", RunStatus::Running, None)
        .unwrap();
    Fixture {
        _dir: dir,
        base,
        store,
    }
}

fn agent() -> Agent {
    Agent {
        id: "reviewer".into(),
        name: None,
        role: None,
        description: None,
        model: ModelSpec::Scripted {
            script: "script.yaml".into(),
        },
        system: None,
        tools: vec!["read".into(), "write".into(), "exec".into()],
        // The test policy denies write_file (reason: its config, as JSON
        // text) and asks about exec (prompt: the same).
        policy: vec![PolicySpec {
            rules: None,
            plugin: Some("policy.wasm".into()),
            config: Some(json!("not without a person")),
        }],
    }
}

fn context(fx: &Fixture, attempt: u32) -> SessionContext {
    SessionContext {
        run_id: "run1".into(),
        step_id: "review".into(),
        attempt,
        iteration: 0,
        agent: agent(),
        grants: ResolvedGrants {
            files: vec![(fx.base.join("src"), false), (fx.base.join("out"), true)],
            exec: vec![ExecGrant {
                name: "sh".into(),
                path: resolve_program("sh").unwrap(),
            }],
            ..ResolvedGrants::default()
        },
        workdir: fx.base.clone(),
        store: fx.store.clone(),
    }
}

fn user(text: &str) -> Message {
    Message {
        role: Role::User,
        content: text.into(),
        tool_calls: vec![],
        tool_call_id: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Answer the first approval that shows up, from "another process".
fn answer_when_asked(
    store: Arc<dyn AgentStore>,
    approve: bool,
) -> std::thread::JoinHandle<RunStatus> {
    std::thread::spawn(move || {
        for _ in 0..400 {
            if let Some(pending) = store.approvals(Some("run1"), false).unwrap().first() {
                std::thread::sleep(Duration::from_millis(100));
                let status = store.run("run1").unwrap().status;
                let note = if approve { "fine" } else { "not today" };
                store
                    .answer_approval("run1", pending.id, approve, Some(note))
                    .unwrap()
                    .unwrap();
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no approval was asked for");
    })
}

fn kinds(store: &dyn AgentStore) -> Vec<String> {
    store
        .events("run1", Some("review"))
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Run the first turn's calls; returns their outcomes.
fn run_first_turn(
    session: &AgentHandle,
    rt: &tokio::runtime::Runtime,
) -> (Completion, Vec<Result<String, ToolError>>) {
    let specs = session.0.available();
    let completion = rt
        .block_on(session.0.complete(vec![user("review the code")], specs))
        .unwrap();
    let mut results = Vec::new();
    for call in &completion.message.tool_calls {
        results.push(rt.block_on(session.0.invoke(
            call.id.clone(),
            call.name.clone(),
            call.arguments.clone(),
        )));
    }
    (completion, results)
}

#[test]
fn a_session_checks_audits_asks_and_replays() {
    let fx = fixture();
    let rt = rt();
    let session = open_session(context(&fx, 1)).unwrap();
    let names: Vec<String> = session.0.available().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["read_file", "write_file", "exec"]);

    let answerer = answer_when_asked(fx.store.clone(), true);
    let (completion, results) = run_first_turn(&session, &rt);
    assert_eq!(completion.message.tool_calls[0].id, "call_1_1");
    assert!(matches!(&results[0], Ok(text) if text.contains("fn main")));
    assert!(
        matches!(&results[1], Err(ToolError::Denied(m)) if m == r#""not without a person""#),
        "a policy deny goes back to the model: {:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(ToolError::Denied(m)) if m.contains("unknown tool 'http_get'") || m.contains("not in agent")),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(&results[3], Err(ToolError::Denied(m)) if m.contains("no files grant")),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Ok(text) if text.contains("done")),
        "approved exec runs: {:?}",
        results[4]
    );
    assert_eq!(
        answerer.join().unwrap(),
        RunStatus::Blocked,
        "the run showed blocked while waiting"
    );
    assert_eq!(fx.store.run("run1").unwrap().status, RunStatus::Running);
    assert_eq!(
        std::fs::read_to_string(fx.base.join("out/count")).unwrap(),
        "ran\n"
    );

    let events = kinds(&*fx.store);
    for kind in [
        "model_call",
        "tool_call",
        "tool_decision",
        "tool_result",
        "approval_requested",
        "approval_answered",
    ] {
        assert!(events.iter().any(|k| k == kind), "{kind} in {events:?}");
    }
    let decisions: Vec<Value> = fx
        .store
        .events("run1", Some("review"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "tool_decision")
        .map(|e| e.data)
        .collect();
    let by: Vec<&str> = decisions
        .iter()
        .map(|d| d["decided_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        [
            "every policy",
            "plugin policy.wasm",
            "tools list",
            "grants",
            "plugin policy.wasm",
            "person",
            "plugin policy.wasm"
        ]
    );
    let model_call = fx
        .store
        .events("run1", Some("review"))
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "model_call")
        .unwrap();
    assert!(model_call.data["usage"]["prompt_tokens"].is_u64());
    assert_eq!(model_call.data["replayed"], false);
    fx.store.flush_observers();
    let events_file =
        std::fs::read_to_string(fx.store.run_files("run1").dir().join("events.jsonl")).unwrap();
    assert!(events_file.contains("\"tool_decision\""));

    // The process "crashes" here; attempt 2 replays the reply and the
    // results: the model is not called and no tool runs again, and the
    // answered approval is not asked again.
    drop(session);
    let approvals_before = fx.store.approvals(Some("run1"), true).unwrap().len();
    let again = open_session(context(&fx, 2)).unwrap();
    let (replayed, results2) = run_first_turn(&again, &rt);
    assert_eq!(replayed.message.content, completion.message.content);
    for (first, second) in results.iter().zip(&results2) {
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }
    assert_eq!(
        std::fs::read_to_string(fx.base.join("out/count")).unwrap(),
        "ran\n",
        "exec did not run again"
    );
    assert_eq!(
        fx.store.approvals(Some("run1"), true).unwrap().len(),
        approvals_before
    );
    let replayed_calls = fx
        .store
        .events("run1", Some("review"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "model_call" && e.data["replayed"] == true)
        .count();
    assert_eq!(replayed_calls, 1);

    // The next turn is live again: the script continues at reply 2.
    let mut messages = vec![user("review the code")];
    messages.push(replayed.message.clone());
    let next = rt
        .block_on(again.0.complete(messages, again.0.available()))
        .unwrap();
    assert_eq!(next.message.content, "Report written.");

    let transcript = transcript(&*fx.store, "run1", "review");
    let roles: Vec<&str> = transcript
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "assistant"]);
    assert_eq!(history(&*fx.store, "run1", "reviewer"), transcript);
}

#[test]
fn a_denial_by_a_person_holds_for_its_attempt_only() {
    let fx = fixture();
    let rt = rt();
    let session = open_session(context(&fx, 1)).unwrap();
    let answerer = answer_when_asked(fx.store.clone(), false);
    let args = r#"{"command": "echo hi"}"#;
    let denied = rt.block_on(session.0.invoke("c9".into(), "exec".into(), args.into()));
    answerer.join().unwrap();
    assert!(
        matches!(&denied, Err(ToolError::Denied(m)) if m == "denied by a person: not today"),
        "{denied:?}"
    );
    // The same call again in the same attempt (another call id, another
    // session of it) finds the answer without asking.
    let same = open_session(context(&fx, 1)).unwrap();
    let again = rt.block_on(same.0.invoke("c10".into(), "exec".into(), args.into()));
    assert!(matches!(&again, Err(ToolError::Denied(m)) if m.contains("not today")));
    assert_eq!(fx.store.approvals(Some("run1"), true).unwrap().len(), 1);
    // After the attempt ended (a `wfhost retry`, a new loop iteration: a
    // new attempt), the call is asked again, and this time approved.
    fx.store
        .start_attempt("run1", "review", 1, &json!({}))
        .unwrap();
    fx.store
        .finish_attempt(
            "run1",
            "review",
            1,
            crate::store::StepStatus::Completed,
            Ok(&json!({})),
        )
        .unwrap();
    let retry = open_session(context(&fx, 2)).unwrap();
    let answerer = answer_when_asked(fx.store.clone(), true);
    let ran = rt.block_on(retry.0.invoke("c9".into(), "exec".into(), args.into()));
    answerer.join().unwrap();
    assert!(matches!(&ran, Ok(text) if text.contains("hi")), "{ran:?}");
    let all = fx.store.approvals(Some("run1"), true).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].attempt, all[1].attempt), (1, 2));
}

#[test]
fn an_interrupted_effectful_call_is_not_repeated() {
    let fx = fixture();
    let rt = rt();
    fx.store
        .append_agent_record(&crate::store::NewAgentRecord {
            run_id: "run1",
            step_id: "review",
            agent_id: "reviewer",
            attempt: 1,
            kind: record::kinds::TOOL_STARTED,
            key: "c1",
            payload: &json!({"tool": "exec", "arguments": r#"{"command":"echo ran >> out/count"}"#}),
        })
        .unwrap();
    let session = open_session(context(&fx, 2)).unwrap();
    let out = rt.block_on(session.0.invoke(
        "c1".into(),
        "exec".into(),
        r#"{"command": "echo ran >> out/count"}"#.into(),
    ));
    assert!(
        matches!(&out, Err(ToolError::Failed(m)) if m.contains("not run again")),
        "{out:?}"
    );
    assert!(!fx.base.join("out/count").exists());
}

#[test]
fn configuration_problems_fail_the_session() {
    let fx = fixture();
    let mut ctx = context(&fx, 1);
    ctx.agent.model = ModelSpec::Scripted {
        script: "missing.yaml".into(),
    };
    let error = open_session(ctx).err().unwrap();
    assert!(
        error.contains("agent 'reviewer'") && error.contains("missing.yaml"),
        "{error}"
    );
    let mut ctx = context(&fx, 1);
    ctx.agent.model = ModelSpec::Openai {
        base_url: "http://127.0.0.1:9".into(),
        model: "m".into(),
        api_key_env: None,
        timeout: Some("soon".into()),
    };
    assert!(open_session(ctx).err().unwrap().contains("timeout"));
    assert!(Path::new(&fx.base).exists());
}

#[test]
fn history_prefers_the_step_output_messages() {
    let fx = fixture();
    let rt = rt();
    let session = open_session(context(&fx, 1)).unwrap();
    rt.block_on(session.0.complete(vec![user("hi")], vec![]))
        .unwrap();
    fx.store
        .start_attempt("run1", "review", 1, &json!({}))
        .unwrap();
    let messages =
        json!([{"role": "user", "content": "hi", "tool_calls": [], "tool_call_id": null}]);
    fx.store
        .finish_attempt(
            "run1",
            "review",
            1,
            crate::store::StepStatus::Completed,
            Ok(&json!({"text": "x", "messages": messages})),
        )
        .unwrap();
    assert_eq!(
        Value::Array(history(&*fx.store, "run1", "reviewer")),
        messages
    );
    assert!(history(&*fx.store, "run1", "nobody").is_empty());
}

#[test]
fn policies_see_the_path_behind_symlinks() {
    let fx = fixture();
    let rt = rt();
    let base = &fx.base;
    std::fs::create_dir_all(base.join("src/secret")).unwrap();
    std::fs::create_dir_all(base.join("keep")).unwrap();
    std::fs::write(base.join("src/secret/key.txt"), "hunter2").unwrap();
    std::fs::write(base.join("keep/k.txt"), "kept").unwrap();
    std::os::unix::fs::symlink("secret", base.join("src/notes")).unwrap();
    std::os::unix::fs::symlink("../keep", base.join("out/link")).unwrap();
    std::os::unix::fs::symlink("/etc", base.join("out/etc")).unwrap();
    let mut ctx = context(&fx, 1);
    ctx.grants.files.push((base.join("keep"), true));
    ctx.agent.policy = vec![PolicySpec {
        rules: Some(crate::workflow::model::Rules {
            allow: vec![
                "read(src/**)".into(),
                "read(out/**)".into(),
                "write(out/**)".into(),
            ],
            ask: vec![],
            deny: vec!["read(src/secret/**)".into(), "write(keep/**)".into()],
        }),
        plugin: None,
        config: None,
    }];
    let session = open_session(ctx).unwrap();
    let call = |name: &str, args: Value| {
        rt.block_on(
            session
                .0
                .clone()
                .invoke("c".into(), name.into(), args.to_string()),
        )
    };
    // A link to a denied directory is denied by the rule for its target.
    let out = call("read_file", json!({"path": "src/notes/key.txt"}));
    assert!(
        matches!(&out, Err(ToolError::Denied(m)) if m.contains("read(src/secret/**)") && m.contains("src/secret/key.txt")),
        "{out:?}"
    );
    // `write(out/**)` does not cover a write through out/link into keep/.
    let out = call(
        "write_file",
        json!({"path": "out/link/k.txt", "content": "x"}),
    );
    assert!(
        matches!(&out, Err(ToolError::Denied(m)) if m.contains("write(keep/**)")),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("keep/k.txt")).unwrap(),
        "kept"
    );
    // A link out of every root: the grants refuse the target.
    let out = call("read_file", json!({"path": "out/etc/passwd"}));
    assert!(
        matches!(&out, Err(ToolError::Denied(m)) if m.contains("no files grant covers /etc/passwd")),
        "{out:?}"
    );
    // Plain paths still work, and a FIFO is refused without hanging.
    let out = call(
        "write_file",
        json!({"path": "out/ok.txt", "content": "fine"}),
    );
    assert!(out.is_ok(), "{out:?}");
    let fifo = std::ffi::CString::new(base.join("out/fifo").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let out = call("read_file", json!({"path": "out/fifo"}));
    assert!(
        matches!(&out, Err(ToolError::Failed(m)) if m.contains("a FIFO: only regular files")),
        "{out:?}"
    );
    // What the policies saw is in the audit: the resolved path.
    let decisions: Vec<Value> = fx
        .store
        .events("run1", Some("review"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "tool_decision")
        .map(|e| e.data)
        .collect();
    assert!(decisions.iter().any(|d| d["reason"]
        .as_str()
        .is_some_and(|r| r.contains("keep/k.txt"))));
}

#[test]
fn an_effectful_call_whose_start_cannot_be_recorded_does_not_run() {
    let fx = fixture();
    let rt = rt();
    // The store refuses the "started" record (as a full disk would).
    let db = rusqlite::Connection::open(fx.base.join(".wfhost/wfhost.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_start BEFORE INSERT ON agent_records
         WHEN NEW.kind = 'tool_started' BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    let mut ctx = context(&fx, 1);
    ctx.agent.policy = vec![PolicySpec {
        rules: Some(crate::workflow::model::Rules {
            allow: vec!["write(out/**)".into(), "read".into()],
            ask: vec![],
            deny: vec![],
        }),
        plugin: None,
        config: None,
    }];
    let session = open_session(ctx).unwrap();
    let out = rt.block_on(session.0.clone().invoke(
        "c1".into(),
        "write_file".into(),
        json!({"path": "out/x.txt", "content": "x"}).to_string(),
    ));
    assert!(
        matches!(&out, Err(ToolError::Failed(m)) if m.contains("was not run") && m.contains("disk full")),
        "{out:?}"
    );
    assert!(!fx.base.join("out/x.txt").exists());
    // A call without effect needs no such record.
    let read = rt.block_on(session.0.clone().invoke(
        "c2".into(),
        "read_file".into(),
        json!({"path": "src/a.rs"}).to_string(),
    ));
    assert!(read.is_ok(), "{read:?}");
}
