#!/usr/bin/env python3
"""Whole-process benchmark of wfhost against GNU make, measured in the same run.

Each workload is run as a user runs it: one process per run
(`wfhost run -q FILE` with a fresh home; `make -j -f FILE`), wall time of the
whole process, one warm-up then the median of --runs runs (W0, which costs
milliseconds, at least 21). The working
directory is on the default disk (under target/, not /tmp, which may be
tmpfs); pass --dir to choose another. The compile cache is warm (the
warm-up fills it), as a user's second run would be.

Workloads (as `wfhost bench`):
  W0   one no-op step (start-up cost)
  W1   1 root -> N no-op steps -> 1 sink, N in --fan-out (default 100,1000)
  W2   a chain of 200 steps, each passing its output on
  W3   1 -> 8 x `sleep 0.2` at parallelism 4 -> 1 (ideal 400 ms)
W1 and W2 run as `function` steps (a wasm component) and as `script` steps
(a sandboxed program: `true`); make runs `true` per target (fork+exec).

Per-step cost = (wall(W) - wall(W0)) / steps. Ratios are wfhost / make.

A big component's first run (--first-compile WASM): with an empty compile
cache, the run after it, and a run once its optimized build is cached.

Usage: bench/run.py [--wfhost PATH] [--runs 3] [--fan-out 100,1000,10000]
                    [--out bench/RESULTS.md] [--dir DIR] [--durability normal|full]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def function_step(step_id, needs=(), with_=None, parallelism=None):
    text = f"  - id: {step_id}\n    type: function\n    component: echo\n"
    if needs:
        text += f"    needs: [{', '.join(needs)}]\n"
    if with_:
        text += f"    with: {with_}\n"
    return text


def script_step(step_id, needs=(), command="true", program="true"):
    text = f"  - id: {step_id}\n    grants: {{ exec: [{program}] }}\n    run: {command}\n"
    if needs:
        text += f"    needs: [{', '.join(needs)}]\n"
    return text


def header(name, parallelism):
    return f"name: {name}\nconfig: {{ parallelism: {parallelism} }}\nsteps:\n"


def wf_w0(kind):
    step = function_step("only") if kind == "function" else script_step("only")
    return header("w0", 16) + step


def wf_w1(kind, n):
    make = function_step if kind == "function" else script_step
    text = header("w1", 16) + make("root")
    for i in range(n):
        text += make(f"s{i}", ["root"])
    text += make("sink", [f"s{i}" for i in range(n)])
    return text


def wf_w2(kind, n=200):
    text = header("w2", 16)
    if kind == "function":
        text += function_step("s0", with_="{ value: 0 }")
        for i in range(1, n):
            text += function_step(
                f"s{i}", [f"s{i - 1}"], with_=f'{{ value: "{{{{ steps.s{i - 1}.output.value + 1 }}}}" }}'
            )
    else:
        text += script_step("s0")
        for i in range(1, n):
            text += script_step(f"s{i}", [f"s{i - 1}"])
    return text


def wf_w3():
    text = header("w3", 4) + function_step("root")
    for i in range(8):
        text += script_step(f"sleep{i}", ["root"], command="sleep 0.2", program="sleep")
    text += function_step("sink", [f"sleep{i}" for i in range(8)])
    return text


def wf_sleepers(n, ms):
    """N steps that each wait `ms` on a host timer, all at once."""
    text = header("sleepers", n)
    for i in range(n):
        text += f"  - id: z{i}\n    type: function\n    component: sleep\n    with: {{ ms: {ms} }}\n"
    return text


def peak_rss_kib(cmd, cwd, env):
    """Run `cmd` in a child of a fresh Python; its peak RSS (KiB) and wall."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
             "w = time.perf_counter() - t\n"
             "sys.exit(r.stderr.decode(errors='replace')[-2000:]) if r.returncode else None\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, w)\n")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"memory workload failed: {done.stderr}")
    rss, wall = done.stdout.split()
    return int(rss), float(wall)


