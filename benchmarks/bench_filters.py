"""What a filter adds to a generation of the MNIST loop, at about 50% acceptance.

    .venv/bin/python benchmarks/bench_filters.py [generations]

Runs configs/mnist-quick.yaml (10,000 digits a generation; metrics [params, classes],
the recipe's own heavier figure metrics left out so the filter's share is not diluted)
through the loop with `random` (p = 0.5), `confidence` (q = 0.5: exactly half of every
round) and `verifier` (p = 1: ~55% of MNIST VAE samples agree with the reference CNN).

The ratio is taken within each run, generation by generation, so a different number of
VAE epochs cannot tilt it: the filtered draw (stage.filtered_sample: every round's
sampling, labelling and filtering) is timed, and in the same generation, on the same
fitted model, one plain `model.sample(n)` (what `filter: none` does there). Then

    ratio = generation time / (generation time - filtered draw + plain draw)

(the extra plain draw itself is taken out of the generation time) is how much longer the
generation took than it would have without the filter. The target is ratio <= 1.2. Torch
runs on one thread, so the loop thread's CPU time (time.thread_time) measures the work
itself and `cpu_ratio` holds on a shared machine; the wall-clock `ratio` is reported too
(on a busy machine the VAE fit slows more than inference, which flatters it). A `none` run of the same length is timed too, for reference (its fits
stop after other numbers of epochs, so its whole-run time is not the comparison).
Also times dedupe on 10,000 real MNIST digits. Writes benchmarks/results/filters.json. Generation 0 (30 VAE epochs from scratch) is
left out of the ratio: it is the same for every filter and would dilute it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from model_collapse import loop
from model_collapse.config import dump, load_raw, validate
from model_collapse.store import RunStore

HERE = Path(__file__).parent
ROOT = HERE.parent
OUT = HERE / "out" / "filters"
FILTERS = {"none": {"kind": "none"}, "random": {"kind": "random", "p": 0.5},
           "confidence": {"kind": "confidence", "q": 0.5}, "verifier": {"kind": "verifier", "p": 1.0}}


def timed_stage(log: list):
    """filtered_sample that also times one plain model.sample(n) of the same model (its rng apart)."""
    real = loop.filtered_sample

    def stage(model, filt, n, sample_rng, filter_rng, max_rounds=10, name="filter"):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = real(model, filt, n, sample_rng, filter_rng, max_rounds, name)
        t1, c1 = time.perf_counter(), time.thread_time()
        model.sample(n, np.random.default_rng(0))
        log.append({"filtered_draw": t1 - t0, "plain_draw": time.perf_counter() - t1,
                    "filtered_draw_cpu": c1 - c0, "plain_draw_cpu": time.thread_time() - c1,
                    "cpu_at_end": c1, "accept_rate": float(np.mean(out[1]))})
        return out
    return stage


def cpu_ratio(log: list) -> tuple[float, float, float]:
    """(ratio, filter CPU s, generation CPU s without filter) per generation from thread CPU times.

    With one torch thread all work runs on the loop's thread, so its CPU time is what the work
    costs, whatever else the machine runs. A cycle from one draw's end to the next is one whole
    generation (metrics, store, fit, draw), less the extra plain draw made here.
    """
    cycles = [log[g]["cpu_at_end"] - log[g - 1]["cpu_at_end"] - log[g - 1]["plain_draw_cpu"]
              for g in range(1, len(log))]
    extra = [log[g]["filtered_draw_cpu"] - log[g]["plain_draw_cpu"] for g in range(1, len(log))]
    total, add = sum(cycles), sum(extra)
    return total / (total - add), add / len(extra), (total - add) / len(extra)


def generation_seconds(run: Path) -> dict[int, float]:
    """Wall seconds of each generation (fit, draw, metrics, io) from the run's timings.csv."""
    out: dict[int, float] = {}
    for line in (run / "timings.csv").read_text().splitlines()[1:]:
        g, phase, sec = line.split(",")
        if phase in ("fit", "sample", "io") or phase.startswith("metric:"):
            out[int(g)] = out.get(int(g), 0.0) + float(sec)
    return out


