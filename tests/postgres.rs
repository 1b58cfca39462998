//! wfhost on a PostgreSQL store (`--store` / `WFHOST_STORE`), through the
//! real binary against a throw-away PostgreSQL server: runs recorded from
//! one machine's home and read, paused, resumed and cancelled from
//! another; runs queued with `--detach` and driven by `wfhost worker`s;
//! a worker killed mid-run loses nothing and no completed step runs twice;
//! a run's steps placed on every worker, one attempt at a time.

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

    /// Queue `workflow` from the first machine (`run --detach`); its run id.
    fn queue(&self, workflow: &std::path::Path) -> String {
        let out = self.on(
            &self.first,
            &["run", workflow.to_str().unwrap(), "--detach", "--quiet"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
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

/// Wait until `run` is neither pending nor running (ended, blocked or
/// paused).
fn wait_until_stopped(sql: &mut postgres::Client, run: &str, what: &str) {
    wait_for(what, || {
        let status: String = sql
            .query_one("SELECT status FROM runs WHERE id = $1", &[&run])
            .unwrap()
            .get(0);
        status != "running" && status != "pending"
    });
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
        queued.push(shared.queue(&workflow));
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
    let run = shared.queue(&path);
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
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["id"], run.as_str(), "{served:#}");

    // A run started through the API is queued for the workers.
    let request = serde_json::json!({
        "definition": "name: posted\nsteps:\n  - id: a\n    type: function\n    component: echo\n"
    });
    let started = ureq::post(&format!("http://{bind}/api/runs"))
        .header("Content-Type", "application/json")
        .send(request.to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(started["queued"], true, "{started:#}");
    assert!(started["driver_pid"].is_null(), "{started:#}");
    let posted = started["id"].as_str().unwrap().to_string();
    let _ = server.kill();
    let _ = server.wait();

    let id = approval["id"].to_string();
    let approved = shared.on(&shared.second, &["approve", &run, &id, "--note", "fine"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    wait_for("the worker to finish the runs", || {
        worker.try_wait().unwrap().is_some()
    });
    assert_eq!(shared.status(&shared.first, &run)["status"], "completed");
    assert_eq!(shared.status(&shared.first, &posted)["status"], "completed");
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
    let run = shared.queue(&path);

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
    // The worker says where each drive left its run, as the store tells.
    assert!(
        text(&gpu.stderr).contains(&format!("run {run}: completed")),
        "{}",
        text(&gpu.stderr)
    );

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
    // Queued from a machine without the directory: the grants are the
    // workers' to resolve, so the run is queued, and a worker that has it
    // runs the step.
    std::fs::remove_dir(&data).unwrap();
    let queued = shared.queue(&path);
    std::fs::create_dir_all(&data).unwrap();
    let worker = shared.on(&shared.second, &["worker", "--until-idle", "--quiet"]);
    assert!(worker.status.success(), "{}", text(&worker.stderr));
    assert_eq!(
        shared.status(&shared.second, &queued)["status"],
        "completed"
    );

    let run = shared.queue(&path);
    // The worker's machine has no such directory.
    std::fs::remove_dir(&data).unwrap();
    let worker = shared.on(&shared.second, &["worker", "--until-idle", "--quiet"]);
    assert!(worker.status.success(), "{}", text(&worker.stderr));
    let status = shared.status(&shared.second, &run);
    assert_eq!(status["status"], "failed", "{status:#}");
    // The step's grants are resolved on the worker that runs it, and the
    // step fails there naming the grant and the worker.
    let step = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "read")
        .unwrap();
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("on worker ")
            && error.contains("the step's grants cannot be given")
            && error.contains("files grant 'data' does not exist"),
        "{status:#}"
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

/// The `wfhost worker` processes whose step attempts are running now.
fn workers_running_steps(sql: &mut postgres::Client) -> Vec<u32> {
    sql.query(
        "SELECT DISTINCT worker FROM step_tasks WHERE state = 'running'",
        &[],
    )
    .unwrap()
    .iter()
    .filter_map(|row| {
        let worker: String = row.get(0);
        worker.rsplit(':').next()?.parse().ok()
    })
    .collect()
}

/// The parent of process `pid` (the worker of a driver).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The worker whose child drives `run` now.
fn driving_worker(sql: &mut postgres::Client, run: &str) -> Option<u32> {
    let pid: Option<i64> = sql
        .query_one("SELECT driver_pid FROM runs WHERE id = $1", &[&run])
        .unwrap()
        .get(0);
    parent_of(u32::try_from(pid?).ok()?)
}

#[test]
fn three_workers_run_a_1000_step_fan_out_each_step_once_and_a_killed_worker_loses_nothing() {
    let shared = Shared::new();
    let mut text_of = String::from("name: wide\nconfig: { parallelism: 16 }\nsteps:\n");
    text_of
        .push_str("  - id: root\n    type: function\n    component: echo\n    idempotent: true\n");
    for i in 0..1000 {
        text_of.push_str(&format!(
            "  - id: s{i}\n    needs: [root]\n    type: function\n    component: sleep\n    idempotent: true\n    with: {{ ms: 5 }}\n"
        ));
    }
    let all: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    text_of.push_str(&format!(
        "  - id: sink\n    needs: [{}]\n    type: function\n    component: echo\n    idempotent: true\n",
        all.join(", ")
    ));
    let path = shared.first.write("wide.yaml", &text_of);
    let run = shared.queue(&path);

    let machines = [Sandbox::new(), Sandbox::new(), Sandbox::new()];
    let mut workers: Vec<Child> = machines
        .iter()
        .map(|machine| shared.spawn(machine, &["worker", "--concurrency", "2", "--quiet"]))
        .collect();
    let mut sql = shared.sql();
    // Mid-run, kill (`kill -9`) a worker that is running steps but does not
    // drive the run: its attempts' claims run out, and the driver queues
    // them again (the steps are idempotent).
    let mut killed = None;
    wait_for("a worker running steps of another's run", || {
        let done: i64 = sql
            .query_one("SELECT COUNT(*) FROM step_tasks WHERE state = 'done'", &[])
            .unwrap()
            .get(0);
        if done < 100 {
            return false;
        }
        let driver = driving_worker(&mut sql, &run);
        let victim = workers_running_steps(&mut sql)
            .into_iter()
            .find(|pid| Some(*pid) != driver);
        let Some(victim) = victim else {
            return false;
        };
        let worker = workers.iter_mut().find(|w| w.id() == victim).unwrap();
        worker.kill().unwrap();
        let _ = worker.wait();
        killed = Some(victim);
        true
    });
    let killed = killed.unwrap();
    wait_until_stopped(&mut sql, &run, "the run to end");
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let status = shared.status(&shared.second, &run);
    assert_eq!(status["status"], "completed", "{}", status["error"]);
    // Every step completed exactly once.
    let completed = sql
        .query(
            "SELECT step_id, COUNT(*) FROM events WHERE run_id = $1 AND kind = 'step_completed'
             GROUP BY step_id",
            &[&run],
        )
        .unwrap();
    assert_eq!(completed.len(), 1002);
    assert!(completed.iter().all(|row| row.get::<_, i64>(1) == 1));
    // The steps ran on all three workers, the killed one included.
    let by_worker = sql
        .query(
            "SELECT worker, COUNT(*) FROM step_tasks WHERE run_id = $1 AND state = 'done'
             GROUP BY worker",
            &[&run],
        )
        .unwrap();
    assert_eq!(
        by_worker.len(),
        3,
        "steps ran on {} workers",
        by_worker.len()
    );
    let killed_ran: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM step_tasks WHERE run_id = $1 AND worker LIKE $2",
            &[&run, &format!("%:{killed}")],
        )
        .unwrap()
        .get(0);
    assert!(killed_ran > 0);
}

/// A workflow of a quick root and two slow steps side by side, slow enough
/// for a second worker to start on a busy machine while the first worker
/// runs one of them.
fn two_slow_steps(machine: &Sandbox, idempotent: bool) -> std::path::PathBuf {
    machine.write(
        "slow.yaml",
        &format!(
            "name: slow\nsteps:\n  - id: root\n    type: function\n    component: echo\n\
             \x20 - id: x\n    needs: [root]\n    type: function\n    component: sleep\n    with: {{ ms: 6000 }}\n    idempotent: {idempotent}\n\
             \x20 - id: y\n    needs: [root]\n    type: function\n    component: sleep\n    with: {{ ms: 6000 }}\n    idempotent: {idempotent}\n"
        ),
    )
}

/// Queue `workflow`; one worker (one attempt at a time) takes the run and
/// one slow step, a second worker the other slow step; the second is
/// killed (`kill -9`) mid-step. Returns the run and the survivor.
fn kill_the_worker_of_a_step(shared: &Shared, workflow: &std::path::Path) -> (String, Child) {
    let run = shared.queue(workflow);
    let first = Sandbox::new();
    let second = Sandbox::new();
    let driver = shared.spawn(&first, &["worker", "--concurrency", "1", "--quiet"]);
    let mut sql = shared.sql();
    let running = |sql: &mut postgres::Client| -> i64 {
        sql.query_one(
            "SELECT COUNT(*) FROM step_tasks WHERE state = 'running' AND step_id IN ('x', 'y')",
            &[],
        )
        .unwrap()
        .get(0)
    };
    wait_for("the first worker to run a slow step", || {
        running(&mut sql) == 1
    });
    let mut other = shared.spawn(&second, &["worker", "--concurrency", "1", "--quiet"]);
    wait_for("the second worker to run the other", || {
        running(&mut sql) == 2
    });
    other.kill().unwrap();
    let _ = other.wait();
    (run, driver)
}

#[test]
fn an_idempotent_step_of_a_killed_worker_runs_again_on_another() {
    let shared = Shared::new();
    let workflow = two_slow_steps(&shared.first, true);
    let (run, mut survivor) = kill_the_worker_of_a_step(&shared, &workflow);
    let mut sql = shared.sql();
    wait_until_stopped(&mut sql, &run, "the run to end");
    let _ = survivor.kill();
    let _ = survivor.wait();
    assert_eq!(shared.status(&shared.second, &run)["status"], "completed");
    // The lost attempt was queued again (a second claim of its task).
    let reclaimed: i64 = sql
        .query_one(
            "SELECT COUNT(*) FROM step_tasks WHERE run_id = $1 AND token = 2 AND state = 'done'",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert_eq!(reclaimed, 1);
    let logs = shared.on(&shared.second, &["logs", &run]);
    assert!(
        text(&logs.stdout).contains("was lost while running this attempt; it is queued again"),
        "{}",
        text(&logs.stdout)
    );
}

#[test]
fn a_step_not_marked_idempotent_of_a_killed_worker_blocks_the_run() {
    let shared = Shared::new();
    let workflow = two_slow_steps(&shared.first, false);
    let (run, mut survivor) = kill_the_worker_of_a_step(&shared, &workflow);
    let mut sql = shared.sql();
    wait_until_stopped(&mut sql, &run, "the run to block");
    let status = shared.status(&shared.second, &run);
    assert_eq!(status["status"], "blocked", "{status:#}");
    let why: String = sql
        .query_one(
            "SELECT data FROM events WHERE run_id = $1 AND kind = 'run_status' ORDER BY seq DESC LIMIT 1",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert!(
        why.contains("was lost while running it, and it is not marked idempotent")
            && why.contains("wfhost resume"),
        "{why}"
    );
    // Nothing ran it again.
    let claims: i64 = sql
        .query_one(
            "SELECT MAX(token) FROM step_tasks WHERE run_id = $1",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert_eq!(claims, 1);
    let _ = survivor.kill();
    let _ = survivor.wait();
}

#[test]
fn bad_worker_and_store_settings_are_one_line_errors() {
    let machine = Sandbox::new();
    let out = machine.wfhost(&["worker", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: --concurrency must be at least 1"
    );

    let path = machine.write(
        "badlabel.yaml",
        "name: x\nsteps:\n  - id: a\n    runs_on: [\"g p u\"]\n    run: 'true'\n",
    );
    let out = machine.wfhost(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("badlabel.yaml:4:16: step 'a': runs_on: a label is 1 to 64 letters"),
        "{err}"
    );

    std::fs::create_dir_all(machine.home()).unwrap();
    std::fs::write(
        machine.home().join("config.toml"),
        "[store]\nurl = \"mysql://user:secret@db/wf\"\n",
    )
    .unwrap();
    let out = machine.wfhost(&["runs"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("wfhost stores runs in SQLite under the home (the default) or in PostgreSQL")
            && !err.contains("secret"),
        "{err}"
    );
}

#[test]
fn a_step_running_on_a_worker_when_its_driver_died_is_waited_for_and_recorded_not_run_again() {
    let shared = Shared::new();
    // Only a worker labelled `driver` can drive the run (its last step asks
    // for the label); the slow steps run on any worker. x2 waits for `gate`,
    // queued with x1, so x1 is queued first whichever of the two the driver
    // queues first: the driving worker (one attempt at a time) runs x1, and
    // x2 is left for the other worker. x1 sleeps long enough for the other
    // worker to start on a busy machine.
    let workflow = shared.first.write(
        "adopt.yaml",
        "name: adopt\nsteps:\n  - id: root\n    type: function\n    component: echo\n\
         \x20 - id: x1\n    needs: [root]\n    type: function\n    component: sleep\n    with: { ms: 8000 }\n    idempotent: true\n\
         \x20 - id: gate\n    needs: [root]\n    type: function\n    component: echo\n    idempotent: true\n\
         \x20 - id: x2\n    needs: [gate]\n    type: function\n    component: sleep\n    with: { ms: 3000 }\n\
         \x20 - id: y\n    needs: [x1, x2]\n    runs_on: [driver]\n    type: function\n    component: echo\n",
    );
    let run = shared.queue(&workflow);
    let (a, b, c) = (Sandbox::new(), Sandbox::new(), Sandbox::new());
    let labelled = [
        "worker",
        "--concurrency",
        "1",
        "--labels",
        "driver",
        "--quiet",
    ];
    let mut driver = shared.spawn(&a, &labelled);
    let mut sql = shared.sql();
    let count = |sql: &mut postgres::Client, query: &str| -> i64 {
        sql.query_one(query, &[]).unwrap().get(0)
    };
    let running = |step: &str| {
        format!("SELECT COUNT(*) FROM step_tasks WHERE state = 'running' AND step_id = '{step}'")
    };
    wait_for("the driving worker to run x1", || {
        count(&mut sql, &running("x1")) == 1
    });
    let mut helper = shared.spawn(&c, &["worker", "--concurrency", "1", "--quiet"]);
    wait_for("the other worker to run x2", || {
        count(&mut sql, &running("x2")) == 1
    });
    assert_eq!(
        count(&mut sql, &running("x1")),
        1,
        "x1 ended before the other worker started x2"
    );
    // The driver's machine dies, and another takes the run over at once
    // (the dead driver's pid is gone): it waits for x2, still running on a
    // live worker, and records its outcome.
    driver.kill().unwrap();
    let _ = driver.wait();
    let mut next = shared.spawn(&b, &labelled);
    wait_until_stopped(&mut sql, &run, "the run to end");
    for worker in [&mut helper, &mut next] {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let status = shared.status(&shared.second, &run);
    assert_eq!(status["status"], "completed", "{status:#}");
    // x2 (not idempotent) ran once, and its outcome was recorded from its
    // task; x1 (idempotent, lost with the driver's worker) ran again.
    assert_eq!(
        count(
            &mut sql,
            "SELECT COUNT(*) FROM step_tasks WHERE step_id = 'x2'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut sql,
            "SELECT COUNT(*) FROM events WHERE kind = 'step_adopted' AND step_id = 'x2'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut sql,
            "SELECT COUNT(*) FROM events WHERE kind = 'step_completed' AND step_id = 'x2'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut sql,
            "SELECT COUNT(*) FROM step_tasks WHERE step_id = 'x1'"
        ),
        2
    );
    // The takeover came before x2 ended: the new driver waited for it.
    let row = sql
        .query_one(
            "SELECT (SELECT MAX(at) FROM events WHERE kind = 'run_claimed'),
                    (SELECT finished_at FROM step_tasks WHERE step_id = 'x2')",
            &[],
        )
        .unwrap();
    let (claimed, finished): (String, String) = (row.get(0), row.get(1));
    assert!(
        claimed < finished,
        "taken over at {claimed}, x2 ended at {finished}"
    );
}

#[test]
fn a_placed_steps_log_lines_reach_the_journal_once() {
    let shared = Shared::new();
    let path = shared.first.write(
        "say.yaml",
        "name: say\nsteps:\n  - id: say\n    run: echo hello-from-a-worker\n",
    );
    let run = shared.queue(&path);
    let worker = shared.on(&shared.second, &["worker", "--until-idle", "--quiet"]);
    assert!(worker.status.success(), "{}", text(&worker.stderr));
    assert_eq!(shared.status(&shared.first, &run)["status"], "completed");
    let logs = shared.on(&shared.first, &["logs", &run]);
    let logs = text(&logs.stdout);
    assert_eq!(logs.matches("hello-from-a-worker").count(), 1, "{logs}");
    let mut sql = shared.sql();
    let placed: String = sql
        .query_one(
            "SELECT data FROM events WHERE run_id = $1 AND kind = 'step_placed'",
            &[&run],
        )
        .unwrap()
        .get(0);
    assert!(placed.contains("\"worker\""), "{placed}");
}
