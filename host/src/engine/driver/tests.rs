//! The engine against an in-memory executor and a real SQLite store:
//! no wasm involved.

use super::*;
use crate::step::executor::BoxFuture;
use crate::step::executor::{FailureKind, StepFailure, StepInvocation, StepObserver};
use crate::store::StepStatus;
use crate::workflow::{load_from_source, Format};
use serde_json::json;
use std::sync::Mutex;

/// Echoes each step's config; fails steps whose config has `fail`.
#[derive(Default)]
struct FakeExecutor {
    seen: Mutex<Vec<StepInvocation>>,
    /// What was committed as each step began running.
    committed: Arc<CommittedAtStart>,
}

/// Per step run, the steps' statuses another connection to the store's
/// database saw as the step began running.
#[derive(Default)]
struct CommittedAtStart {
    database: std::sync::OnceLock<std::path::PathBuf>,
    seen: Mutex<Vec<(String, Statuses)>>,
}

/// Steps' ids and statuses.
type Statuses = Vec<(String, String)>;

impl CommittedAtStart {
    /// Read the steps' statuses, as committed, for `step`.
    fn record(&self, step: &str) {
        let Some(database) = self.database.get() else {
            return;
        };
        let db = rusqlite::Connection::open(database).unwrap();
        let mut statement = db
            .prepare("SELECT step_id, status FROM steps ORDER BY step_id")
            .unwrap();
        let statuses = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        self.seen.lock().unwrap().push((step.to_string(), statuses));
    }
}

impl StepExecutor for FakeExecutor {
    fn execute(
        &self,
        invocation: StepInvocation,
        observer: Arc<dyn StepObserver>,
    ) -> BoxFuture<Result<Value, StepFailure>> {
        let tries = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(invocation.clone());
            seen.iter()
                .filter(|i| i.step_id == invocation.step_id && i.config == invocation.config)
                .count()
        };
        let committed = self.committed.clone();
        Box::pin(async move {
            committed.record(&invocation.step_id);
            if invocation.config.get("panic") == Some(&Value::Bool(true)) {
                panic!("boom in {}", invocation.step_id);
            }
            if invocation.config.get("flaky_once") == Some(&Value::Bool(true)) && tries == 1 {
                return Err(StepFailure {
                    kind: FailureKind::Transient,
                    message: "flaky".into(),
                });
            }
            observer.log(LogLevel::Info, &format!("running {}", invocation.step_id));
            for _ in 0..invocation
                .config
                .get("spam")
                .and_then(Value::as_u64)
                .unwrap_or(0)
            {
                observer.log(LogLevel::Info, &"x".repeat(40));
            }
            if let Some(message) = invocation.config.get("fail").and_then(Value::as_str) {
                return Err(StepFailure::permanent(message));
            }
            Ok(invocation.config)
        })
    }
}

fn run(
    yaml: &str,
) -> (
    tempfile::TempDir,
    Arc<dyn EngineStore>,
    Arc<FakeExecutor>,
    RunOutcome,
) {
    let dir = tempfile::tempdir().unwrap();
    let workflow =
        load_from_source(yaml, "test.yaml", dir.path(), Format::Yaml, &["echo"]).unwrap();
    let store = crate::store::open(&dir.path().join("home"), Default::default()).unwrap();
    let executor = Arc::new(FakeExecutor::default());
    let database = store.home().join("wfhost.db");
    executor.committed.database.set(database).unwrap();
    let driver = Driver::new(store.clone(), executor.clone(), Arc::new(Silent));
    let args = json!({});
    let run_id = driver.create_run(&workflow, &args).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime
        .block_on(driver.drive(&run_id, &workflow, &args))
        .unwrap();
    (dir, store, executor, outcome)
}

fn statuses(store: &dyn EngineStore, run_id: &str) -> Vec<(String, StepStatus)> {
    store
        .steps(run_id)
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.status))
        .collect()
}

/// The step `solo` failed with its task's panic.
fn assert_panicked_solo(steps: &[crate::store::StepRecord]) {
    let solo = steps.iter().find(|s| s.id == "solo").unwrap();
    assert!(
        solo.error
            .as_deref()
            .unwrap()
            .contains("the step's task panicked: boom in solo"),
        "{solo:?}"
    );
}

