//! One test suite for every store backend: each test takes a [`Backend`]
//! (a way to open handles on one fresh store) and is run against SQLite
//! and against PostgreSQL (a throw-away server, see
//! `tests/support/postgres.rs`).

use std::sync::Arc;

use serde_json::json;

use crate::store::*;

/// Opens a handle on the store for a home.
type OpenStore = dyn Fn(&std::path::Path) -> Arc<dyn EngineStore> + Send + Sync;

/// Opens handles on one fresh store, as the app opens them (with the
/// run-folder mirror).
pub(crate) struct Backend {
    /// Keeps the home (and SQLite database) alive.
    pub dir: tempfile::TempDir,
    open: Box<OpenStore>,
    /// Makes a run's heartbeat old, as if its driver had stopped beating.
    age_heartbeat: Box<dyn Fn(&str) + Send + Sync>,
    /// The database's URL (PostgreSQL).
    url: String,
}

impl Backend {
    /// A new handle on the store (another process, as far as leases go).
    pub fn open(&self) -> Arc<dyn EngineStore> {
        (self.open)(&self.dir.path().join("home"))
    }
}

/// A fresh SQLite store.
pub(crate) fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("home").join("wfhost.db");
    Backend {
        dir,
        open: Box::new(|home| open(home, Durability::Normal).unwrap()),
        age_heartbeat: Box::new(move |run_id| sqlite::age_heartbeat(&db, run_id)),
        url: String::new(),
    }
}

#[path = "../../../tests/support/postgres.rs"]
pub(crate) mod scratch_postgres;

/// A fresh PostgreSQL database on the test process's throw-away server.
pub(crate) fn postgres() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = scratch_postgres::fresh_database();
    let admin_url = url.clone();
    Backend {
        url: url.clone(),
        dir,
        open: Box::new(move |home| open_postgres(&url, home, Durability::Normal).unwrap()),
        age_heartbeat: Box::new(move |run_id| {
            let mut client = ::postgres::Client::connect(&admin_url, ::postgres::NoTls).unwrap();
            client
                .execute(
                    "UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = $1",
                    &[&run_id],
                )
                .unwrap();
        }),
    }
}

fn create(store: &dyn EngineStore, id: &str) {
    store
        .create_run(&NewRun {
            id,
            workflow_name: "wf",
            workflow_path: "wf.yaml",
            workflow_dir: "/tmp",
            definition: "name: wf\n",
            args: &json!({"x": 1}),
            steps: &["a", "b"],
            triggered_by: Some("cron"),
            priority: 3,
        })
        .unwrap();
}

fn kinds(events: Vec<EventRecord>) -> Vec<String> {
    events.into_iter().map(|e| e.kind).collect()
}

