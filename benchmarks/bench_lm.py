"""W4 language-model benchmark: our transformer training and decoding against the plain loop a user would write.

Run:  .venv/bin/python benchmarks/bench_lm.py [--steps 600] [--threads 2] [--quick]
      .venv/bin/python benchmarks/bench_lm.py --recipe [--recipe-out runs/shumailov-lm]   (the recipe, ~25 min)

Measures in one process (ratios are taken within the run; the machine may be shared):
1. the matmul roofline of this machine: fp32 and bf16 GFLOP/s of a 2048^3 product;
2. training (BENCHMARKS.md W4): a character GPT (4 layers, 4 heads, width 128, context 128, our nn/gpt.py
   module), batch 32, AdamW lr 1e-3, on the KJV training split in blocks of 128 characters, from the same
   initial weights:
   - plain: what a user would write (nanoGPT's shape): the nn.Module, torch.optim.AdamW, fp32, eager, a
     Python loop over random batches;
   - ours: the family's training path (nn/trainer.py as families/transformer.py calls it): fused AdamW,
     bf16 autocast, eager (the default) and compiled;
   interleaved in rounds of steps, tokens/s best and median over rounds; every contender runs the same
   number of steps (the same tokens) and its held-out loss on 500 KJV validation blocks is taken at
   fixed step counts; achieved GFLOP/s = 3 x forward FLOPs per token x tokens/s;
3. decoding with the trained model: 8 sequences of 128 characters from BOS with and without the KV cache
   (W4's sampling baseline), 1,024 sequences with the cache, and 5-way beam search continuing 64-character
   prompts by 64 characters (the shumailov-lm recipe's decoding);
4. with --recipe: `collapse run configs/shumailov-lm.yaml` end to end, wall time and the real test
   perplexity of each generation of both variants.
Writes benchmarks/results/lm.json (the recipe's figures are kept when not re-run) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model_collapse.nn.generate import generate
from model_collapse.nn.gpt import GPT, lm_loss
from model_collapse.nn.trainer import Trainer, evaluate
from model_collapse.sources.text import KJVSourceConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm.json"
LAYERS, HEADS, WIDTH, CONTEXT, BATCH, LR = 4, 4, 128, 128, 32, 1e-3     # W4
DOC_ROOFLINE = 190.0         # BENCHMARKS.md: fp32 GFLOP/s of this machine class, as documented


def roofline() -> dict:
    """Best-of-10 GFLOP/s of a 2048^3 matmul in fp32 and bf16."""
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dt), torch.randn(2048, 2048, dtype=dt)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(10))
        out[name] = round(2 * 2048 ** 3 / best / 1e9, 1)
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def kjv_windows():
    """(inputs, targets) of the KJV training and validation splits in blocks of 128: BOS + block[:-1] -> block."""
    src = KJVSourceConfig(block=CONTEXT).build(1)
    v = len(src.vocab)

    def pairs(blocks):
        x = torch.from_numpy(blocks).long()
        return torch.cat([torch.full((len(x), 1), v), x[:, :-1]], 1), x
    return v, pairs(src.splits["train"]), pairs(src.splits["validation"][:500])


class Plain:
    """The user's loop: GPT module, torch.optim.AdamW (lr 1e-3), fp32, eager, random batches."""

    name = "plain"

    def __init__(self, model: GPT, train, seed: int):
        self.model, (self.x, self.y) = model, train
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR)
        self.gen = torch.Generator().manual_seed(seed)

    def steps(self, n: int) -> None:
        self.model.train()
        for _ in range(n):
            idx = torch.randint(0, len(self.x), (BATCH,), generator=self.gen)
            logits = self.model(self.x[idx])
            loss = F.cross_entropy(logits.flatten(0, 1), self.y[idx].flatten())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class Ours:
    """The family's path: the project's Trainer (fused AdamW, bf16 autocast, optionally compiled), epoch batches."""

    def __init__(self, model: GPT, train, seed: int, compile: bool, precision: str = "bf16"):
        self.name = f"ours-{precision}-{'compiled' if compile else 'eager'}"
        self.model, self.train = model, (train[0][None], train[1][None])
        self.trainer = Trainer(model, lm_loss, lr=LR, optimizer="adamw", weight_decay=0.01, compile=compile,
                               precision=precision, name="transformer")
        self.gen = torch.Generator().manual_seed(seed)
        self.batches, self.at = None, 0
        t0 = time.perf_counter()
        self.steps(2)        # compile (or warm up) here, not inside a timed round
        self.compile_s = time.perf_counter() - t0

    def steps(self, n: int) -> None:
        while n > 0:
            if self.batches is None or self.at >= len(self.batches[0]):
                self.batches, self.at = self.trainer.batches(self.train, BATCH, self.gen), 0
            k = min(n, len(self.batches[0]) - self.at)
            self.trainer.epoch([b[self.at:self.at + k] for b in self.batches])
            self.at, n = self.at + k, n - k