def most_asleep_at_once(wfhost, home, env):
    """The most steps of the home's only run that were asleep at the same
    moment: between their `step_suspended` and `step_woken` events
    (`logs --json`). None for a build whose steps do not suspend (before
    host.suspend, a sleeping step held its instance and recorded nothing)."""
    def run(*args):
        return subprocess.run([str(wfhost), *args, "--home", str(home), "--json"],
                              capture_output=True, text=True, env=env).stdout
    run_id = json.loads(run("runs"))[0]["id"]
    changes = []
    for line in run("logs", run_id).splitlines():
        event = json.loads(line)
        if event["kind"] == "step_suspended":
            changes.append((event["at"], 1))
        elif event["kind"] == "step_woken":
            changes.append((event["at"], -1))
    if not changes:
        return None
    # RFC 3339 UTC times of one form sort as text; a wake before a sleep at a tie.
    asleep = most = 0
    for _, change in sorted(changes):
        asleep += change
        most = max(most, asleep)
    return most


def mk_w0():
    return "all:\n\t@true\n"


def mk_w1(n):
    names = " ".join(f"s{i}" for i in range(n))
    text = f".PHONY: all root sink {names}\nall: sink\nroot:\n\t@true\n"
    for i in range(n):
        text += f"s{i}: root\n\t@true\n"
    text += f"sink: {names}\n\t@true\n"
    return text


def mk_w2(n=200):
    text = f".PHONY: all {' '.join(f's{i}' for i in range(n))}\nall: s{n - 1}\ns0:\n\t@true\n"
    for i in range(1, n):
        text += f"s{i}: s{i - 1}\n\t@true\n"
    return text


def mk_w3():
    sleeps = " ".join(f"sleep{i}" for i in range(8))
    text = f".PHONY: all root sink {sleeps}\nall: sink\nroot:\n\t@true\n"
    for i in range(8):
        text += f"sleep{i}: root\n\tsleep 0.2\n"
    text += f"sink: {sleeps}\n\t@true\n"
    return text


# The fewest runs of W0 (start-up) whatever --runs says.
W0_RUNS = 21


def timed(cmd, cwd, env=None):
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark command failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                 f"{done.stderr.decode(errors='replace')[-2000:]}")
    return wall


def median_wall(make_cmd, runs, workdir, env=None):
    """One warm-up, then the median of `runs`; each run gets a fresh workdir."""
    walls = []
    for i in range(runs + 1):
        run_dir = workdir / f"r{i}"
        run_dir.mkdir()
        wall = timed(make_cmd(run_dir), run_dir, env)
        shutil.rmtree(run_dir, ignore_errors=True)
        if i > 0:
            walls.append(wall)
    return statistics.median(walls)


