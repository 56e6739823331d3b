"""W1: 1-D two-component GMM refitted on its own samples (truth: weights 0.5/0.5, means -2/+2,
sds 1/1; N = 10,000 samples a generation; each generation refits on the previous one's samples).

In one run: the scikit-learn baseline (GaussianMixture(2).fit(x); x = gm.sample(N), timed on fewer
generations and reported per generation), our family on one chain for the full 2,000 generations
(the speed-up is per generation), 100 chains x 2,000 generations, and the faithfulness figure:
the smallest component's sd after 500 generations across chains, for scikit-learn's fresh fits,
our default, and warm-started EM at tol 1e-3 and 1e-6. Writes benchmarks/results/gmm.json and
prints a markdown table. Timings are wall clock on a shared machine (other processes may be
running); CPU times of this process are reported next to them.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_gmm.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp

from model_collapse.families.gmm import GMMConfig, GMMFamily, load_kernel

N = 10_000
TRUTH = dict(weights=[0.5, 0.5], means=[[-2.0], [2.0]], covs=[[[1.0]], [[1.0]]])


def truth_sample(chains: int, rng: np.random.Generator) -> np.ndarray:
    """Generation 0's data: N true draws per chain, (S, N, 1)."""
    return GMMFamily.from_params(chains=chains, **TRUTH).sample(N, rng)


def sklearn_chain(args) -> tuple[np.ndarray, float, float]:
    """One chain of the scikit-learn loop: (smallest sd after each recorded generation, wall s, cpu s)."""
    seed, gens, threads = args
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(seed)
    x = truth_sample(1, rng)[0]
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(threads) if threads else _null():
        for _ in range(gens):
            gm = GaussianMixture(2, random_state=int(rng.integers(2**31))).fit(x)
            gm.random_state = int(rng.integers(2**31))
            x, _ = gm.sample(N)
    return float(np.sqrt(gm.covariances_.ravel()).min()), time.perf_counter() - t0, time.process_time() - c0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def ours(chains: int, gens: int, seed: int = 0, **cfg) -> tuple[GMMFamily, float, float]:
    """Our loop fit(x); x = sample(N) on `chains` chains: (family, wall s, cpu s)."""
    rng = np.random.default_rng(seed)
    fam = GMMFamily(GMMConfig(**cfg), 1, chains)
    x = truth_sample(chains, rng)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(gens):
        fam.fit(x, rng)
        x = fam.sample(N, rng)
    return fam, time.perf_counter() - t0, time.process_time() - c0


def smallest_sd(fam: GMMFamily) -> np.ndarray:
    """(S,) smaller component sd of each chain."""
    return np.sqrt(fam.covs[:, :, 0, 0]).min(axis=1)


