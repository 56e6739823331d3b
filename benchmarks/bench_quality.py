"""Image quality metrics on MNIST: FID and precision/recall/density/coverage on 10,000 vs 10,000 digits.

Target: FID and PRDC of 10,000 samples against 10,000 real digits in at most 5 s on 2 cores,
the features computed once and shared. The "samples" are 10,000 random MNIST training digits,
the real set the 10,000 test digits (the metrics' fixed real set at n = 10,000). Timed, each
the best and the median of REPEAT runs:

- features: the reference CNN's penultimate features of 10,000 images (once per set);
- fid: the Fréchet distance from the features (real statistics ready);
- prdc: precision/recall/density/coverage from the features, real k-NN radii ready, and the
  real radii alone (once per run);
- together, cold: the first generation of a run, fid(ctx) + prdc(ctx) through the metrics with
  nothing cached (real features, statistics and radii included);
- together, warm: a later generation (new samples; the real set cached);
each with torch on 2 threads and on 1 (see THREADS).

Also the figures that check the features: FID of two halves of the test set and against the
same half with pixel noise, and PRDC of training digits against test digits. Writes
benchmarks/results/quality.json.

    nice -n 19 .venv/bin/python benchmarks/bench_quality.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from model_collapse.metrics import METRICS, Context
from model_collapse.metrics import quality as q
from model_collapse.sources.images import ImageSourceConfig

N, REPEAT = 10_000, 5
THREADS = (2, 1)
OUT = Path(__file__).parent / "results" / "quality.json"


def timed(fn, repeat: int = REPEAT) -> dict:
    """Best and median wall seconds of fn() over `repeat` calls (after one untimed warm-up call), and
    the process CPU seconds of the best call: on a machine shared with other jobs the wall time
    grows with their load, while CPU seconds / threads approximates the wall time on idle cores."""
    fn()
    ts, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"best_s": min(ts), "median_s": statistics.median(ts), "cpu_s_of_best": cpu[ts.index(min(ts))]}


def main() -> None:
    src = ImageSourceConfig(kind="mnist").build(1)
    clf = src.reference_classifier()
    rng = np.random.default_rng(1)
    pick = lambda: src.pool[np.sort(rng.choice(len(src.pool), N, replace=False))][None]   # noqa: E731
    samples, later = pick(), pick()
    real_images = src.reference(N, np.random.default_rng(q.REAL_SEED))
    out = {"workload": f"{N:,} MNIST training digits (samples) vs the {N:,} MNIST test digits (real), "
                       "reference CNN penultimate features (128), k = 5",
           "load_before": os.getloadavg()}

    real = q.embed(clf, real_images[:, :-1])
    fake = q.embed(clf, samples[0, :, :-1])
    stats = q.RealSet(real)
    x = fake.astype(np.float64)
    radii = stats.radii(5)
    fid, prdc = (METRICS[m].instantiate({"n": N}) for m in ("fid", "prdc"))

    def together(images, cold):
        if cold:
            q._CACHE.pop(src, None)
        ctx = Context(0, None, images, None, src, None, np.random.default_rng(0))
        return {**fid(ctx), **prdc(ctx)}

    # Two threads use both cores of an idle machine; one thread is the robust figure when other
    # jobs hold the cores (two threads then wait on each other at every parallel region).
    for threads in THREADS:
        torch.set_num_threads(threads)
        out[f"threads_{threads}"] = {
            "features_10k": timed(lambda: q.embed(clf, samples[0, :, :-1])),
            "fid": timed(lambda: q.frechet_distance(stats.mean, stats.cov, x.mean(0), np.cov(x, rowvar=False),
                                                    stats.cov_sqrt)),
            "real_radii": timed(lambda: q.kth_neighbour_sq(real, 5)),
            "prdc": timed(lambda: q.prdc_features(real, fake, 5, radii)),
            "together_cold": timed(lambda: together(samples, True)),
            "together_warm": timed(lambda: together(later, False)),
        }
    torch.set_num_threads(THREADS[0])
    cols = together(samples, True)
    out["values"] = {k: float(v[0]) for k, v in cols.items()}

    # Sanity of the feature space: halves of the test set, and pixel noise.
    perm = np.random.default_rng(0).permutation(N)
    a, b = real[perm[:N // 2]], real_images[perm[N // 2:], :-1]
    half = q.RealSet(a)
    checks = {}
    for sigma in (0, 16, 32, 64, 128):
        px = np.clip(b + np.random.default_rng(sigma).normal(0, sigma, b.shape), 0, 255) if sigma else b
        f = q.embed(clf, px).astype(np.float64)
        checks[f"fid_test_halves_noise_{sigma}"] = q.frechet_distance(half.mean, half.cov, f.mean(0),
                                                                      np.cov(f, rowvar=False), half.cov_sqrt)
    out["checks"] = checks
    out["load_after"] = os.getloadavg()
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