/// A run, its attempts, statuses and journal round-trip.
pub(crate) fn a_run_and_its_attempts_round_trip(backend: Backend) {
    let store = backend.open();
    create(&*store, "abc123");
    let run = store.run("abc123").unwrap();
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(run.definition, "name: wf\n");
    assert_eq!(run.definition_hash, definition_hash("name: wf\n"));
    assert_eq!(run.args, json!({"x": 1}));
    assert_eq!(
        (run.triggered_by.as_deref(), run.priority),
        (Some("cron"), 3)
    );

    store
        .set_run_status("abc123", RunStatus::Running, None)
        .unwrap();
    store
        .start_attempt("abc123", "a", 1, &json!({"config": {}}))
        .unwrap();
    let steps = store.steps("abc123").unwrap();
    assert_eq!(steps[0].status, StepStatus::Running);
    assert_eq!(steps[0].attempts, 1);
    store
        .finish_attempt(
            "abc123",
            "a",
            1,
            StepStatus::Completed,
            Ok(&json!({"n": 5})),
        )
        .unwrap();
    store.skip_step("abc123", "b", "because").unwrap();
    store
        .set_run_status("abc123", RunStatus::Completed, None)
        .unwrap();

    let steps = store.steps("abc123").unwrap();
    assert_eq!(steps[0].output, Some(json!({"n": 5})));
    assert!(steps[0].started_at.is_some() && steps[0].finished_at.is_some());
    assert_eq!(steps[1].status, StepStatus::Skipped);
    assert_eq!(steps[1].error.as_deref(), Some("because"));
    let run = store.run("abc123").unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run.finished_at.is_some());
    assert_eq!(
        kinds(store.events("abc123", None).unwrap()),
        [
            "run_created",
            "run_status",
            "step_started",
            "step_completed",
            "step_skipped",
            "run_status"
        ]
    );
    assert_eq!(store.events("abc123", Some("a")).unwrap().len(), 2);
    assert_eq!(store.last_completed_attempt("abc123", "a").unwrap(), 1);
    assert_eq!(
        store.latest_inputs("abc123").unwrap()["a"],
        json!({"config": {}})
    );
    let latest = store.latest_event("abc123", "run_status").unwrap().unwrap();
    assert_eq!(latest["status"], "completed");
    // The mirror follows the journal into the run folder.
    store.flush_observers();
    let events = std::fs::read_to_string(store.run_files("abc123").dir().join("events.jsonl"));
    assert_eq!(events.unwrap().lines().count(), 6);
}

/// Retries, attempt limits, `for_each` items, loops, resets and upgrades.
pub(crate) fn retries_items_resets_and_upgrades(backend: Backend) {
    let store = backend.open();
    create(&*store, "r1");
    store.set_max_attempts("r1", &[("a", 3)]).unwrap();
    store
        .start_attempt("r1", "a", 1, &json!({"try": 1}))
        .unwrap();
    store
        .schedule_retry("r1", "a", 1, "flaky", "2030-01-01T00:00:00.000Z")
        .unwrap();
    let a = &store.steps("r1").unwrap()[0];
    assert_eq!(
        (a.status, a.max_attempts, a.error.as_deref()),
        (StepStatus::Retrying, 3, Some("flaky"))
    );
    assert_eq!(
        a.next_attempt_at.as_deref(),
        Some("2030-01-01T00:00:00.000Z")
    );
    store
        .start_attempt("r1", "a", 2, &json!({"try": 2}))
        .unwrap();
    assert_eq!(store.latest_inputs("r1").unwrap()["a"], json!({"try": 2}));
    store.finish_item("r1", "a", 2, 0, Ok(&json!(1))).unwrap();
    store
        .finish_item("r1", "a", 2, 1, Err("item broke"))
        .unwrap();
    store
        .apply(
            "r1",
            &[
                Change::FinishAttempt {
                    step: "a",
                    attempt: 2,
                    status: StepStatus::Completed,
                    outcome: Ok(&json!([1])),
                },
                Change::Event {
                    step: "a",
                    kind: "step_loop",
                    data: &json!({"to": "a"}),
                },
            ],
        )
        .unwrap();
    assert_eq!(store.loops("r1", "a").unwrap(), 1);
    assert_eq!(store.last_completed_attempt("r1", "a").unwrap(), 2);
    store.reset_step("r1", "a", "retry from a").unwrap();
    let a = &store.steps("r1").unwrap()[0];
    assert_eq!(
        (a.status, a.output.is_none(), a.attempts),
        (StepStatus::Pending, true, 2)
    );
    store
        .set_step_status("r1", "b", StepStatus::Interrupted, Some("crashed"))
        .unwrap();
    assert_eq!(
        store.steps("r1").unwrap()[1].status,
        StepStatus::Interrupted
    );

    store
        .upgrade_definition("r1", "name: wf2\n", &["b", "c"], &json!({"added": ["c"]}))
        .unwrap();
    let steps = store.steps("r1").unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    // A kept step keeps its record (moved to its new place); a new one
    // starts pending.
    assert_eq!(
        (steps[0].status, steps[1].status),
        (StepStatus::Interrupted, StepStatus::Pending)
    );
    assert_eq!(store.run("r1").unwrap().definition, "name: wf2\n");
    let checkpoints = store.checkpoints("r1").unwrap();
    assert!(checkpoints.iter().any(|c| c.kind == "step_completed"));
    let seq = checkpoints[0].seq;
    assert_eq!(store.checkpoint_run(seq).unwrap().as_deref(), Some("r1"));
    assert_eq!(store.checkpoint_run(i64::MAX).unwrap(), None);
}

