"""Qiao et al. (2025), selection bias, in their protocol: our `qiao-selection` recipe (their seed 42, 20 chains)
and the `qiao-seeds` sweep (their five seeds, 4 chains each) beside the figures they publish for n = 100, t = 200.

For every variant, means over chains (and seeds) at generation 0 and the last generation:
the smallest component weight, the share of chains left with one live component, and the dispersion ratio
(the trace of 4,096 fresh draws' covariance over the truth's).

Qiao et al.'s figures (their repository's NonGaussian_Modeling results: rebuttal_non_gaussian_results.md and
final_iteration_summary.csv, 5 seeds, one run each): dispersion ratio and smallest weight at t = 200.

    .venv/bin/python benchmarks/bench_qiao.py                   # runs both (4-14 min on 2 cores)
    .venv/bin/python benchmarks/bench_qiao.py --run DIR --sweep DIR   # summarises runs made already
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

import model_collapse as mc

HERE = Path(__file__).resolve().parent
VARIANTS = ["replace", "accumulate", "replace-select", "accumulate-select", "unequal-replace",
            "unequal-accumulate", "unequal-replace-select", "unequal-accumulate-select"]
# Qiao et al.'s own figures at t = 200 (mean over their 5 seeds): (dispersion ratio, smallest weight);
# the `gmm` truth is our equal-weight variants, `unequal_gmm` the unequal-* ones.
PUBLISHED = {
    "replace": (0.0258, 0.000), "accumulate": (0.9455, 0.401),
    "replace-select": (0.0000, 0.000), "accumulate-select": (0.0923, 0.227),
    "unequal-replace": (0.0790, 0.000), "unequal-accumulate": (0.9699, 0.2794),
    "unequal-replace-select": (0.0000, 0.000), "unequal-accumulate-select": (0.0690, 0.1648),
}


def summarise(frames: list[pd.DataFrame]) -> dict:
    """Means over all chains of all frames (one frame per run of a variant) at the first and last generation."""
    df = pd.concat(frames, ignore_index=True)
    df["min_weight"] = df[["weight_0", "weight_1"]].min(axis=1)
    first, last = df[df.generation == df.generation.min()], df[df.generation == df.generation.max()]
    return {"generation_last": int(df.generation.max()), "chains": int(len(last)),
            "min_weight_g0": float(first.min_weight.mean()), "min_weight_last": float(last.min_weight.mean()),
            "lost_a_component": float((last.alive < 2).mean()),
            "dispersion_g0": float(first.dispersion.mean()), "dispersion_last": float(last.dispersion.mean()),
            "dispersion_last_median": float(last.dispersion.median())}


def from_run(path: Path) -> dict:
    return {v: summarise([pd.read_csv(path / v / "metrics.csv")]) for v in VARIANTS}


def from_sweep(path: Path) -> dict:
    runs = [path / d for d in pd.read_csv(path / "sweep.csv").run_dir]
    return {v: summarise([pd.read_csv(r / v / "metrics.csv") for r in runs]) for v in VARIANTS}


def table(name: str, res: dict) -> str:
    rows = [f"\n{name}\n", "| variant | smallest weight | lost a component | dispersion ratio | "
            "Qiao et al.: dispersion | Qiao et al.: smallest weight |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        r, (pd_, pw) = res[v], PUBLISHED[v]
        rows.append(f"| {v} | {r['min_weight_g0']:.3f} -> {r['min_weight_last']:.3f} | {r['lost_a_component']:.0%} | "
                    f"{r['dispersion_g0']:.2f} -> {r['dispersion_last']:.3f} | {pd_:.3f} | {pw:.3f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an existing `collapse run qiao-selection` directory (else one is run)")
    ap.add_argument("--sweep", help="an existing `collapse sweep qiao-seeds` directory (else one is run)")
    ap.add_argument("--out", default="runs/bench-qiao", help="where new runs go")
    ap.add_argument("--json", default=str(HERE / "results" / "qiao-selection.json"))
    args = ap.parse_args()
    out: dict = {"published": {v: {"dispersion": d, "min_weight": w} for v, (d, w) in PUBLISHED.items()}}
    t0 = time.perf_counter()
    run_dir = Path(args.run) if args.run else Path(mc.run("qiao-selection", out=Path(args.out) / "seed42",
                                                          resume=True, figures=False).path)
    out["seconds_run"] = None if args.run else round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    sweep_dir = Path(args.sweep) if args.sweep else Path(mc.sweep("qiao-seeds", out=Path(args.out) / "seeds",
                                                                  figures=False).path)
    out["seconds_sweep"] = None if args.sweep else round(time.perf_counter() - t0, 1)
    out["seed42"], out["seeds"] = from_run(run_dir), from_sweep(sweep_dir)
    out.update(cpus=os.cpu_count(), loadavg_at_end=os.getloadavg(), numpy=np.__version__)
    print(table("qiao-selection (Qiao et al.'s seed 42, 20 chains)", out["seed42"]))
    print(table("qiao-seeds (their seeds 42, 123, 456, 789, 2024; 4 chains each)", out["seeds"]))
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