def run(name: str, generations: int) -> dict:
    """One run of the recipe with filter `name`; per-generation times and the ratio."""
    raw = load_raw(ROOT / "configs" / "mnist-quick.yaml", [f"generations={generations}"])
    raw.update(filter=FILTERS[name], metrics=["params", "classes"], name=f"bench-filters-{name}")
    exp = validate(raw)
    path = OUT / name
    log: list = []
    real = loop.filtered_sample
    loop.filtered_sample = timed_stage(log)
    try:
        t0 = time.perf_counter()
        loop.run_generations(exp, RunStore.create(path, dump(exp), overwrite=True), progress=False)
        seconds = time.perf_counter() - t0
    finally:
        loop.filtered_sample = real
    gen = generation_seconds(path)
    res = {"seconds": seconds, "generation_seconds": [gen[g] for g in sorted(gen)]}
    if log:
        later = range(1, len(log))
        # timings.csv's sample phase holds the filtered draw and the extra plain draw made here
        total = sum(gen[g] for g in later)
        draw = sum(log[g]["filtered_draw"] for g in later)
        plain = sum(log[g]["plain_draw"] for g in later)
        with_filter, without = total - plain, total - draw
        res.update(draws=log, ratio=with_filter / without,
                   filter_seconds_per_generation=(draw - plain) / len(later),
                   generation_seconds_without_filter=without / len(later),
                   accept_rate=float(np.mean([log[g]["accept_rate"] for g in later])))
        res["cpu_ratio"], res["filter_cpu_seconds_per_generation"], res["generation_cpu_seconds_without_filter"] = \
            cpu_ratio(log)
        print(f"{name:10s} accept {res['accept_rate']:.2f}  wall: filter +{res['filter_seconds_per_generation']:.2f} s "
              f"on {res['generation_seconds_without_filter']:.2f} s a generation, ratio {res['ratio']:.3f}; "
              f"CPU: +{res['filter_cpu_seconds_per_generation']:.2f} s on "
              f"{res['generation_cpu_seconds_without_filter']:.2f} s, ratio {res['cpu_ratio']:.3f} "
              f"(target <= 1.2: {'met' if res['cpu_ratio'] <= 1.2 else 'NOT met'})", flush=True)
    else:
        print(f"{name:10s} {seconds:.1f} s, generations {np.round(res['generation_seconds'], 2).tolist()}",
              flush=True)
    return res


def dedupe_seconds(repeats: int = 3) -> dict:
    """dedupe on 10,000 real MNIST digits (100 of them planted twice): best of `repeats` per eps."""
    from model_collapse.filters.dedupe import DedupeFilterConfig
    from model_collapse.sources import SOURCES
    src = SOURCES["mnist"](kind="mnist").build(1)
    x = np.array(src.real(10000, np.random.default_rng(0)))
    x[:, 5000:5100] = x[:, :100]
    out = {}
    for eps in (0.0, 1.0, 1000.0):   # exact copies; near copies; ~1/6 of the digits (nearest neighbour ~750)
        f, best = DedupeFilterConfig(eps=eps).build(src), float("inf")
        for _ in range(repeats):
            f.begin()
            t0 = time.perf_counter()
            kept = int(f(x, None, None).sum())
            best = min(best, time.perf_counter() - t0)
        out[str(eps)] = {"seconds": best, "kept": kept}
        print(f"dedupe eps={eps:g} on 10,000 MNIST digits: {best:.2f} s, kept {kept}", flush=True)
    return out


def main(generations: int = 5) -> dict:
    import torch
    torch.set_num_threads(1)   # every torch op on the loop's thread: its CPU time is then load-proof
    results = {"config": "configs/mnist-quick.yaml", "generations": generations, "metrics": ["params", "classes"],
               "torch_threads": 1,
               "dedupe_10000_mnist": dedupe_seconds(),
               "runs": {name: run(name, generations) for name in FILTERS}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "filters.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