/// A driver that lost its lease can write nothing more.
pub(crate) fn a_driver_that_lost_its_lease_can_write_nothing_more(backend: Backend) {
    let first = backend.open();
    create(&*first, "run1");
    assert!(first.claim_run("run1", 1).unwrap());
    first.start_attempt("run1", "a", 1, &json!({})).unwrap();
    first.heartbeat("run1").unwrap();
    let second = backend.open();
    // pid 1 is alive and the heartbeat fresh: the run is held.
    assert!(!second.claim_run("run1", 2).unwrap());
    // The holder stops beating (SIGSTOP): its lease runs out.
    (backend.age_heartbeat)("run1");
    assert!(second.run("run1").unwrap().stale);
    assert!(second.claim_run("run1", 2).unwrap());
    second.start_attempt("run1", "a", 2, &json!({})).unwrap();

    let lost =
        |result: Result<()>| assert!(matches!(result, Err(StoreError::LeaseLost)), "{result:?}");
    assert!(!first.holds_lease("run1").unwrap());
    assert!(second.holds_lease("run1").unwrap());
    lost(first.heartbeat("run1"));
    lost(first.start_attempt("run1", "b", 1, &json!({})));
    lost(first.finish_attempt(
        "run1",
        "a",
        1,
        StepStatus::Completed,
        Ok(&json!({"late": true})),
    ));
    lost(first.set_run_status("run1", RunStatus::Failed, Some("late")));
    lost(first.append_event("run1", None, "log", &json!({})));
    let steps = second.steps("run1").unwrap();
    assert_eq!(steps[0].status, StepStatus::Running);
    assert_eq!(steps[0].attempts, 2);
    assert_eq!(steps[1].status, StepStatus::Pending);
    assert_eq!(second.run("run1").unwrap().status, RunStatus::Running);
    second
        .finish_attempt("run1", "a", 2, StepStatus::Completed, Ok(&json!({})))
        .unwrap();
    create(&*first, "run2");
    first.start_attempt("run2", "a", 1, &json!({})).unwrap();
    // Someone without a lease may still ask the holder to stop.
    let third = backend.open();
    third.set_request("run1", Some("pause")).unwrap();
    assert_eq!(second.request("run1").unwrap().as_deref(), Some("pause"));
}

/// Run ids resolve by unique prefix; pruning removes finished runs whole.
pub(crate) fn run_ids_resolve_and_prune_removes_history(backend: Backend) {
    let store = backend.open();
    for id in ["aa11", "aa22", "bb33"] {
        create(&*store, id);
    }
    assert_eq!(store.resolve_run_id("b").unwrap(), "bb33");
    assert_eq!(store.resolve_run_id("aa2").unwrap(), "aa22");
    let ambiguous = store.resolve_run_id("aa").unwrap_err().to_string();
    assert!(
        ambiguous.contains("ambiguous") && ambiguous.contains("aa11"),
        "{ambiguous}"
    );
    let unknown = store.resolve_run_id("zz").unwrap_err().to_string();
    assert_eq!(unknown, "no run matches 'zz' (see `wfhost runs`)");
    assert_eq!(store.runs().unwrap().len(), 3);

    store.start_attempt("aa11", "a", 1, &json!({})).unwrap();
    store
        .add_comment("aa11", None, "ann", "looks fine")
        .unwrap();
    store
        .add_artifact("aa11", "a", "report.txt", 3, &"0".repeat(64), "text/plain")
        .unwrap();
    store
        .set_run_status("aa11", RunStatus::Completed, None)
        .unwrap();
    assert_eq!(store.prune("9999-01-01T00:00:00Z").unwrap(), ["aa11"]);
    assert!(matches!(store.run("aa11"), Err(StoreError::UnknownRun(_))));
    assert!(store.events("aa11", None).unwrap().is_empty());
    assert!(store.comments("aa11").unwrap().is_empty());
    assert_eq!(store.runs().unwrap().len(), 2);
}

