#!/usr/bin/env python3
"""wfhost on PostgreSQL: workers, per-step cost against SQLite, queue latency.

Starts a throw-away PostgreSQL server (Debian's postgresql: initdb + postgres
on a free loopback port, data under --dir on the default disk, the server's
default durability: `synchronous_commit = on`, fsync on), then measures, each
as whole `wfhost` processes:

  throughput   --runs-queued runs of a fan-out of --steps no-op function steps
               are queued (`run --detach`), then K workers
               (`wfhost worker --until-idle --concurrency 2`, K in --workers)
               drive them all; steps per second = all steps / wall time.
  per step     `wfhost run -q` of W1 (1 -> N no-op steps -> 1, N = --fan-out)
               with SQLite (fresh home) and with PostgreSQL (fresh database),
               in the same run; (wall - W0 wall) / steps, median of --repeat.
  one run      one queued run of a fan-out of --fan-out no-op steps
               (parallelism 16) with K workers: its steps are placed on all
               of them; steps per second = steps / wall time.
  hand-off     one idle worker waits (LISTEN); a 1-step run is queued
               --samples times: the time from the run's `run_created` to its
               step's `step_started` (store timestamps): the worker's wake-up,
               a driver process started, the claim, the step started.
  step to dependent
               a chain of --chain no-op steps queued with 2 workers
               (concurrency 1 each): for each step, from its predecessor's
               outcome recorded (`finished_at` of its task) to its own claim
               by a worker (`claimed_at`), when the two ran on different
               workers: the worker's NOTIFY, the driver's wake-up and its
               transition, the dependent queued, a worker's wake-up and
               claim.

Usage: bench/workers.py [--wfhost target/release/wfhost] [--workers 1,2,4]
                        [--runs-queued 16] [--steps 50] [--fan-out 1000]
                        [--repeat 3] [--samples 30] [--chain 100] [--dir DIR]
"""

import argparse
import datetime
import glob
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir():
    for d in os.environ.get("PATH", "").split(":"):
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "postgres")):
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1]


