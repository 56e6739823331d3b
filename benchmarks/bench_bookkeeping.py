"""Bookkeeping after the work, through the `collapse` CLI, whole process: statistics and figures.

In one run this script measures:

1. A sweep's statistics and figure: 8 runs of 2,000 generations (`collapse sweep
   configs/gaussian-replace.yaml generations=2000 --grid regime.n=10,20,50,100 --seeds 2
   --workers 2`, the recipe's 1,000 chains: 148 MB of metrics.csv a run). The sweep's own end
   (from the last run's end in sweep.log to the process's exit: index, stats.csv, sweep.png), and
   `collapse plot SWEEP` (stats.csv + figures/sweep.png again, from the workers' chain-means
   caches) whole process, median of 3. Target: <= 10 s.
2. A run's figures against the run: a 2-D KDE accumulate run (50 chains, a pool of 10,000 points
   at generation 49, metrics [params]) and gmm-blog (W1: 10 chains x 2,000 generations): the
   `collapse run` wall (figures included) and `collapse plot RUN` whole process (every figure
   redrawn). Target: figures <= 10 s or 10% of the run, whichever is larger.

Wall-clock on a shared 2-core machine: the load average is recorded at the start and the end.
Writes benchmarks/results/bookkeeping.json (--quick: smaller sizes, to a temporary file unless
--json is given).

    .venv/bin/python benchmarks/bench_bookkeeping.py [--quick] [--json PATH]
"""

from __future__ import annotations

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLLAPSE = str(Path(sys.executable).parent / "collapse")

SWEEP = ["sweep", "configs/gaussian-replace.yaml", "generations=2000", "--grid", "regime.n=10,20,50,100",
         "--seeds", "2", "--workers", "2"]
KDE2D = ["run", "configs/kde.yaml", "source.mean=[0,0]", "source.std=[1,1]", "regime.kind=accumulate",
         "generations=50", "snapshots=[0,10,25,49]", "metrics=[params]"]
GMM = ["run", "configs/gmm-blog.yaml"]


def collapse(args: list[str]) -> float:
    """Wall seconds of one `collapse ...` subprocess (quiet); fails loudly if it fails."""
    t0 = time.perf_counter()
    p = subprocess.run([COLLAPSE, *args], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"`collapse {' '.join(args)}` failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def sweep_bookkeeping(tmp: Path, args: list[str], repeats: int) -> dict:
    """The sweep, its end (index, stats.csv, sweep.png) and `collapse plot SWEEP` repeated."""
    out = tmp / "sweep"
    wall = collapse([*args, "--out", str(out), "--quiet"])
    ended = time.time()
    events = [json.loads(line) for line in (out / "sweep.log").read_text().splitlines() if line.strip()]
    last_run = max(e["time"] for e in events if e.get("event") == "run")
    runs = [e for e in events if e.get("event") == "run"]
    plots = [collapse(["plot", str(out)]) for _ in range(repeats)]
    csv_mb = sum(p.stat().st_size for p in out.rglob("metrics.csv")) / 1e6
    return {"command": "collapse " + " ".join(args), "runs": len(runs), "sweep_wall_s": wall,
            "run_seconds_median": statistics.median(e["seconds"] for e in runs), "metrics_csv_mb": csv_mb,
            "end_of_sweep_s": ended - last_run, "plot_walls_s": plots, "plot_median_s": statistics.median(plots),
            "stats_rows": sum(1 for _ in open(out / "stats.csv")) - 1, "target_s": 10.0}


def run_figures(tmp: Path, name: str, args: list[str], repeats: int) -> dict:
    """A run's wall (figures included) and its figures redrawn by `collapse plot RUN`."""
    out = tmp / name
    wall = collapse([*args, "--out", str(out), "--quiet"])
    plots = [collapse(["plot", str(out)]) for _ in range(repeats)]
    figure = statistics.median(plots)
    budget = max(10.0, 0.1 * wall)
    return {"command": "collapse " + " ".join(args), "run_wall_s": wall, "plot_walls_s": plots,
            "figures_s": figure, "share_of_run": figure / wall, "budget_s": budget, "met": figure <= budget,
            "figures": sorted(p.name for p in (out / "figures").iterdir())}


def main() -> None:
    """Run everything, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each `collapse plot`")
    ap.add_argument("--json", type=Path, default=None, help="results file (default results/bookkeeping.json)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (< 1 min)")
    a = ap.parse_args()
    sweep, kde, gmm = SWEEP, KDE2D, GMM
    if a.quick:
        sweep = [*SWEEP[:2], "generations=50", "chains=20", *SWEEP[3:]]
        kde = [*KDE2D[:5], "generations=6", "snapshots=[0,5]", "chains=5", "metrics=[params]"]
        gmm = [*GMM, "generations=100"]
        a.repeats = 1
    path = a.json or (Path(tempfile.gettempdir()) / "bookkeeping-quick.json" if a.quick
                      else HERE / "results" / "bookkeeping.json")
    out = {"quick": a.quick, "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
           "loadavg_at_start": os.getloadavg(), "python": platform.python_version()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-bookkeeping-"))
    try:
        print("1. sweep: stats.csv + sweep.png", flush=True)
        out["sweep"] = sweep_bookkeeping(tmp, sweep, a.repeats)
        print("2. run figures: 2-D KDE accumulate, gmm-blog", flush=True)
        out["kde_2d"] = run_figures(tmp, "kde2d", kde, a.repeats)
        out["gmm_blog"] = run_figures(tmp, "gmm", gmm, a.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["loadavg_at_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    print(f"\nwrote {path}")


def table(o: dict) -> str:
    """The markdown summary."""
    s = o["sweep"]
    rows = ["| measure | value |", "|---|---|",
            f"| sweep: {s['runs']} runs ({s['metrics_csv_mb']:.0f} MB of metrics.csv), run median "
            f"{s['run_seconds_median']:.1f} s, sweep wall | {s['sweep_wall_s']:.1f} s |",
            f"| end of the sweep: last run done -> exit (index, stats.csv, sweep.png) | **{s['end_of_sweep_s']:.1f} s** "
            f"(target <= {s['target_s']:.0f}) |",
            f"| `collapse plot SWEEP` (stats.csv {s['stats_rows']:,} rows + sweep.png), whole process, median | "
            f"**{s['plot_median_s']:.1f} s** |"]
    for key, label in (("kde_2d", "2-D KDE accumulate, 50 chains, pool 10,000"), ("gmm_blog", "gmm-blog (W1)")):
        r = o[key]
        rows.append(f"| {label}: run {r['run_wall_s']:.1f} s; `collapse plot RUN` | **{r['figures_s']:.1f} s** = "
                    f"{100 * r['share_of_run']:.0f}% of the run (budget {r['budget_s']:.0f} s: "
                    f"{'met' if r['met'] else 'NOT met'}) |")
    rows.append(f"| machine | {o['cpus_usable']} of {o['cpus']} cores; load {o['loadavg_at_start'][0]:.1f} -> "
                f"{o['loadavg_at_end'][0]:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