/// Approvals: asked, answered once, per attempt; a blocked run waiting for
/// one is still driven.
pub(crate) fn approvals_round_trip(backend: Backend) {
    let store = backend.open();
    create(&*store, "r1");
    let arguments = r#"{"command":"cargo test"}"#;
    let hash = call_hash("exec", arguments);
    let ask = |attempt: u32| NewApproval {
        run_id: "r1",
        step_id: "a",
        agent_id: "rev",
        attempt,
        iteration: 0,
        call_hash: &hash,
        call_id: "c1",
        tool: "exec",
        arguments,
        prompt: "run tests?",
    };
    assert!(store.claim_run("r1", 1).unwrap());
    let asked = store.create_approval(&ask(1)).unwrap();
    assert_eq!(asked.status, ApprovalStatus::Pending);
    assert_eq!(store.pending_approvals("r1").unwrap(), 1);
    assert_eq!(store.approvals(None, false).unwrap()[0].id, asked.id);
    let found = store
        .find_approval("r1", "a", (1, 0), &hash)
        .unwrap()
        .unwrap();
    assert_eq!(found.id, asked.id);
    assert!(store
        .find_approval("r1", "a", (2, 0), &hash)
        .unwrap()
        .is_none());
    store
        .set_run_status("r1", RunStatus::Blocked, None)
        .unwrap();
    let other = backend.open();
    assert!(
        !other.claim_run("r1", std::process::id()).unwrap(),
        "its driver waits for the answer"
    );

    let again = store.create_approval(&ask(2)).unwrap();
    let old = store.approval(asked.id).unwrap().unwrap();
    assert_eq!(old.status, ApprovalStatus::Denied);
    assert!(old
        .note
        .unwrap()
        .contains(&format!("approval {}", again.id)));

    let answered = other
        .answer_approval("r1", again.id, true, Some("fine"))
        .unwrap()
        .unwrap();
    assert_eq!(answered.status, ApprovalStatus::Approved);
    assert!(answered.answered_at.is_some());
    let twice = other
        .answer_approval("r1", again.id, false, None)
        .unwrap()
        .unwrap_err();
    assert!(twice.contains("already approved"), "{twice}");
    let missing = other
        .answer_approval("r1", 999, true, None)
        .unwrap()
        .unwrap_err();
    assert!(missing.contains("has no approval 999"), "{missing}");
    assert_eq!(store.approvals(Some("r1"), true).unwrap().len(), 2);
    assert!(
        other.claim_run("r1", std::process::id()).unwrap(),
        "nothing pending: claimable"
    );

    for (kind, key) in [("completion", "h1"), ("tool_result", "c1")] {
        other
            .append_agent_record(&NewAgentRecord {
                run_id: "r1",
                step_id: "a",
                agent_id: "rev",
                attempt: 1,
                kind,
                key,
                payload: &json!({"k": key}),
            })
            .unwrap();
    }
    let records = other.agent_records("r1", Some("a"), None).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload, json!({"k": "c1"}));
    assert!(other
        .agent_records("r1", None, Some("x"))
        .unwrap()
        .is_empty());
    assert_eq!(call_hash("a", "b").len(), 64);
    assert_ne!(call_hash("a", "bc"), call_hash("ab", "c"));
}