/// A step that starts while nothing else runs is polled by the run loop
/// itself (see `run_loop::tasks`): its panic is caught there and fails it
/// with the same reason, and the steps after it in a chain still run.
#[test]
fn a_lone_step_that_panics_fails_with_the_reason_and_the_chain_goes_on() {
    let (_dir, store, _, outcome) = run(
        "name: p\nsteps:\n  - id: first\n    type: function\n    component: echo\n    with: {x: 1}\n  - id: solo\n    type: function\n    component: echo\n    needs: [first]\n    with: {panic: true}\n    continue_on_error: true\n  - id: last\n    type: function\n    component: echo\n    needs: [solo]\n    with: {x: 2}\n",
    );
    let steps = store.steps(&outcome.run_id).unwrap();
    let solo = steps.iter().find(|s| s.id == "solo").unwrap();
    assert_eq!(solo.status, StepStatus::Failed);
    assert_panicked_solo(&steps);
    assert_eq!(
        steps.iter().find(|s| s.id == "last").unwrap().status,
        StepStatus::Completed
    );
}

#[test]
fn a_panicking_step_or_item_fails_with_the_reason_and_the_run_goes_on() {
    let (_dir, store, _, outcome) = run(
        "name: p\nsteps:\n  - id: each\n    type: function\n    component: echo\n    for_each: '[1, 2, 3]'\n    fail_fast: false\n    with: {panic: '{{ item == 2 }}'}\n  - id: solo\n    type: function\n    component: echo\n    with: {panic: true}\n  - id: other\n    type: function\n    component: echo\n    with: {x: 1}\n",
    );
    assert_eq!(outcome.status, RunStatus::Failed);
    let steps = store.steps(&outcome.run_id).unwrap();
    let each = steps.iter().find(|s| s.id == "each").unwrap();
    assert_eq!(each.status, StepStatus::Failed);
    let error = each.error.as_deref().unwrap();
    assert!(
        error.contains("item 1: its task panicked: boom in each"),
        "{error}"
    );
    assert_panicked_solo(&steps);
    assert_eq!(
        steps.iter().find(|s| s.id == "other").unwrap().status,
        StepStatus::Completed
    );
    // No attempt row is left running.
    let db = rusqlite::Connection::open(store.home().join("wfhost.db")).unwrap();
    let open: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM step_attempts WHERE status = 'running'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(open, 0);
}

#[test]
fn a_step_runs_only_once_its_start_and_the_steps_it_needs_are_committed() {
    // Completions and starts that happen together are committed together;
    // none may be left for later when a step runs.
    let (_dir, _store, executor, outcome) = run(
        "name: c\nconfig: {parallelism: 2}\nsteps:\n  - id: root\n    type: function\n    component: echo\n    with: {x: 1}\n  - id: a\n    type: function\n    component: echo\n    needs: [root]\n  - id: b\n    type: function\n    component: echo\n    needs: [root]\n  - id: c\n    type: function\n    component: echo\n    needs: [root]\n  - id: sink\n    type: function\n    component: echo\n    needs: [a, b, c]\n    with: {x: '{{ steps.root.output.x }}'}\n  - id: when\n    type: function\n    component: echo\n    needs: [sink]\n    if: '{{ steps.sink.output.x == 1 }}'\n  - id: each\n    type: function\n    component: echo\n    needs: [when]\n    for_each: '[1, 2]'\n    with: {n: '{{ item }}'}\n",
    );
    assert_eq!(outcome.status, RunStatus::Completed);
    let needs: &[(&str, &[&str])] = &[
        ("root", &[]),
        ("a", &["root"]),
        ("b", &["root"]),
        ("c", &["root"]),
        ("sink", &["a", "b", "c"]),
        ("when", &["sink"]),
        ("each", &["when"]),
    ];
    let seen = executor.committed.seen.lock().unwrap();
    assert_eq!(seen.len(), 8, "{seen:?}");
    for (step, statuses) in seen.iter() {
        let status = |id: &str| {
            statuses
                .iter()
                .find(|(s, _)| s == id)
                .map(|(_, status)| status.as_str())
        };
        assert_eq!(status(step), Some("running"), "{step} ran: {statuses:?}");
        let (_, before) = needs.iter().find(|(id, _)| id == step).unwrap();
        for need in before.iter() {
            assert_eq!(status(need), Some("completed"), "{step} ran: {statuses:?}");
        }
    }
}

#[test]
fn for_each_items_are_retried_by_the_retry_policy() {
    let (_dir, store, executor, outcome) = run(
        "name: r\nsteps:\n  - id: each\n    type: function\n    component: echo\n    for_each: '[1, 2, 3]'\n    retry: {max_attempts: 2, initial_interval: 10ms}\n    with: {n: '{{ item }}', flaky_once: '{{ item == 2 }}'}\n",
    );
    assert_eq!(outcome.status, RunStatus::Completed);
    assert_eq!(executor.seen.lock().unwrap().len(), 4);
    let each = &store.steps(&outcome.run_id).unwrap()[0];
    assert_eq!(each.attempts, 4);
    assert_eq!(each.output.as_ref().unwrap()[1]["n"], 2);
}

