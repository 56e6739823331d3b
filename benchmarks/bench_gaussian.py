"""W3: 1,000 chains x 10,000 generations x N = 1,000 Gaussian refits (replace, MLE).

Runs the engine end to end (config -> loop -> run store on disk) with exact
sufficient statistics (model.summary=true: mean ~ Normal, scatter ~ Wishart),
and, in the same process, the loop a user would write with NumPy: draw N
points per chain, refit mean and variance. The baseline is timed on fewer
generations and reported per generation; the ratio is per generation.

    .venv/bin/python benchmarks/bench_gaussian.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model_collapse.config import dump, validate
from model_collapse.loop import run_generations
from model_collapse.store import RunStore, read_metrics

CHAINS, GENS, N = 1000, 10_000, 1000


def engine(record_every: int, summary: bool = True, gens: int = GENS) -> tuple[float, np.ndarray]:
    """Seconds for the whole engine run, and the final generation's variances."""
    exp = validate({"seed": 0, "chains": CHAINS, "generations": gens, "record_every": record_every,
                    "source": {"kind": "gaussian"}, "model": {"kind": "gaussian", "summary": summary},
                    "regime": {"kind": "replace", "n": N}, "metrics": ["params"]})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        store = RunStore.create(Path(d) / "run", dump(exp))
        run_generations(exp, store, progress=False)
        seconds = time.perf_counter() - t0
        cols, rows = read_metrics(Path(d) / "run")
    return seconds, rows[rows[:, 0] == gens - 1, cols.index("var")]


def numpy_loop(gens: int) -> float:
    """Seconds for the plain NumPy loop: sample N points per chain, refit (MLE)."""
    rng = np.random.default_rng(0)
    mean, sd = np.zeros(CHAINS), np.ones(CHAINS)
    t0 = time.perf_counter()
    for _ in range(gens):
        x = mean[:, None] + sd[:, None] * rng.standard_normal((CHAINS, N))
        mean, sd = x.mean(axis=1), x.std(axis=1)
    return time.perf_counter() - t0


def main() -> None:
    """Run and print the W3 table; write benchmarks/results/gaussian.json."""
    base_gens = 200
    base = numpy_loop(base_gens) / base_gens
    explicit, _ = engine(10, summary=False, gens=base_gens)
    t10, var10 = engine(10)
    t100, _ = engine(100)
    r = (N - 1) / N
    expect = r ** GENS  # E[var_g] = ((N-1)/N)^(g+1), here g + 1 = GENS
    res = {
        "workload": f"{CHAINS} chains x {GENS} generations x N={N}, replace, MLE",
        "numpy_loop_ms_per_generation": base * 1e3,
        "engine_explicit_ms_per_generation": explicit / base_gens * 1e3,
        "engine_summary_seconds_record_every_10": t10,
        "engine_summary_seconds_record_every_100": t100,
        "speedup_vs_numpy_loop_per_generation": base / (t10 / GENS),
        "final_mean_var": float(var10.mean()), "theory_final_mean_var": expect,
        "z_final_mean_var": float((var10.mean() - expect) / (var10.std(ddof=1) / np.sqrt(CHAINS))),
    }
    out = Path(__file__).parent / "results" / "gaussian.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"| W3 | {res['workload']} |\n|---|---|")
    print(f"| plain NumPy loop (sample + refit) | {base * 1e3:.2f} ms/generation -> {base * GENS:.0f} s projected |")
    print(f"| engine, explicit samples | {res['engine_explicit_ms_per_generation']:.2f} ms/generation |")
    print(f"| engine, exact summaries, metrics every 10th gen | {t10:.1f} s total |")
    print(f"| engine, exact summaries, metrics every 100th gen | {t100:.1f} s total |")
    print(f"| speed-up per generation vs NumPy loop | {res['speedup_vs_numpy_loop_per_generation']:.0f}x |")
    print(f"| E[var] at the last generation: measured / theory | {var10.mean():.3g} / {expect:.3g} "
          f"(z = {res['z_final_mean_var']:.2f}) |")


if __name__ == "__main__":
    sys.exit(main())
