"""Sweeps through the CLI, whole process: parallel speed-up, Ray's cost per run, a 1,000-run index.

In one run this script measures:

1. Speed-up of the local executor: 16 Gaussian runs (about 4-5 s each on a quiet core) as
   `collapse sweep CFG --seeds 16 --workers 2` against the same sweep with --workers 1 (one after
   another, same code path) and against 16 separate `collapse run` processes, repeats interleaved.
   Target: >= 1.7x over one after another on 2 cores.
2. Ray's overhead per run (when ray is installed): 200 tiny runs swept with --executor ray and
   with --executor local (2 workers each), 3 times interleaved; per-run cost in steady state =
   time between the first and the last run to finish / 199 (from sweep.log), so start-up (Ray's
   cluster, the forkserver) stays out; overhead = ray's per-run cost - local's; Ray's extra
   start-up = the difference of the walls less 200 x that overhead.
3. A sweep of 1,000 tiny runs: time per run over the first and the last hundred finished (from
   sweep.log), the number of sweep.csv rewrites and their total time (from the driver's end line),
   and one rewrite of a 1,000-row index timed alone (what rewriting per run would cost).

Wall-clock on a shared 2-core machine (run it under `nice -n 19` there); ratios come from the
same run. Writes benchmarks/results/sweep.json (--quick: smaller sizes, to a temporary file
unless --json is given).

    nice -n 19 .venv/bin/python benchmarks/bench_sweep.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLLAPSE = str(Path(sys.executable).parent / "collapse")

# ~4-5 s of sampling and refitting per run on one core, little I/O (one checkpoint at the end):
# long enough that a sweep's fixed cost (start-up, statistics, the figure: ~4 s) stays small.
WORK = {"name": "bench-work", "chains": 1000, "generations": 1200, "reference_n": 1000,
        "source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 100},
        "metrics": ["params"]}
# As small as a run gets: the cost is the run store (config, status, checkpoint, fsyncs) and dispatch.
TINY = {"name": "bench-tiny", "chains": 2, "generations": 3, "reference_n": 100, "source": {"kind": "gaussian"},
        "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 20}, "metrics": ["params"]}


def _child_cpu() -> float:
    """CPU seconds of finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one command; it must succeed."""
    cpu, t0 = _child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return wall, _child_cpu() - cpu


def run_cpu(sweep: Path) -> float:
    """CPU seconds of a sweep's runs, from sweep.log (its workers are not this process's children:
    the forkserver that forks them is never waited for, so rusage misses them)."""
    events = [json.loads(line) for line in (sweep / "sweep.log").read_text().splitlines()]
    return sum(e.get("cpu") or 0.0 for e in events if e["event"] == "run")


def sweep_cmd(cfg: Path, out: Path, *args: str) -> list[str]:
    """A quiet `collapse sweep` into a fresh directory."""
    return [COLLAPSE, "sweep", str(cfg), *args, "--out", str(out), "--overwrite", "--quiet"]


def speedup(tmp: Path, runs: int, repeats: int) -> dict:
    """Item 1: --workers 2 against --workers 1 and against separate `collapse run` processes."""
    cfg = tmp / "work.yaml"
    cfg.write_text(yaml.safe_dump(WORK))
    walls = {"sweep_workers_2": [], "sweep_workers_1": [], "separate_runs": []}
    cpus = {k: [] for k in walls}
    for _ in range(repeats):   # interleaved, so drifting load hits all three alike
        for key, workers in (("sweep_workers_2", "2"), ("sweep_workers_1", "1")):
            w, c = timed(sweep_cmd(cfg, tmp / key, "--seeds", str(runs), "--workers", workers))
            walls[key].append(w)
            cpus[key].append(c + run_cpu(tmp / key))
        t0, c0 = time.perf_counter(), _child_cpu()
        for s in range(runs):
            timed([COLLAPSE, "run", str(cfg), f"seed={s}", "--out", str(tmp / "sep" / str(s)), "--overwrite",
                   "--quiet"])
        walls["separate_runs"].append(time.perf_counter() - t0)
        cpus["separate_runs"].append(_child_cpu() - c0)
    med = {k: statistics.median(v) for k, v in walls.items()}
    # CPU seconds per wall second: how many cores the machine actually gave each variant (on a
    # shared machine, fewer than asked for; the speed-up can be no better than their ratio)
    cores = {k: statistics.median(c / w for c, w in zip(cpus[k], walls[k])) for k in walls}
    return {"runs": runs, "repeats": repeats, "config": WORK, "wall_s": walls, "child_cpu_s": cpus,
            "median_wall_s": med, "cores_obtained": cores,
            "speedup_vs_workers_1": med["sweep_workers_1"] / med["sweep_workers_2"],
            "speedup_vs_separate_runs": med["separate_runs"] / med["sweep_workers_2"],
            "target": ">= 1.7x over one after another"}


def _steady(sweep: Path) -> tuple[float, float]:
    """(seconds per run between the first and the last run to finish, seconds from the driver's
    start to the first finish): throughput without start-up, and start-up."""
    events = [json.loads(line) for line in (sweep / "sweep.log").read_text().splitlines()]
    done = sorted(e["time"] for e in events if e["event"] == "run")
    start = next(e["time"] for e in events if e["event"] == "start")
    return (done[-1] - done[0]) / (len(done) - 1), done[0] - start


def ray_overhead(tmp: Path, runs: int, repeats: int) -> dict | None:
    """Item 2: seconds per tiny run in steady state, ray against local (2 workers / 2 CPUs each)."""
    if importlib.util.find_spec("ray") is None:
        return None
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = {ex: {"wall_s": [], "per_run_s": [], "to_first_run_s": []} for ex in ("local", "ray")}
    for _ in range(repeats):   # interleaved
        for ex in out:
            w, _ = timed(sweep_cmd(cfg, tmp / ex, "--seeds", str(runs), "--workers", "2", "--executor", ex))
            per_run, first = _steady(tmp / ex)
            out[ex]["wall_s"].append(w)
            out[ex]["per_run_s"].append(per_run)
            out[ex]["to_first_run_s"].append(first)
    for ex in ("local", "ray"):
        out[ex]["median_per_run_s"] = statistics.median(out[ex]["per_run_s"])
        out[ex]["median_wall_s"] = statistics.median(out[ex]["wall_s"])
    out["overhead_per_run_s"] = out["ray"]["median_per_run_s"] - out["local"]["median_per_run_s"]
    out["startup_s"] = statistics.median(out["ray"]["wall_s"]) - statistics.median(out["local"]["wall_s"]) \
        - runs * out["overhead_per_run_s"]
    out["runs"], out["config"] = runs, TINY
    return out


def thousand(tmp: Path, runs: int) -> dict:
    """Item 3: a sweep of `runs` tiny runs; does the time per run grow as the index grows?"""
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp / "thousand"
    wall, cpu = timed(sweep_cmd(cfg, out, "--seeds", str(runs), "--workers", "2"))
    events = [json.loads(line) for line in (out / "sweep.log").read_text().splitlines()]
    finished = sorted((e for e in events if e["event"] == "run"), key=lambda e: e["time"])
    done = [e["time"] for e in finished]
    end = next(e for e in events if e["event"] == "end")
    k = min(100, runs // 4)
    first = (done[k] - done[0]) / k   # throughput over the first and the last k runs to finish
    last = (done[-1] - done[-1 - k]) / k
    # each run's own wall time (dispatch to result) and CPU, first and last k: load-independent-ish
    med = {name: {w: statistics.median(e[name] for e in part) for w, part in
                  (("first", finished[:k]), ("last", finished[-k:]))} for name in ("seconds", "cpu")}
    # One rewrite of the whole index, timed alone: what rewriting it after every run would cost.
    from model_collapse.sweeps.index import Index, read_index
    from model_collapse.sweeps.spec import load_spec, plan
    tasks = plan(load_spec(str(cfg), seeds=runs), out)
    idx = Index(out, tasks, [])
    for t, row in zip(tasks, read_index(out)):
        idx.set(t, row["status"])
    reps = []
    for _ in range(20):
        t0 = time.perf_counter()
        idx._rewrite()
        reps.append(time.perf_counter() - t0)
    one = statistics.median(reps)
    return {"runs": runs, "wall_s": wall, "child_cpu_s": cpu, "window": k,
            "first_window_s_per_run": first, "last_window_s_per_run": last, "last_over_first": last / first,
            "median_run_wall_s": med["seconds"], "median_run_cpu_s": med["cpu"],
            "index_rewrites": end["index_rewrites"], "index_seconds": end["index_seconds"],
            "one_rewrite_s": one, "rewrite_every_run_would_cost_s": one * runs,
            "complete": end["complete"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--json", help="where to write the results (default benchmarks/results/sweep.json)")
    ap.add_argument("--only", choices=["speedup", "ray", "thousand"], action="append",
                    help="measure only these parts (repeatable), keeping the others already in the JSON file")
    args = ap.parse_args()
    dest = Path(args.json) if args.json else (Path(tempfile.gettempdir()) / "sweep-quick.json" if args.quick
                                               else HERE / "results" / "sweep.json")
    parts = args.only or ["speedup", "ray", "thousand"]
    result = json.loads(dest.read_text()) if args.only and dest.exists() else {}
    result.update({"workload": "sweeps through the CLI", "quick": args.quick, "cpus": os.cpu_count(),
                   "cpus_usable": len(os.sched_getaffinity(0)), "niceness": os.nice(0),
                   "versions": {"python": platform.python_version(), "platform": platform.platform()}})
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        for part in parts:   # each with the load average when it began: the machine is shared
            load = os.getloadavg()
            if part == "speedup":
                r = speedup(tmp, 4 if args.quick else 16, 1 if args.quick else 2)
                print(f"{r['runs']} runs: workers 2 {r['median_wall_s']['sweep_workers_2']:.1f} s, workers 1 "
                      f"{r['median_wall_s']['sweep_workers_1']:.1f} s ({r['speedup_vs_workers_1']:.2f}x), separate "
                      f"runs {r['median_wall_s']['separate_runs']:.1f} s ({r['speedup_vs_separate_runs']:.2f}x); "
                      f"cores obtained {', '.join(f'{k} {v:.2f}' for k, v in r['cores_obtained'].items())}",
                      flush=True)
            elif part == "ray":
                r = ray_overhead(tmp, 20 if args.quick else 200, 1 if args.quick else 3)
                if r:
                    print(f"{r['runs']} tiny runs: ray {r['ray']['median_per_run_s'] * 1000:.1f} ms/run, local "
                          f"{r['local']['median_per_run_s'] * 1000:.1f} ms/run in steady state: overhead "
                          f"{r['overhead_per_run_s'] * 1000:.1f} ms/run; Ray's extra start-up {r['startup_s']:.1f} s",
                          flush=True)
            else:
                r = thousand(tmp, 100 if args.quick else 1000)
                print(f"{r['runs']} runs in {r['wall_s']:.0f} s: first {r['window']} "
                      f"{r['first_window_s_per_run'] * 1000:.0f} ms/run, last {r['last_window_s_per_run'] * 1000:.0f} "
                      f"ms/run ({r['last_over_first']:.2f}x); {r['index_rewrites']} index rewrites, "
                      f"{r['index_seconds']:.2f} s in all", flush=True)
            result[part] = None if r is None else {"loadavg_at_start": load, **r, "loadavg_at_end": os.getloadavg()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