def first_compile(wfhost, wasm, work, env, runs):
    """A big component's first run (empty compile cache: its quick build), the
    runs right after (while its optimized build is made in the background), and
    a run once the optimized build is cached; each with a fresh home."""
    wf_path = work / "first-compile.yaml"
    wf_path.write_text(f"name: first-compile\nsteps:\n  - id: greet\n    type: function\n"
                       f"    component: {wasm}\n    with: {{ name: bench }}\n")
    samples = {"first": [], "next": [], "optimized": []}
    for i in range(runs):
        cache = work / f"first-compile-cache-{i}"
        run_env = dict(env, WFHOST_CACHE_DIR=str(cache))

        def once(label, n=[0]):
            n[0] += 1
            home = work / f"first-compile-home-{i}-{n[0]}"
            samples[label].append(timed([str(wfhost), "run", "-q", "--home", str(home), str(wf_path)], work, run_env))

        once("first")
        once("next")
        waited = time.perf_counter()
        while (cache / "pending").exists() and any((cache / "pending").iterdir()):
            if time.perf_counter() - waited > 300:
                sys.exit("the optimized build did not finish within 300 s")
            time.sleep(0.1)
        optimized_after = time.perf_counter() - waited
        once("optimized")
        print(f"first-compile run {i + 1}: first {samples['first'][-1]:.2f} s, next {samples['next'][-1] * 1000:.0f} ms, "
              f"optimized build ready {optimized_after:.1f} s later, then {samples['optimized'][-1] * 1000:.0f} ms",
              file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
    size = wasm.stat().st_size / 1e6
    print(f"First compile: {wasm.name} ({size:.1f} MB), each run a fresh home, median of {runs}: "
          f"first run (empty compile cache) {statistics.median(samples['first']):.2f} s; "
          f"the next run {statistics.median(samples['next']) * 1000:.0f} ms (quick build cached, optimized one under way); "
          f"once the optimized build is cached {statistics.median(samples['optimized']) * 1000:.0f} ms.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wfhost", default=str(ROOT / "target/release/wfhost"),
                        help="the wfhost binary (default: target/release/wfhost, built if missing)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fan-out", default="100,1000", help="W1 widths, comma-separated")
    parser.add_argument("--dir", default=str(ROOT / "target/bench-work"),
                        help="working directory (default on the repository's disk)")
    parser.add_argument("--out", default=None, help="also write the results as Markdown here")
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--skip-scripts", action="store_true", help="skip the script-step variants")
    parser.add_argument("--sleepers", type=int, default=0,
                        help="also measure the peak RSS of N function steps sleeping at once (e.g. 10000)")
    parser.add_argument("--only-sleepers", action="store_true", help="run only the --sleepers workload")
    parser.add_argument("--first-compile", metavar="WASM", default=None,
                        help="also time a step plugin's first run with an empty compile cache, the "
                             "next runs, and a run after its optimized build is cached (e.g. the "
                             "18 MB component of `wfhost plugin new --lang python`)")
    parser.add_argument("--only-first-compile", action="store_true", help="run only the --first-compile workload")
    args = parser.parse_args()

    wfhost = Path(args.wfhost).resolve()
    if not wfhost.exists():
        print("building wfhost (release)...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-p", "wfhost"], cwd=ROOT, check=True)
    make = shutil.which("make")
    if not make:
        sys.exit("GNU make is needed (apt-get install make)")

    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    # A shared compile cache so the warm-up compiles once, as a user's home would.
    cache_home = work / "cache-home"
    cache_home.mkdir()
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(cache_home)
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]

    if args.sleepers:
        wf_path = work / "sleepers.yaml"
        wf_path.write_text(wf_sleepers(args.sleepers, 3000))
        samples = []
        for i in range(args.runs + 1):
            home = work / f"sleepers-home-{i}"
            home.mkdir()
            (home / "config.toml").write_text(f"[store]\ndurability = \"{args.durability}\"\n")
            rss, wall = peak_rss_kib([str(wfhost), "run", "-q", "--home", str(home), str(wf_path)], work, env)
            at_once = most_asleep_at_once(wfhost, home, env)
            shutil.rmtree(home, ignore_errors=True)
            if i > 0:
                samples.append((rss, wall, at_once))
        rss = statistics.median(r for r, _, _ in samples)
        wall = statistics.median(w for _, w, _ in samples)
        # How many slept at once, from the journal: an executor that admits
        # fewer live steps than asked would make the rest wait.
        counts = [a for _, _, a in samples if a is not None]
        at_once = (f"at least {min(counts)} asleep at once in each run" if len(counts) == len(samples)
                   else "how many slept at once is not recorded by this build")
        print(f"Memory: {args.sleepers} function steps sleeping 3 s (`sleep` component, "
              f"parallelism {args.sleepers}; {at_once}): "
              f"peak RSS {rss / 1024:.0f} MiB ({rss / args.sleepers:.1f} KiB per step), wall {wall:.2f} s; "
              f"median of {args.runs} after a warm-up.")
        if args.only_sleepers:
            shutil.rmtree(work, ignore_errors=True)
            return

    if args.first_compile:
        first_compile(wfhost, Path(args.first_compile).resolve(), work, env, args.runs)
        if args.only_first_compile:
            shutil.rmtree(work, ignore_errors=True)
            return

    shapes = []  # (label, steps, wf text or None, make text or None, kind)
    shapes.append(("W0", 1, {"function": wf_w0("function"), "script": wf_w0("script")}, mk_w0()))
    for n in [int(x) for x in args.fan_out.split(",") if x]:
        shapes.append((f"W1 N={n}", n + 2, {"function": wf_w1("function", n), "script": wf_w1("script", n)}, mk_w1(n)))
    shapes.append(("W2", 200, {"function": wf_w2("function"), "script": wf_w2("script")}, mk_w2()))
    shapes.append(("W3", 10, {"mixed": wf_w3()}, mk_w3()))

    kinds = ["function"] + ([] if args.skip_scripts else ["script"])
    config = f"[store]\ndurability = \"{args.durability}\"\n"
    results = {}
    for label, steps, workflows, makefile in shapes:
        mk_path = work / f"{label.replace(' ', '_')}.mk"
        mk_path.write_text(makefile)
        # W3 holds make to the workflow's parallelism of 4; the rest run unbounded (`-j`).
        jobs = ["-j", "4"] if label == "W3" else ["-j"]
        # W0 costs milliseconds and its ratio swings with the machine's
        # moment: it gets at least W0_RUNS runs.
        runs = max(args.runs, W0_RUNS) if label == "W0" else args.runs
        results[(label, "make")] = median_wall(lambda d: [make, "-s", *jobs, "-f", str(mk_path)], runs, work)
        for kind, text in workflows.items():
            if kind not in kinds and kind != "mixed":
                continue
            wf_path = work / f"{label.replace(' ', '_')}-{kind}.yaml"
            wf_path.write_text(text)

            def command(run_dir, wf_path=wf_path):
                home = run_dir / "home"
                home.mkdir()
                (home / "config.toml").write_text(config)
                return [str(wfhost), "run", "-q", "--home", str(home), str(wf_path)]

            results[(label, kind)] = median_wall(command, runs, work, env)
            print(f"{label:12} {kind:8} {results[(label, kind)] * 1000:9.1f} ms   make {results[(label, 'make')] * 1000:8.1f} ms",
                  file=sys.stderr)

    lines = []
    lines.append(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
                 f"working directory on {fs}; durability={args.durability}; median of {args.runs} runs after a warm-up "
                 f"(W0: {max(args.runs, W0_RUNS)}); "
                 f"whole process (`wfhost run -q`, `make -s -j`; W3 `make -j 4`).")
    lines.append("")
    lines.append("| workload | steps | make | wfhost function | ratio | wfhost script | ratio |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, steps, workflows, _ in shapes:
        row = [label, str(steps), f"{results[(label, 'make')] * 1000:.1f} ms"]
        for kind in ["function", "script"]:
            key = (label, kind) if label != "W3" else (label, "mixed")
            if kind == "script" and label == "W3":
                row += ["", ""]
                continue
            if key not in results:
                row += ["—", ""]
                continue
            row += [f"{results[key] * 1000:.1f} ms", f"{results[key] / results[(label, 'make')]:.2f}×"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Per step ((wall − W0 wall) / steps):")
    lines.append("")
    lines.append("| workload | make | wfhost function | ratio | wfhost script | ratio |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for label, steps, workflows, _ in shapes:
        if label in ("W0", "W3"):
            continue
        m = (results[(label, "make")] - results[("W0", "make")]) / steps
        row = [label, f"{m * 1000:.3f} ms"]
        for kind in ["function", "script"]:
            if (label, kind) not in results:
                row += ["—", ""]
                continue
            w = (results[(label, kind)] - results[("W0", kind)]) / steps
            row += [f"{w * 1000:.3f} ms", f"{w / m:.2f}×" if m > 0 else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"W3 wall: wfhost {results[('W3', 'mixed')] * 1000:.0f} ms, make {results[('W3', 'make')] * 1000:.0f} ms, "
                 f"ratio {results[('W3', 'mixed')] / results[('W3', 'make')]:.2f}×.")
    lines.append(f"Start (W0, function): ratio {results[('W0', 'function')] / results[('W0', 'make')]:.1f}× make.")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text("# Benchmark results\n\nProduced by `bench/run.py`.\n\n" + report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
