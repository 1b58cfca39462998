#!/usr/bin/env python3
"""Load on `wfhost serve`, bounded and on loopback only.

Starts `wfhost serve` on a free loopback port with a fresh home under
target/bench-work (the default disk), opens CLIENTS Server-Sent-Events
clients on /api/events, starts RUNS runs of workflows/hello.yaml at once over
the API, and while they run measures GET /api/runs/{id}. At the end every
client's events of each run are compared with the store's (`wfhost watch RUN
--json`): none lost, none repeated, in order. Prints p50/p99 latency.

    python3 bench/serve_load.py [--bin target/release/wfhost] [--clients 50] [--runs 20]
"""
import argparse, http.client, json, os, shutil, statistics, subprocess, sys, threading, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
parser = argparse.ArgumentParser()
parser.add_argument("--bin", default=os.path.join(root, "target/release/wfhost"))
parser.add_argument("--clients", type=int, default=50)
parser.add_argument("--runs", type=int, default=20)
args = parser.parse_args()

home = os.path.join(root, "target/bench-work/serve-home")
shutil.rmtree(home, ignore_errors=True)
os.makedirs(home)
env = dict(os.environ, WFHOST_HOME=home, NO_COLOR="1")
server = subprocess.Popen([args.bin, "serve", "--bind", "127.0.0.1:0"], env=env,
                          stderr=subprocess.PIPE, text=True)
line = server.stderr.readline()
address = line.split("http://")[1].split("/")[0]
host, port = address.rsplit(":", 1)
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

def request(method, path, body=None):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else None

seen = [[] for _ in range(args.clients)]
stop = threading.Event()
def client(i):
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("GET", "/api/events?after=-1", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    while not stop.is_set():
        raw = response.fp.readline()
        if not raw:
            break
        text = raw.decode().rstrip("\n")
        if text.startswith("data: "):
            event = json.loads(text[6:])
            seen[i].append((event["run_id"], event["seq"]))
clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
for t in clients: t.start()
time.sleep(1.0)

hello = os.path.join(root, "workflows/hello.yaml")
ids, latencies = [], []
lock = threading.Lock()
def start():
    status, body = request("POST", "/api/runs", {"workflow": hello})
    assert status == 201, body
    with lock: ids.append(body["id"])
done_sampling = threading.Event()
def sampler():
    # GET /api/runs/{id} of the runs started so far, while they start and run.
    while not done_sampling.is_set():
        with lock: known = list(ids)
        if not known:
            time.sleep(0.005)
            continue
        for run in known:
            t0 = time.monotonic()
            status, doc = request("GET", f"/api/runs/{run}")
            with lock: latencies.append((time.monotonic() - t0) * 1000)
            assert status == 200, doc
samplers = [threading.Thread(target=sampler, daemon=True) for _ in range(4)]
began = time.monotonic()
for t in samplers: t.start()
starters = [threading.Thread(target=start) for _ in range(args.runs)]
for t in starters: t.start()
for t in starters: t.join()
pending = set(ids)
while pending:
    for run in list(pending):
        t0 = time.monotonic()
        status, doc = request("GET", f"/api/runs/{run}")
        latencies.append((time.monotonic() - t0) * 1000)
        assert status == 200, doc
        if doc["status"] in ("completed", "failed", "cancelled"):
            assert doc["status"] == "completed", doc
            pending.discard(run)
    if time.monotonic() - began > 300:
        sys.exit("runs did not finish in 300 s")
wall = time.monotonic() - began
done_sampling.set()
time.sleep(2.0)
stop.set()
problems = 0
for run in ids:
    out = subprocess.run([args.bin, "watch", run, "--json"], env=env, capture_output=True, text=True).stdout
    store = [json.loads(l)["seq"] for l in out.splitlines()]
    for i in range(args.clients):
        got = [seq for (r, seq) in seen[i] if r == run]
        if got != store:
            problems += 1
server.terminate()
server.wait()
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print(f"{args.clients} SSE clients, {args.runs} runs started at once: all completed in {wall:.2f} s")
print(f"GET /api/runs/{{id}} under load: {len(latencies)} requests, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms")
print(f"event streams compared with the store: {args.clients * len(ids)} (client, run) pairs, {problems} differ")
sys.exit(1 if problems else 0)