#[test]
fn outputs_flow_through_templates_and_inputs() {
    let (_dir, store, executor, outcome) = run(
        "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n    with: {n: 20}\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n    with: {doubled: '{{ steps.a.output.n * 2 }}', text: 'n={{ steps.a.output.n }}'}\n",
    );
    assert_eq!(outcome.status, RunStatus::Completed);
    let b = store.steps(&outcome.run_id).unwrap().pop().unwrap();
    assert_eq!(b.output, Some(json!({"doubled": 40, "text": "n=20"})));
    let seen = executor.seen.lock().unwrap();
    let b_call = seen.iter().find(|i| i.step_id == "b").unwrap();
    assert_eq!(b_call.inputs, json!({"a": {"n": 20}}));
    assert_eq!(b_call.idempotency_key, format!("{}:b:0:1", outcome.run_id));
    let logs = store.events(&outcome.run_id, Some("b")).unwrap();
    assert!(logs
        .iter()
        .any(|e| e.kind == "log" && e.data["message"] == "running b"));
}

#[test]
fn a_failure_skips_dependents_and_fails_the_run() {
    let (_dir, store, _executor, outcome) = run(
        "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n    with: {fail: nope}\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n  - id: c\n    type: function\n    component: echo\n",
    );
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(
        statuses(&*store, &outcome.run_id),
        [
            ("a".to_string(), StepStatus::Failed),
            ("b".to_string(), StepStatus::Skipped),
            ("c".to_string(), StepStatus::Completed)
        ]
    );
    let a = &store.steps(&outcome.run_id).unwrap()[0];
    assert_eq!(a.error.as_deref(), Some("nope"));
}

#[test]
fn a_template_error_at_run_time_fails_only_that_step_with_the_reason() {
    let (_dir, store, executor, outcome) = run(
        "name: t\nsteps:\n  - id: a\n    type: function\n    component: echo\n  - id: b\n    type: function\n    component: echo\n    needs: [a]\n    with: {x: '{{ steps.a.output.missing }}'}\n",
    );
    assert_eq!(outcome.status, RunStatus::Failed);
    let b = &store.steps(&outcome.run_id).unwrap()[1];
    assert_eq!(b.status, StepStatus::Failed);
    let error = b.error.as_deref().unwrap();
    assert!(
        error.contains("template in `with`") && error.contains("undefined"),
        "{error}"
    );
    assert!(
        executor
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|i| i.step_id != "b"),
        "b never executed"
    );
}

/// The messages a step logged.
fn log_messages(store: &dyn EngineStore, run_id: &str, step: &str) -> Vec<String> {
    store
        .events(run_id, Some(step))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "log")
        .map(|e| e.data["message"].as_str().unwrap().to_string())
        .collect()
}

/// Short lines run out by count: one line per 128 bytes of `max_output`
/// (at least 1024), so a flood of tiny lines cannot fill the journal.
#[test]
fn step_logs_are_capped_in_lines_too() {
    let (_dir, store, _executor, outcome) = run(
        "name: t\nsteps:\n  - id: loud\n    type: function\n    component: echo\n    grants: {max_output: 256KiB}\n    with: {spam: 5000}\n",
    );
    assert_eq!(outcome.status, RunStatus::Completed);
    let logs = log_messages(&*store, &outcome.run_id, "loud");
    assert_eq!(logs.len(), 2048, "256 KiB / 128");
    assert!(logs[2047].ends_with("[wfhost: log cut at max_output; further lines dropped]"));
}

#[test]
fn step_logs_are_capped_at_max_output() {
    let (_dir, store, _executor, outcome) = run(
        "name: t\nsteps:\n  - id: loud\n    type: function\n    component: echo\n    grants: {max_output: 100}\n    with: {spam: 1000}\n",
    );
    assert_eq!(outcome.status, RunStatus::Completed);
    let logs = log_messages(&*store, &outcome.run_id, "loud");
    assert_eq!(logs.len(), 4, "{logs:?}");
    assert!(logs[3].ends_with("[wfhost: log cut at max_output; further lines dropped]"));
    let kept: usize = logs.iter().map(|l| l.lines().next().unwrap().len()).sum();
    assert!(kept <= 100, "{kept}");
}

#[test]
fn script_steps_get_their_shell_and_rendered_script() {
    let (_dir, _store, executor, outcome) =
        run("name: t\nsteps:\n  - id: s\n    run: echo {{ run.id }}\n");
    assert_eq!(outcome.status, RunStatus::Completed);
    let seen = executor.seen.lock().unwrap();
    assert_eq!(seen[0].component, "script");
    assert_eq!(seen[0].config["run"], format!("echo {}", outcome.run_id));
    assert_eq!(seen[0].grants.exec.len(), 1);
    assert_eq!(seen[0].grants.exec[0].name, "sh");
    assert!(seen[0].grants.exec[0].path.is_absolute());
}
