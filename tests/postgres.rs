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

/// `n` sleeping function steps between a root and a sink; each is safe to
/// run again after a crash (`idempotent`), so a run taken over from a dead
/// worker goes on instead of blocking on its interrupted steps.
fn fan_out(machine: &Sandbox, name: &str, n: usize, ms: u32) -> std::path::PathBuf {
    let mut text = format!("name: {name}\nconfig: {{ parallelism: 4 }}\nsteps:\n");
    text.push_str("  - id: root\n    type: function\n    component: echo\n    idempotent: true\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - id: s{i}\n    needs: [root]\n    type: function\n    component: sleep\n    idempotent: true\n    with: {{ ms: {ms} }}\n"
        ));
    }
    let all: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    text.push_str(&format!(
        "  - id: sink\n    needs: [{}]\n    type: function\n    component: echo\n    idempotent: true\n",
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
    // The first worker starts alone and is killed (`kill -9`) as soon as it
    // drives something: its drivers die with it, and the others, started
    // then, take its runs over once their leases run out.
    let mut workers = vec![shared.spawn(&machines[0], &["worker", "--concurrency", "2"])];
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
    for machine in &machines {
        workers.push(shared.spawn(machine, &["worker", "--concurrency", "2"]));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    wait_for("every run to end", || {
        if Instant::now() + Duration::from_secs(1) > deadline {
            let rows = sql
                .query("SELECT id, status, COALESCE(error, '') FROM runs", &[])
                .unwrap();
            let states: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2)
                    )
                })
                .collect();
            panic!("runs still open: {states:#?}");
        }
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
    // And the killed worker's runs were taken over mid-run.
    let taken_over: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM events WHERE kind = 'run_claimed'
             AND data LIKE '%\"previous\":\"running\"%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        taken_over >= 1,
        "no run was taken over from the killed worker"
    );
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

    // A worker waits for an unreachable store instead of giving up, and
    // stops cleanly when asked.
    let mut worker = machine
        .command(&["worker", "--store", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(worker.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert!(line.contains("trying again in 1 s"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(worker.try_wait().unwrap().is_none(), "still waiting");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    assert_eq!(worker.wait().unwrap().code(), Some(0));
}

/// A copy of the agent-review example on `machine` (its reports stay there).
fn agent_example(machine: &Sandbox) -> std::path::PathBuf {
    for name in ["agent-review.yaml", "agent-review.replies.yaml"] {
        let text = std::fs::read_to_string(common::repo().join("workflows").join(name)).unwrap();
        machine.write(name, &text);
    }
    std::fs::create_dir_all(machine.path().join("reports")).unwrap();
    machine.path().join("agent-review.yaml")
}

#[test]
fn an_agent_run_driven_by_a_worker_is_approved_from_another_machine_and_served() {
    let shared = Shared::new();
    let path = agent_example(&shared.first);
    let out = shared.on(
        &shared.first,
        &["run", path.to_str().unwrap(), "--detach", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    let worker_machine = Sandbox::new();
    let mut worker = shared.spawn(&worker_machine, &["worker", "--until-idle", "--quiet"]);

    // The held call shows up on the second machine; it answers.
    let mut approval = serde_json::Value::Null;
    wait_for("the agent's approval", || {
        let out = shared.on(&shared.second, &["approvals", "--json"]);
        approval = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|list| list.get(0).cloned())
            .unwrap_or_default();
        !approval.is_null()
    });
    assert_eq!(approval["run_id"], run.as_str());
    assert_eq!(shared.status(&shared.second, &run)["status"], "blocked");

    // `wfhost serve` on the second machine reads the same store.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut server = shared.spawn(&shared.second, &["serve", "--bind", &bind]);
    let mut served = String::new();
    wait_for("the server to answer", || {
        match ureq::get(&format!("http://{bind}/api/runs/{run}")).call() {
            Ok(mut response) => {
                served = response.body_mut().read_to_string().unwrap_or_default();
                true
            }
            Err(_) => false,
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["id"], run.as_str(), "{served:#}");

    let id = approval["id"].to_string();
    let approved = shared.on(&shared.second, &["approve", &run, &id, "--note", "fine"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    wait_for("the worker to finish the run", || {
        worker.try_wait().unwrap().is_some()
    });
    assert_eq!(shared.status(&shared.first, &run)["status"], "completed");
}

#[test]
fn artifacts_kept_on_one_machine_are_read_on_another() {
    let shared = Shared::new();
    std::fs::create_dir_all(shared.first.path().join("out")).unwrap();
    let path = shared.first.write(
        "report.yaml",
        "name: report\nsteps:\n  - id: write\n    run: printf 'all good' > out/report.txt\n    \
         grants: { exec: [sh, printf], files: [{ path: out, access: read-write }] }\n    \
         artifacts: [out/report.txt]\n",
    );
    let out = shared.on(
        &shared.first,
        &["run", path.to_str().unwrap(), "--json", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = run["id"].as_str().unwrap().to_string();

    let listed = shared.on(&shared.second, &["artifacts", &run, "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed[0]["id"].to_string();
    let got = shared.on(
        &shared.second,
        &["artifacts", &run, "--get", &id, "--out", "-"],
    );
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "all good");
    assert!(
        !shared
            .second
            .home()
            .join("runs")
            .join(&run)
            .join("artifacts")
            .exists(),
        "read from the store, not a local file"
    );
}

#[test]
fn a_run_whose_steps_ask_for_labels_goes_only_to_a_worker_that_has_them() {
    let shared = Shared::new();
    let path = shared.first.write(
        "gpu.yaml",
        "name: gpu\nsteps:\n  - id: train\n    runs-on: [gpu]\n    type: function\n    component: echo\n",
    );
    let out = shared.on(
        &shared.first,
        &["run", path.to_str().unwrap(), "--detach", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();

    let plain = shared.on(&shared.second, &["worker", "--until-idle"]);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("asks for labels this worker lacks: gpu"),
        "{}",
        text(&plain.stderr)
    );
    assert_eq!(shared.status(&shared.second, &run)["status"], "pending");

    let gpu = shared.on(
        &shared.second,
        &["worker", "--until-idle", "--labels", "gpu,linux"],
    );
    assert!(gpu.status.success(), "{}", text(&gpu.stderr));
    assert_eq!(shared.status(&shared.second, &run)["status"], "completed");

    let bad = shared.on(&shared.second, &["worker", "--labels", "g p u"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("is not a label"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_grant_missing_on_the_worker_fails_the_run_with_the_grant_named() {
    let shared = Shared::new();
    let data = shared.first.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let path = shared.first.write(
        "needs-data.yaml",
        "name: needs-data\nsteps:\n  - id: read\n    run: ls data\n    \
         grants: { exec: [ls], files: [{ path: data }] }\n",
    );
    let out = shared.on(
        &shared.first,
        &["run", path.to_str().unwrap(), "--detach", "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    // The worker's machine has no such directory.
    std::fs::remove_dir(&data).unwrap();
    let worker = shared.on(&shared.second, &["worker", "--until-idle", "--quiet"]);
    assert!(worker.status.success(), "{}", text(&worker.stderr));
    let status = shared.status(&shared.second, &run);
    assert_eq!(status["status"], "failed", "{status:#}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("step 'read': files grant 'data' does not exist"),
        "{error}"
    );
}

#[test]
fn a_step_cannot_be_granted_the_store_url() {
    let shared = Shared::new();
    let path = shared.first.write(
        "leak.yaml",
        "name: leak\nsteps:\n  - id: leak\n    run: 'echo $WFHOST_STORE'\n    grants: { env: [WFHOST_STORE] }\n",
    );
    let out = shared.on(&shared.first, &["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("step 'leak'")
            && err.contains("env grant 'WFHOST_STORE' would pass wfhost's store URL"),
        "{err}"
    );
    assert!(!err.contains("postgres://"), "{err}");
}