/// The journal across runs: sequence numbers grow in commit order, with no
/// gap a reader could skip, even with several writers at once.
pub(crate) fn the_journal_is_ordered_across_writers(backend: Backend) {
    let store = backend.open();
    for id in ["w0", "w1", "w2", "w3"] {
        create(&*store, id);
    }
    let before = store.latest_seq().unwrap();
    std::thread::scope(|scope| {
        for id in ["w0", "w1", "w2", "w3"] {
            let store = backend.open();
            scope.spawn(move || {
                for n in 0..25 {
                    store
                        .append_event(id, None, "log", &json!({ "n": n }))
                        .unwrap();
                }
            });
        }
        // A follower reading `seq > after` while they write sees every
        // event exactly once, in order.
        let mut seen = Vec::new();
        let mut after = before;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < 100 && std::time::Instant::now() < deadline {
            for (run, event) in store.events_since(after, 7).unwrap() {
                assert!(event.seq > after);
                after = event.seq;
                seen.push((run, event.data["n"].as_i64().unwrap()));
            }
        }
        assert_eq!(seen.len(), 100);
        for id in ["w0", "w1", "w2", "w3"] {
            let ns: Vec<i64> = seen
                .iter()
                .filter(|(r, _)| r == id)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(ns, (0..25).collect::<Vec<_>>(), "{id}");
        }
    });
    assert_eq!(store.events_after("w2", before).unwrap().len(), 25);
    assert!(store.latest_seq().unwrap() >= before + 100);
}

/// Text a hostile step wrote (NUL characters included) is kept, and notes,
/// comments and tokens round-trip.
pub(crate) fn hostile_text_notes_and_tokens(backend: Backend) {
    let store = backend.open();
    create(&*store, "r1");
    store
        .start_attempt("r1", "a", 1, &json!({"s": "a\u{0}b"}))
        .unwrap();
    store
        .finish_attempt("r1", "a", 1, StepStatus::Failed, Err("bad\u{0}byte"))
        .unwrap();
    let a = &store.steps("r1").unwrap()[0];
    assert_eq!(a.status, StepStatus::Failed);
    assert!(a.error.as_deref().unwrap().starts_with("bad"));
    assert_eq!(
        store.latest_inputs("r1").unwrap()["a"],
        json!({"s": "a\u{0}b"})
    );
    store
        .append_event("r1", Some("a"), "log", &json!({"message": "\u{0}"}))
        .unwrap();

    let comment = store
        .add_comment("r1", Some("a"), "ann", "why\u{0}?")
        .unwrap();
    assert!(comment.id > 0);
    assert_eq!(store.comments("r1").unwrap().len(), 1);
    let id = store
        .add_artifact(
            "r1",
            "a",
            "out.json",
            10,
            &"a".repeat(64),
            "application/json",
        )
        .unwrap();
    let artifacts = store.artifacts("r1", Some("a")).unwrap();
    assert_eq!(
        (artifacts.len(), artifacts[0].id, artifacts[0].size),
        (1, id, 10)
    );
    assert!(store.artifacts("r1", Some("b")).unwrap().is_empty());
    // A store shared by several machines keeps the content itself.
    store
        .put_artifact_content("r1", &"a".repeat(64), b"\0bytes")
        .unwrap();
    let content = store.artifact_content("r1", &"a".repeat(64)).unwrap();
    if store.keeps_artifact_content() {
        assert_eq!(content.as_deref(), Some(&b"\0bytes"[..]));
    } else {
        assert_eq!(content, None, "the run folder keeps it");
    }

    assert_eq!(store.token_count().unwrap(), 0);
    store.add_token("ci", &"f".repeat(64)).unwrap();
    assert!(store.token_known(&"f".repeat(64)).unwrap());
    assert!(!store.token_known(&"e".repeat(64)).unwrap());
    assert_eq!(store.token_count().unwrap(), 1);
}