def heldout(model: GPT, val) -> float:
    """Mean next-character loss (nats) on the validation blocks."""
    return float(evaluate(model, lm_loss, (val[0][None], val[1][None]), 100)[0][0])


def train_race(args, v, train, val) -> dict:
    """Interleaved rounds of steps; tokens/s per round; held-out loss at fixed step counts."""
    init = GPT(v, CONTEXT, LAYERS, HEADS, WIDTH)
    init.reset_parameters(torch.Generator().manual_seed(0))

    def copy():
        m = GPT(v, CONTEXT, LAYERS, HEADS, WIDTH)
        m.load_state_dict(init.state_dict())
        return m
    racers = [Plain(copy(), train, 1), Ours(copy(), train, 1, compile=False)]
    if not args.no_compile:
        racers.append(Ours(copy(), train, 1, compile=True))
    for r in racers:   # the warm-up steps of Ours count: give the plain loop the same
        if isinstance(r, Plain):
            r.steps(2)
    done, times, losses = 2, {r.name: [] for r in racers}, {r.name: {} for r in racers}
    marks = sorted({m for m in (100, 300, args.steps) if m <= args.steps})
    while done < args.steps:
        n = min(args.round, args.steps - done, min(m for m in marks if m > done) - done)
        for r in racers:
            times[r.name].append((n, _timed(lambda: r.steps(n))))
        done += n
        if done in marks:
            for r in racers:
                losses[r.name][done] = round(heldout(r.model, val), 4)
    flops = 3 * racers[0].model.flops_per_token(CONTEXT)
    out = {}
    for r in racers:
        rates = [n * BATCH * CONTEXT / t for n, t in times[r.name]]
        total = sum(n for n, _ in times[r.name]) * BATCH * CONTEXT / sum(t for _, t in times[r.name])
        out[r.name] = {"tokens_per_s_best": round(max(rates)), "tokens_per_s_median": round(statistics.median(rates)),
                       "tokens_per_s_overall": round(total), "gflops_median": round(flops * statistics.median(rates) / 1e9, 1),
                       "gflops_best": round(flops * max(rates) / 1e9, 1), "heldout_loss_at_step": losses[r.name],
                       "compile_s": round(getattr(r, "compile_s", 0.0), 1)}
    for r in racers[1:]:
        for stat in ("best", "median", "overall"):
            out[r.name][f"speedup_{stat}"] = round(out[r.name][f"tokens_per_s_{stat}"] /
                                                   out["plain"][f"tokens_per_s_{stat}"], 2)
    out["flops_per_token_train"] = flops
    out["tokens"] = args.steps * BATCH * CONTEXT
    return out, racers[1].model


def decode_race(model: GPT, v: int, quick: bool) -> dict:
    """Tokens/s of decoding with and without the KV cache, and of beam search, with a trained model."""
    out = {}
    g = lambda: torch.Generator().manual_seed(0)                     # noqa: E731
    seq8 = torch.full((8, CONTEXT + 1), v)
    for cache in (True, False):
        generate(model, seq8[:, :12], 1, gen=g(), cache=cache)      # warm up
        best = min(_timed(lambda: generate(model, seq8, 1, gen=g(), cache=cache)) for _ in range(1 if quick else 3))
        out[f"sample_8x128_{'cache' if cache else 'nocache'}_tokens_per_s"] = round(8 * CONTEXT / best)
    out["kv_cache_speedup_8x128"] = round(out["sample_8x128_cache_tokens_per_s"] /
                                          out["sample_8x128_nocache_tokens_per_s"], 2)
    rows = 256 if quick else 1024
    big = torch.full((rows, CONTEXT + 1), v)
    out[f"sample_{rows}x128_cache_tokens_per_s"] = round(rows * CONTEXT /
                                                        _timed(lambda: generate(model, big, 1, gen=g())))
    blocks = 40 if quick else 205          # 205 blocks x 5 beams = the family's 1,024 decoding rows
    prompts = torch.randint(0, v, (blocks, CONTEXT + 1), generator=g())
    prompts[:, 0] = v
    t = _timed(lambda: generate(model, prompts, 65, decode="beam", beams=5))
    out["beam5_64_plus_64"] = {"blocks_per_s": round(blocks / t, 1), "new_tokens_per_s": round(blocks * 64 / t)}
    return out