class Postgres:
    def __init__(self, work):
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=work))
        self.port = free_port()
        self.bin = bin_dir()
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(self.as_user + [f"{self.bin}/initdb", "-D", str(self.dir / "data"), "-U", "postgres",
                                       "--auth=trust", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.as_user + [
            f"{self.bin}/postgres", "-D", str(self.dir / "data"), "-p", str(self.port), "-k", str(self.dir),
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "server.log", "w"))
        deadline = time.time() + 60
        while subprocess.run(["psql", self.url("postgres"), "-qc", "select 1"], capture_output=True).returncode:
            if time.time() > deadline:
                sys.exit("the PostgreSQL server did not start: " + (self.dir / "server.log").read_text())
            time.sleep(0.1)
        self.count = 0

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def fresh(self):
        self.count += 1
        name = f"bench{self.count}"
        subprocess.run(["psql", self.url("postgres"), "-qc", f"CREATE DATABASE {name}"], check=True)
        return self.url(name)

    def sql(self, url, query):
        out = subprocess.run(["psql", url, "-tAc", query], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def fan_out(n, name="fan", parallelism=8):
    text = f"name: {name}\nconfig: {{ parallelism: {parallelism} }}\nsteps:\n"
    text += "  - id: root\n    type: function\n    component: echo\n"
    for i in range(n):
        text += f"  - id: s{i}\n    needs: [root]\n    type: function\n    component: echo\n"
    text += "  - id: sink\n    needs: [" + ", ".join(f"s{i}" for i in range(n)) + "]\n"
    text += "    type: function\n    component: echo\n"
    return text


def env_for(home, url=None):
    env = dict(os.environ, WFHOST_HOME=str(home), NO_COLOR="1")
    env.pop("WFHOST_STORE", None)
    if url:
        env["WFHOST_STORE"] = url
    return env


def timed(cmd, cwd, env):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wfhost", default=str(ROOT / "target/release/wfhost"))
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--runs-queued", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--fan-out", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--dir", default=str(ROOT / "target/bench-work"))
    a = ap.parse_args()
    wfhost = str(Path(a.wfhost).resolve())
    work = Path(a.dir)
    work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="workers-", dir=work))
    pg = Postgres(work)
    try:
        print(f"wfhost {wfhost}; PostgreSQL {pg.bin}; work dir {scratch} (not tmpfs); "
              f"{os.cpu_count()} CPUs; {datetime.datetime.now().isoformat(timespec='seconds')}")
        # Warm the compile cache.
        (scratch / "w0.yaml").write_text(fan_out(0, "w0").replace(
            "  - id: sink\n    needs: []\n", "  - id: sink\n    needs: [root]\n"))
        timed([wfhost, "run", "-q", "w0.yaml"], scratch, env_for(scratch / "warm"))

        print("\n## Throughput: queued runs driven by K workers (concurrency 2 each)\n")
        print("| workers | runs | steps | wall | steps/s |\n|---:|---:|---:|---:|---:|")
        (scratch / "fan.yaml").write_text(fan_out(a.steps))
        for k in [int(x) for x in a.workers.split(",")]:
            url = pg.fresh()
            home = scratch / f"queue{k}"
            for _ in range(a.runs_queued):
                subprocess.run([wfhost, "run", "fan.yaml", "--detach", "-q"], cwd=scratch,
                               env=env_for(home, url), check=True, stdout=subprocess.DEVNULL)
            start = time.perf_counter()
            workers = [subprocess.Popen([wfhost, "worker", "--until-idle", "--concurrency", "2", "-q"],
                                        cwd=scratch, env=env_for(scratch / f"w{k}-{i}", url))
                       for i in range(k)]
            for w in workers:
                w.wait()
            wall = time.perf_counter() - start
            done = int(pg.sql(url, "SELECT COUNT(*) FROM runs WHERE status = 'completed'"))
            steps = done * (a.steps + 2)
            print(f"| {k} | {done}/{a.runs_queued} | {steps} | {wall:.2f} s | {steps / wall:.0f} |")

        print(f"\n## One run of {a.fan_out} parallel steps (parallelism 16) placed on K workers\n")
        print("| workers | steps | wall | steps/s | workers that ran steps |\n|---:|---:|---:|---:|---:|")
        (scratch / "wide.yaml").write_text(fan_out(a.fan_out, "wide", 16))
        for k in [int(x) for x in a.workers.split(",")]:
            url = pg.fresh()
            subprocess.run([wfhost, "run", "wide.yaml", "--detach", "-q"], cwd=scratch,
                           env=env_for(scratch / f"wide{k}", url), check=True, stdout=subprocess.DEVNULL)
            start = time.perf_counter()
            workers = [subprocess.Popen([wfhost, "worker", "--until-idle", "--concurrency", "2", "-q"],
                                        cwd=scratch, env=env_for(scratch / f"wide{k}-{i}", url))
                       for i in range(k)]
            for w in workers:
                w.wait()
            wall = time.perf_counter() - start
            status = pg.sql(url, "SELECT status FROM runs")
            ran_on = pg.sql(url, "SELECT COUNT(DISTINCT worker) FROM step_tasks")
            print(f"| {k} | {a.fan_out + 2} ({status}) | {wall:.2f} s | {(a.fan_out + 2) / wall:.0f} | {ran_on} |")

        print(f"\n## Per step: W1 N={a.fan_out}, `wfhost run -q`, median of {a.repeat}\n")
        (scratch / "w1.yaml").write_text(fan_out(a.fan_out, "w1"))
        rows = {}
        for store in ["sqlite", "postgres"]:
            w0s, w1s = [], []
            for r in range(a.repeat):
                url = pg.fresh() if store == "postgres" else None
                w0s.append(timed([wfhost, "run", "-q", "w0.yaml"], scratch, env_for(scratch / f"h-{store}-0-{r}", url)))
                url = pg.fresh() if store == "postgres" else None
                w1s.append(timed([wfhost, "run", "-q", "w1.yaml"], scratch, env_for(scratch / f"h-{store}-1-{r}", url)))
            w0, w1 = statistics.median(w0s), statistics.median(w1s)
            rows[store] = (w0, w1, (w1 - w0) / (a.fan_out + 2))
        print("| store | W0 | W1 | per step | ratio to SQLite |\n|---|---:|---:|---:|---:|")
        for store, (w0, w1, per) in rows.items():
            print(f"| {store} | {w0 * 1000:.1f} ms | {w1 * 1000:.0f} ms | {per * 1000:.3f} ms | "
                  f"{per / rows['sqlite'][2]:.2f}× |")

        print(f"\n## Hand-off: queued run to its step started on a waiting worker ({a.samples} runs)\n")
        url = pg.fresh()
        worker = subprocess.Popen([wfhost, "worker", "--concurrency", "1", "-q"], cwd=scratch,
                                  env=env_for(scratch / "handoff-worker", url))
        try:
            time.sleep(1.0)
            for _ in range(a.samples):
                subprocess.run([wfhost, "run", "w0.yaml", "--detach", "-q"], cwd=scratch,
                               env=env_for(scratch / "handoff", url), check=True, stdout=subprocess.DEVNULL)
                deadline = time.time() + 30
                while pg.sql(url, "SELECT COUNT(*) FROM runs WHERE status <> 'completed'") != "0":
                    if time.time() > deadline:
                        sys.exit("a queued run did not complete")
                    time.sleep(0.02)
        finally:
            worker.terminate()
            worker.wait()
        gaps = pg.sql(url, """
            SELECT EXTRACT(EPOCH FROM (s.at::timestamptz - c.at::timestamptz)) * 1000
            FROM events c JOIN events s ON s.run_id = c.run_id
            WHERE c.kind = 'run_created' AND s.kind = 'step_started' AND s.step_id = 'root'""").split()
        gaps = sorted(float(g) for g in gaps)
        p99 = gaps[min(len(gaps) - 1, int(round(0.99 * (len(gaps) - 1))))]
        print(f"p50 {statistics.median(gaps):.0f} ms · p99 {p99:.0f} ms · min {gaps[0]:.0f} ms "
              f"(n = {len(gaps)})")

        print(f"\n## Step completing to its dependent starting on another worker (chain of {a.chain})\n")
        url = pg.fresh()
        chain = "name: chain\nsteps:\n" + "".join(
            f"  - id: c{i}\n" + (f"    needs: [c{i - 1}]\n" if i else "") + "    type: function\n    component: echo\n"
            for i in range(a.chain))
        (scratch / "chain.yaml").write_text(chain)
        subprocess.run([wfhost, "run", "chain.yaml", "--detach", "-q"], cwd=scratch,
                       env=env_for(scratch / "chain", url), check=True, stdout=subprocess.DEVNULL)
        workers = [subprocess.Popen([wfhost, "worker", "--until-idle", "--concurrency", "1", "-q"],
                                    cwd=scratch, env=env_for(scratch / f"chain-{i}", url))
                   for i in range(2)]
        for w in workers:
            w.wait()
        rows = pg.sql(url, """
            SELECT EXTRACT(EPOCH FROM (d.claimed_at::timestamptz - p.finished_at::timestamptz)) * 1000,
                   p.worker <> d.worker
            FROM step_tasks p JOIN step_tasks d
              ON d.run_id = p.run_id AND d.step_id = 'c' || (substr(p.step_id, 2)::int + 1)
            WHERE p.state = 'done' AND d.state = 'done'""").split()
        pairs = [(float(r.split("|")[0]), r.split("|")[1] == "t") for r in rows]
        for label, gaps in [("on another worker", [g for g, other in pairs if other]),
                            ("any worker", [g for g, _ in pairs])]:
            gaps = sorted(gaps)
            if not gaps:
                print(f"{label}: no pairs")
                continue
            p99 = gaps[min(len(gaps) - 1, int(round(0.99 * (len(gaps) - 1))))]
            print(f"{label}: p50 {statistics.median(gaps):.1f} ms · p99 {p99:.1f} ms "
                  f"(n = {len(gaps)})")
    finally:
        pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