/// Run every test of the suite against one backend.
macro_rules! suite {
    ($backend:path) => {
        #[test]
        fn a_run_and_its_attempts_round_trip() {
            super::a_run_and_its_attempts_round_trip($backend());
        }
        #[test]
        fn retries_items_resets_and_upgrades() {
            super::retries_items_resets_and_upgrades($backend());
        }
        #[test]
        fn a_driver_that_lost_its_lease_can_write_nothing_more() {
            super::a_driver_that_lost_its_lease_can_write_nothing_more($backend());
        }
        #[test]
        fn run_ids_resolve_and_prune_removes_history() {
            super::run_ids_resolve_and_prune_removes_history($backend());
        }
        #[test]
        fn approvals_round_trip() {
            super::approvals_round_trip($backend());
        }
        #[test]
        fn the_journal_is_ordered_across_writers() {
            super::the_journal_is_ordered_across_writers($backend());
        }
        #[test]
        fn hostile_text_notes_and_tokens() {
            super::hostile_text_notes_and_tokens($backend());
        }
    };
}

mod on_sqlite {
    suite!(super::sqlite);
}

mod on_postgres {
    suite!(super::postgres);

    #[test]
    fn a_database_that_cannot_be_reached_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://wf:secret@127.0.0.1:{port}/wf");
        let error = crate::store::open_postgres(&url, dir.path(), crate::store::Durability::Normal)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("cannot reach PostgreSQL at"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn a_run_driven_on_another_machine_is_held_while_it_beats() {
        let backend = super::postgres();
        let url = backend.url.clone();
        let store = backend.open();
        super::create(&*store, "r1");
        assert!(store.claim_run("r1", 1).unwrap());
        // Driven elsewhere: a pid that does not exist here, a fresh heartbeat.
        let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        admin
            .execute(
                "UPDATE runs SET driver_host = 'another-machine', driver_pid = $1 WHERE id = 'r1'",
                &[&i64::from(i32::MAX)],
            )
            .unwrap();
        let here = backend.open();
        let run = here.run("r1").unwrap();
        assert!(!run.stale, "its heartbeat is fresh");
        assert!(!here.claim_run("r1", std::process::id()).unwrap());
        (backend.age_heartbeat)("r1");
        assert!(here.run("r1").unwrap().stale);
        assert!(here.claim_run("r1", std::process::id()).unwrap());
    }

    #[test]
    fn two_processes_migrating_a_fresh_database_at_once_agree() {
        let url = super::scratch_postgres::fresh_database();
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for n in 0..4 {
                let (url, home) = (&url, dir.path().join(format!("h{n}")));
                scope.spawn(move || {
                    crate::store::open_postgres(url, &home, crate::store::Durability::Normal)
                        .unwrap()
                });
            }
        });
        let store = crate::store::open_postgres(&url, dir.path(), crate::store::Durability::Normal)
            .unwrap();
        assert!(store.runs().unwrap().is_empty());
    }

    #[test]
    fn the_step_queue_hands_each_task_to_one_claim_and_fences_the_rest() {
        use crate::store::tasks::{NewTask, TaskState};
        use std::time::Duration;
        let backend = super::postgres();
        let store = backend.open();
        super::create(&*store, "r1");
        let queue = store.step_queue().expect("PostgreSQL has a queue");
        let payload = serde_json::json!({ "config": { "ms": 1 } });
        let gpu = vec!["gpu".to_string()];
        let plain = queue
            .enqueue_task(&NewTask {
                run_id: "r1",
                step_id: "a",
                attempt: 1,
                labels: &[],
                payload: &payload,
            })
            .unwrap();
        let labelled = queue
            .enqueue_task(&NewTask {
                run_id: "r1",
                step_id: "b",
                attempt: 1,
                labels: &gpu,
                payload: &payload,
            })
            .unwrap();
        let lease = Duration::from_secs(30);
        // A worker without the label gets only the plain task, once.
        let first = queue.claim_task("w1", &[], lease).unwrap().unwrap();
        assert_eq!(
            (first.id, first.token, first.payload.clone()),
            (plain, 1, payload.clone())
        );
        assert!(queue.claim_task("w1", &[], lease).unwrap().is_none());
        let second = queue
            .claim_task("w2", &["gpu".into(), "x".into()], lease)
            .unwrap()
            .unwrap();
        assert_eq!(second.id, labelled);
        assert_eq!(
            queue.task_state(plain).unwrap(),
            TaskState::Running {
                worker: "w1".into(),
                token: 1,
                expired: false
            }
        );
        // Lost: the claim's lease runs out, the task is queued again and
        // claimed anew; the old claim can neither renew nor finish.
        let short = queue.claim_task("w3", &[], Duration::ZERO).unwrap();
        assert!(short.is_none());
        assert!(!queue.requeue_task(plain, 7).unwrap(), "wrong token");
        assert!(queue.requeue_task(plain, 1).unwrap());
        let again = queue.claim_task("w3", &[], lease).unwrap().unwrap();
        assert_eq!((again.id, again.token), (plain, 2));
        assert!(!queue.renew_task(plain, 1, lease).unwrap());
        assert!(!queue
            .finish_task(plain, 1, &serde_json::json!({"output": 1}))
            .unwrap());
        assert!(queue.renew_task(plain, 2, lease).unwrap());
        assert!(queue
            .finish_task(plain, 2, &serde_json::json!({"output": 2}))
            .unwrap());
        assert_eq!(
            queue.task_state(plain).unwrap(),
            TaskState::Done(serde_json::json!({"output": 2}))
        );
        // An expired claim shows as such.
        let mut admin = ::postgres::Client::connect(&backend.url, ::postgres::NoTls).unwrap();
        admin
            .execute(
                "UPDATE step_tasks SET lease_until = now() - interval '1 second' WHERE id = $1",
                &[&labelled],
            )
            .unwrap();
        assert!(matches!(
            queue.task_state(labelled).unwrap(),
            TaskState::Running { expired: true, .. }
        ));
        // A new driver of the run cancels what is left; a cancelled task
        // cannot be finished.
        assert_eq!(queue.cancel_tasks_of("r1").unwrap(), 1);
        assert_eq!(queue.task_state(labelled).unwrap(), TaskState::Cancelled);
        assert!(!queue
            .finish_task(labelled, 1, &serde_json::json!({"output": 3}))
            .unwrap());
        assert_eq!(queue.task_state(99_999).unwrap(), TaskState::Missing);
        // Hostile text in a payload round-trips (JSON escapes NUL).
        let nul = serde_json::json!({ "config": "a\u{0}b" });
        let id = queue
            .enqueue_task(&NewTask {
                run_id: "r1",
                step_id: "a",
                attempt: 2,
                labels: &[],
                payload: &nul,
            })
            .unwrap();
        let claimed = queue.claim_task("w1", &[], lease).unwrap().unwrap();
        assert_eq!(claimed.id, id);
        assert_eq!(claimed.payload["config"], "a\u{0}b");
    }

    #[test]
    fn concurrent_claims_never_share_a_task() {
        use crate::store::tasks::NewTask;
        use std::time::Duration;
        let backend = super::postgres();
        let store = backend.open();
        super::create(&*store, "r1");
        let queue = store.step_queue().unwrap();
        for n in 0..40 {
            queue
                .enqueue_task(&NewTask {
                    run_id: "r1",
                    step_id: "a",
                    attempt: n + 1,
                    labels: &[],
                    payload: &serde_json::json!({}),
                })
                .unwrap();
        }
        let claimed = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for w in 0..4 {
                let (backend, claimed) = (&backend, &claimed);
                scope.spawn(move || {
                    let store = backend.open();
                    let queue = store.step_queue().unwrap();
                    while let Some(task) = queue
                        .claim_task(&format!("w{w}"), &[], Duration::from_secs(30))
                        .unwrap()
                    {
                        claimed.lock().unwrap().push(task.id);
                    }
                });
            }
        });
        let mut ids = claimed.into_inner().unwrap();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!((before, ids.len()), (40, 40));
    }
}