def recipe(out_dir: Path) -> dict:
    """Run the shumailov-lm recipe through the CLI; wall time and real test perplexity per generation."""
    t0 = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "collapse"), "run", "configs/shumailov-lm.yaml",
                           "--out", str(out_dir), "--overwrite", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"shumailov-lm failed: {done.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "command": "collapse run configs/shumailov-lm.yaml", **read_recipe(out_dir)}


def read_recipe(out_dir: Path) -> dict:
    """Per variant: test perplexity, and the generation-0 model's median perplexity of the text, by generation."""
    res = {}
    for variant in sorted(p for p in out_dir.iterdir() if (p / "metrics.csv").exists()):
        rows = list(csv.DictReader((variant / "metrics.csv").open()))
        res[variant.name] = {"test_ppl": [round(float(r["test_ppl"]), 3) for r in rows],
                             "ppl0_median": [round(float(r["ppl0_median"]), 3) for r in rows],
                             "token_tail": [round(float(r["token_tail"]), 4) for r in rows]}
        timings = list(csv.DictReader((variant / "timings.csv").open())) if (variant / "timings.csv").exists() else []
        for phase in ("fit", "sample"):
            res[variant.name][f"{phase}_s_total"] = round(sum(float(t["seconds"]) for t in timings
                                                              if t["phase"] == phase), 1)
    return res


def main(argv=None) -> dict:
    """Run the measurements, write results/lm.json, print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    ap.add_argument("--steps", type=int, default=600, help="training steps per contender (W4: 1,000 = 4.1 M tokens)")
    ap.add_argument("--round", type=int, default=25, help="steps per contender per interleaved round")
    ap.add_argument("--no-compile", action="store_true", help="leave out the compiled contender")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (numbers not meaningful)")
    ap.add_argument("--recipe", action="store_true", help="also run shumailov-lm end to end (~25 min)")
    ap.add_argument("--recipe-out", type=Path, default=ROOT / "runs" / "bench-shumailov-lm")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.round = 40, 10
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()}}
    t0 = time.perf_counter()
    res["roofline_gflops"] = {**roofline(), "documented_fp32": DOC_ROOFLINE}
    v, train, val = kjv_windows()
    res["train"], trained = train_race(args, v, train, val)
    res["decode"] = decode_race(trained, v, args.quick)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.recipe:
        res["shumailov_lm"] = recipe(args.recipe_out)
    elif "shumailov_lm" in old:
        res["shumailov_lm"] = old["shumailov_lm"]
    res["machine"]["load_avg_end"] = os.getloadavg()
    res["total_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(table(res))
    return res


def table(res: dict) -> str:
    """The results as markdown."""
    m, tr, rf = res["machine"], res["train"], res["roofline_gflops"]
    lines = [f"threads {m['threads']}, load average {m['load_avg_start'][0]:.2f} at start, "
             f"{m['load_avg_end'][0]:.2f} at end; total {res['total_s']} s; matmul roofline fp32 {rf['fp32']} / "
             f"bf16 {rf['bf16']} GFLOP/s (documented fp32: {rf['documented_fp32']})", "",
             f"| training, {tr['tokens']:,} tokens | tokens/s median (best) | x plain | GFLOP/s median | "
             "held-out loss by step | compile s |", "|---|---|---|---|---|---|"]
    for k, r in tr.items():
        if not isinstance(r, dict):
            continue
        lines.append(f"| {k} | {r['tokens_per_s_median']:,} ({r['tokens_per_s_best']:,}) | "
                     f"{r.get('speedup_median', 1.0)} | {r['gflops_median']} | {r['heldout_loss_at_step']} | "
                     f"{r['compile_s']} |")
    d = res["decode"]
    lines += ["", f"decoding: 8 x 128 characters {d['sample_8x128_cache_tokens_per_s']:,} tokens/s with the KV cache, "
              f"{d['sample_8x128_nocache_tokens_per_s']:,} without (**{d['kv_cache_speedup_8x128']}x**); beam 5 "
              f"(64 + 64): {d['beam5_64_plus_64']['blocks_per_s']} blocks/s"]
    if "shumailov_lm" in res:
        s = res["shumailov_lm"]
        lines.append(f"\nshumailov-lm end to end: {s.get('wall_s')} s")
        for k, r in s.items():
            if isinstance(r, dict):
                lines.append(f"- {k}: test perplexity {r['test_ppl']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
