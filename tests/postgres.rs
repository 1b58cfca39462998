//! wfhost on a PostgreSQL store (`--store` / `WFHOST_STORE`), through the
//! real binary against a throw-away PostgreSQL server: runs recorded from
//! one machine's home and read, paused, resumed and cancelled from
//! another; runs queued with `--detach` and driven by `wfhost worker`s;
//! a worker killed mid-run loses nothing and no completed step runs twice.

mod common;
#[path = "support/postgres.rs"]
mod scratch_postgres;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{text, Sandbox};

/// Two "machines" (homes) sharing one fresh database.
struct Shared {
    url: String,
    first: Sandbox,
    second: Sandbox,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            url: scratch_postgres::fresh_database(),
            first: Sandbox::new(),
            second: Sandbox::new(),
        }
    }

    fn on(&self, machine: &Sandbox, args: &[&str]) -> std::process::Output {
        machine
            .command(args)
            .env("WFHOST_STORE", &self.url)
            .output()
            .unwrap()
    }

    fn spawn(&self, machine: &Sandbox, args: &[&str]) -> Child {
        machine
            .command(args)
            .env("WFHOST_STORE", &self.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn status(&self, machine: &Sandbox, run: &str) -> serde_json::Value {
        let out = self.on(machine, &["status", run, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn sql(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` sleeping function steps between a root and a sink.
fn fan_out(machine: &Sandbox, name: &str, n: usize, ms: u32) -> std::path::PathBuf {
    let mut text = format!("name: {name}\nconfig: {{ parallelism: 4 }}\nsteps:\n");
    text.push_str("  - id: root\n    type: function\n    component: echo\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - id: s{i}\n    needs: [root]\n    type: function\n    component: sleep\n    with: {{ ms: {ms} }}\n"
        ));
    }
    let all: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    text.push_str(&format!(
        "  - id: sink\n    needs: [{}]\n    type: function\n    component: echo\n",
        all.join(", ")
    ));
    machine.write(&format!("{name}.yaml"), &text)
}

#[test]
fn a_run_recorded_on_one_machine_is_read_and_controlled_from_another() {
    let shared = Shared::new();
    let hello = common::repo().join("workflows/hello.yaml");
    let out = shared.on(&shared.first, &["run", hello.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = run["id"].as_str().unwrap().to_string();

    // The other machine's home has no SQLite database: it reads the store.
    let runs = shared.on(&shared.second, &["runs"]);
    assert!(text(&runs.stdout).contains(&id), "{}", text(&runs.stdout));
    let status = shared.status(&shared.second, &id);
    assert_eq!(status["status"], "completed");
    assert!(!shared.second.home().join("wfhost.db").exists());

    // A long run driven on the first machine, paused and resumed from the second.
    let slow = fan_out(&shared.first, "slow", 6, 700);
    let mut driver = shared.spawn(
        &shared.first,
        &["run", slow.to_str().unwrap(), "--json", "--quiet"],
    );
    let sql = std::sync::Mutex::new(shared.sql());
    let slow_id = || -> Option<String> {
        sql.lock()
            .unwrap()
            .query_opt("SELECT id FROM runs WHERE workflow_name = 'slow'", &[])
            .unwrap()
            .map(|row| row.get(0))
    };
    wait_for("the slow run to start", || slow_id().is_some());
    let slow_run = slow_id().unwrap();
    let pause = shared.on(&shared.second, &["pause", &slow_run]);
    assert!(pause.status.success(), "{}", text(&pause.stderr));
    let ended = driver.wait().unwrap();
    assert_eq!(ended.code(), Some(3), "paused: exit 3");
    assert_eq!(shared.status(&shared.second, &slow_run)["status"], "paused");
    let resume = shared.on(&shared.second, &["resume", &slow_run, "--quiet"]);
    assert!(resume.status.success(), "{}", text(&resume.stderr));
    assert_eq!(
        shared.status(&shared.first, &slow_run)["status"],
        "completed"
    );

    // Cancel from the other machine.
    let mut driver = shared.spawn(
        &shared.first,
        &["run", slow.to_str().unwrap(), "--json", "--quiet"],
    );
    let newest = || -> Option<String> {
        sql.lock()
            .unwrap()
            .query_opt(
                "SELECT id FROM runs WHERE workflow_name = 'slow' AND status = 'running'",
                &[],
            )
            .unwrap()
            .map(|row| row.get(0))
    };
    wait_for("the second slow run to start", || newest().is_some());
    let second_run = newest().unwrap();
    let cancel = shared.on(&shared.second, &["cancel", &second_run]);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    assert_eq!(driver.wait().unwrap().code(), Some(1));
    assert_eq!(
        shared.status(&shared.second, &second_run)["status"],
        "cancelled"
    );
}

#[test]
fn workers_share_queued_runs_and_a_killed_worker_loses_nothing() {
    let shared = Shared::new();
    let workflow = fan_out(&shared.first, "fan", 40, 50);
    let mut queued = Vec::new();
    for _ in 0..6 {
        let out = shared.on(
            &shared.first,
            &["run", workflow.to_str().unwrap(), "--detach", "--quiet"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        queued.push(text(&out.stdout).trim().to_string());
    }
    // Queued, not driven: nobody took them yet.
    assert_eq!(
        shared.status(&shared.second, &queued[0])["status"],
        "pending"
    );

    let machines = [Sandbox::new(), Sandbox::new(), Sandbox::new()];
    let mut workers: Vec<Child> = machines
        .iter()
        .map(|m| shared.spawn(m, &["worker", "--concurrency", "2", "--until-idle"]))
        .collect();
    // Kill the first worker as soon as it drives something: its drivers die
    // with it, and the others take the runs over.
    let mut sql = shared.sql();
    wait_for("a run to be driven", || {
        let running: i64 = sql
            .query_one("SELECT COUNT(*) FROM runs WHERE status = 'running'", &[])
            .unwrap()
            .get(0);
        running > 0
    });
    workers[0].kill().unwrap();
    let _ = workers[0].wait();
    let waiter = shared.spawn(&machines[0], &["worker", "--until-idle", "--quiet"]);
    workers.push(waiter);
    wait_for("every run to end", || {
        let open: i64 = sql
            .query_one(
                "SELECT COUNT(*) FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
                &[],
            )
            .unwrap()
            .get(0);
        open == 0
    });
    for worker in &mut workers[1..] {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    for id in &queued {
        assert_eq!(
            shared.status(&shared.second, id)["status"],
            "completed",
            "run {id}"
        );
    }
    // No completed step ran twice: one `step_completed` per step.
    let twice = sql
        .query(
            "SELECT run_id, step_id, COUNT(*) FROM events WHERE kind = 'step_completed'
             GROUP BY run_id, step_id HAVING COUNT(*) > 1",
            &[],
        )
        .unwrap();
    assert!(twice.is_empty(), "{} steps completed twice", twice.len());
    let completed: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM events WHERE kind = 'step_completed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(completed, 6 * 42);
}

#[test]
fn a_bad_store_url_is_a_one_line_error() {
    let machine = Sandbox::new();
    let out = machine.wfhost(&["runs", "--store", "mysql://db/wf"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("postgres://USER@HOST:PORT/DATABASE"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://wf:hunter2@127.0.0.1:{port}/wf");
    let out = machine.wfhost(&["runs", "--store", &url]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach PostgreSQL"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is not printed: {err}"
    );
}