def summary(v: np.ndarray) -> dict:
    """Mean, sd and quartiles over chains."""
    q = np.quantile(v, [0.25, 0.5, 0.75])
    return {"chains": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)),
            "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def main() -> None:
    """Run everything, print the table, write benchmarks/results/gmm.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-gens", type=int, default=200)
    ap.add_argument("--gens", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=100)
    ap.add_argument("--faith-gens", type=int, default=500)
    ap.add_argument("--faith-chains", type=int, default=200, help="chains per variant of ours")
    ap.add_argument("--sk-chains", type=int, default=40, help="chains of the scikit-learn oracle")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.baseline_gens, a.gens, a.chains, a.faith_gens, a.faith_chains, a.sk_chains = 20, 200, 10, 50, 20, 4
    out = {"workload": "W1", "N": N, "cpus": len(os.sched_getaffinity(0)),
           "loadavg_at_start": os.getloadavg()}
    load_kernel()   # compile (or load the cached build) before timing

    # 1. baseline: scikit-learn with its default threading, and pinned to one thread
    for key, threads in (("sklearn", 0), ("sklearn_1thread", 1)):
        _, wall, cpu = sklearn_chain((1, a.baseline_gens, threads))
        out[key] = {"generations": a.baseline_gens, "ms_per_gen": 1e3 * wall / a.baseline_gens,
                    "cpu_ms_per_gen": 1e3 * cpu / a.baseline_gens}
        print(f"{key}: {out[key]['ms_per_gen']:.2f} ms/gen", flush=True)

    # 2. ours, one chain, the full run; and the NumPy fallback on fewer generations
    _, wall, cpu = ours(1, a.gens)
    out["ours_1chain"] = {"generations": a.gens, "ms_per_gen": 1e3 * wall / a.gens,
                          "cpu_ms_per_gen": 1e3 * cpu / a.gens, "seconds": wall}
    _, wall, cpu = ours(1, a.baseline_gens, backend="numpy")
    out["ours_numpy_1chain"] = {"generations": a.baseline_gens, "ms_per_gen": 1e3 * wall / a.baseline_gens,
                                "cpu_ms_per_gen": 1e3 * cpu / a.baseline_gens}
    base = out["sklearn"]["ms_per_gen"]
    out["speedup_vs_sklearn"] = base / out["ours_1chain"]["ms_per_gen"]
    out["speedup_vs_sklearn_1thread"] = out["sklearn_1thread"]["ms_per_gen"] / out["ours_1chain"]["ms_per_gen"]
    out["speedup_cpu_vs_sklearn_1thread"] = out["sklearn_1thread"]["cpu_ms_per_gen"] / out["ours_1chain"]["cpu_ms_per_gen"]
    print(f"ours 1 chain: {out['ours_1chain']['ms_per_gen']:.3f} ms/gen "
          f"(x{out['speedup_vs_sklearn']:.0f} vs sklearn)", flush=True)

    # 3. many chains
    _, wall, cpu = ours(a.chains, a.gens)
    out["ours_many"] = {"chains": a.chains, "generations": a.gens, "seconds": wall, "cpu_seconds": cpu}
    print(f"ours {a.chains} chains x {a.gens} gens: {wall:.1f} s", flush=True)

    # 4. faithfulness: smallest component sd after faith_gens generations, across chains
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")   # fresh interpreters: no OpenMP state inherited through fork
    with ctx.Pool(a.workers) as pool:
        sk = np.array([r[0] for r in pool.map(sklearn_chain, [(1000 + c, a.faith_gens, 1) for c in range(a.sk_chains)])])
    faith = {"generations": a.faith_gens, "sklearn_fresh": summary(sk)}
    variants = {"ours_default": {}, "warm_tol_1e-3": {"init": "warm", "tol": 1e-3},
                "warm_tol_1e-6": {"init": "warm", "tol": 1e-6}}
    for name, cfg in variants.items():
        fam, _, _ = ours(a.faith_chains, a.faith_gens, seed=7, **cfg)
        v = smallest_sd(fam)
        faith[name] = {**summary(v), "ks_p_vs_sklearn": float(ks_2samp(v, sk).pvalue), "config": cfg,
                       "mean_em_iter_last_gen": float(fam.n_iter.mean())}
    faith["seconds"] = time.perf_counter() - t0
    out["faithfulness"] = faith
    out["loadavg_at_end"] = os.getloadavg()

    path = Path(__file__).parent / "results" / "gmm.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))


def table(o: dict) -> str:
    """The markdown summary."""
    rows = ["| measure | value |", "|---|---|",
            f"| scikit-learn loop, default threads ({o['sklearn']['generations']} gens) | {o['sklearn']['ms_per_gen']:.2f} ms/gen |",
            f"| scikit-learn loop, 1 thread | {o['sklearn_1thread']['ms_per_gen']:.2f} ms/gen "
            f"({o['sklearn_1thread']['cpu_ms_per_gen']:.2f} CPU) |",
            f"| ours, 1 chain x {o['ours_1chain']['generations']} gens | {o['ours_1chain']['ms_per_gen']:.3f} ms/gen "
            f"({o['ours_1chain']['cpu_ms_per_gen']:.3f} CPU) |",
            f"| speed-up vs default / 1-thread sklearn (wall) | x{o['speedup_vs_sklearn']:.0f} / x{o['speedup_vs_sklearn_1thread']:.0f} |",
            f"| speed-up vs 1-thread sklearn (CPU time) | x{o['speedup_cpu_vs_sklearn_1thread']:.0f} |",
            f"| ours, NumPy fallback, 1 chain | {o['ours_numpy_1chain']['ms_per_gen']:.2f} ms/gen |",
            f"| ours, {o['ours_many']['chains']} chains x {o['ours_many']['generations']} gens | {o['ours_many']['seconds']:.1f} s |",
            "", f"Smallest component sd after {o['faithfulness']['generations']} generations, over chains:", "",
            "| fits | chains | mean | sd | median [q25, q75] | KS p vs sklearn |", "|---|---|---|---|---|---|"]
    for name, f in o["faithfulness"].items():
        if isinstance(f, dict) and "mean" in f:
            p = f.get("ks_p_vs_sklearn")
            rows.append(f"| {name} | {f['chains']} | {f['mean']:.3f} | {f['sd']:.3f} | {f['median']:.3f} "
                        f"[{f['q25']:.3f}, {f['q75']:.3f}] | {'' if p is None else f'{p:.3g}'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
