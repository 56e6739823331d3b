"""W2 VAE benchmark: our chain-batched, compiled VAE step against the straightforward torch loop.

Run:  .venv/bin/python benchmarks/bench_vae.py [--threads N] [--budget SECONDS] [--quick] [--bf16]

Measures on the real MNIST train set (60,000 images, layout (1, 60000, 785) uint8):
1. seconds per epoch at batch 128: the reference (DataLoader over a TensorDataset, plain
   Adam, nn.Linear VAE 784-128-128-20, Gaussian decoder) against ours, interleaved;
2. seconds per epoch and effective GFLOP/s (86.8 GFLOP an epoch) at larger batches, with
   4 chains batched as one model, for our eager fallback (no torch.compile) and, with --bf16,
   under bfloat16 autocast;
3. time to quality from scratch for several batch sizes: epochs and seconds until the
   held-out -ELBO (per image, 6,000 held-out images) reaches 160.
Each timing is one full epoch; "best" is the least disturbed of the rounds (the machine
may be shared), "median" the typical one. Writes benchmarks/results/vae.json and prints
a markdown table. Compile time is reported separately (paid once per process and
architecture; later processes hit inductor's on-disk cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from model_collapse.datasets import load_mnist
from model_collapse.families.vae import VAEConfig, VAEFamily, heldout_terms
from model_collapse.nn.trainer import Trainer, evaluate
from model_collapse.nn.vae import MEAN, STD, VAE

GFLOP_EPOCH = 86.8          # W2: one VAE epoch on 60,000 images, forward + backward
N_TRAIN = 60000
RESULTS = Path(__file__).resolve().parent / "results" / "vae.json"
SPEED_DEADLINE = 60.0       # seconds: no further interleaved rounds start after this


# ---- the straightforward reference (what a user would write) -------------------------
class RefVAE(nn.Module):
    """W2's MLP VAE 784-128-128-20 with nn.Linear layers."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.mu, self.logvar = nn.Linear(128, 20), nn.Linear(128, 20)
        self.dec = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                 nn.Linear(128, 784))

    def forward(self, x):
        """Reconstruction, mean and log-variance of a batch (B, 784)."""
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.dec(z), mu, logvar


def ref_setup(images: np.ndarray, batch: int = 128):
    """Model, plain Adam and a shuffling DataLoader over normalised float32 images (N, 784)."""
    torch.manual_seed(0)
    x = (torch.from_numpy(images.reshape(len(images), -1)).float() / 255 - MEAN) / STD
    loader = DataLoader(TensorDataset(x), batch_size=batch, shuffle=True)
    model = RefVAE()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), loader


def ref_epoch(model, opt, loader) -> float:
    """One reference epoch; returns seconds."""
    t0 = time.perf_counter()
    for (x,) in loader:
        recon, mu, logvar = model(x)
        loss = F.mse_loss(recon, x, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        opt.zero_grad()
        (loss / len(x)).backward()
        opt.step()
    return time.perf_counter() - t0


# ---- ours -----------------------------------------------------------------------------
class Ours:
    """Our training loop at one (chains, batch) on the MNIST layout, timed per epoch."""

    def __init__(self, data: np.ndarray, chains: int, batch: int, lr: float = 1e-3, compile: bool = True,
                 val_fraction: float = 0.1, seed: int = 0, precision: str = "fp32"):
        self.cfg = VAEConfig(batch=batch, lr=lr, compile=compile, val_fraction=val_fraction, precision=precision)
        self.fam = VAEFamily(self.cfg, (28, 28), chains)
        self.gen = torch.Generator().manual_seed(seed)
        x = self.fam._pixels(np.repeat(data, chains, axis=0)).half()   # as VAEFamily.fit does
        self.train, self.val = (t.to(self.fam.device) for t in self.fam._split(x, self.gen))
        self.val_eps = torch.randn(chains, self.val.shape[1], 20, generator=self.gen).to(self.fam.device)
        self.model = self.fam._new_model().to(self.fam.device)
        self.restart()
        t0 = time.perf_counter()
        self.epoch(self.train[:, :batch * 2].contiguous())     # compile / warm up
        self.compile_s = time.perf_counter() - t0
        self.restart()

    def restart(self) -> None:
        """Fresh weights and a fresh optimizer, as a fit from scratch starts."""
        self.model.reset_parameters(self.gen)
        self.trainer = Trainer(self.model, VAE.loss, lr=self.cfg.lr, compile=self.cfg.compile,
                               precision=self.cfg.precision)

    def epoch(self, train: torch.Tensor | None = None) -> float:
        """One epoch over the training split (gather, noise and steps); returns seconds."""
        t0 = time.perf_counter()
        inputs = self.trainer.batches((self.train if train is None else train,), self.cfg.batch, self.gen, (20,))
        self.trainer.epoch(inputs)
        return time.perf_counter() - t0

    def heldout(self) -> float:
        """Held-out -ELBO per image (chain 0)."""
        return float(evaluate(self.model, heldout_terms, (self.val, self.val_eps))[0][0])


def per_epoch_equivalent(seconds: float, ours: Ours) -> float:
    """Seconds scaled to 60,000 images per chain (ours trains on the 54,000-image split, drop-last)."""
    n = ours.train.shape[1] // ours.cfg.batch * ours.cfg.batch
    return seconds * N_TRAIN / n


def time_to_quality(data, batch: int, lr: float, budget: float, max_epochs: int,
                    target: float = 160.0, precision: str = "fp32") -> dict:
    """Train from scratch until held-out loss <= target, max_epochs or `budget` training seconds.

    Epochs to target do not depend on the machine's load; seconds do (eval time excluded).
    """
    run = Ours(data, 1, batch, lr, precision=precision)
    curve, spent, hit = [], 0.0, None
    while spent < budget and len(curve) < max_epochs and hit is None:
        dt = per_epoch_equivalent(run.epoch(), run) * run.train.shape[1] / N_TRAIN  # actual seconds
        spent += dt
        curve.append((round(dt, 3), round(run.heldout(), 2)))
        if curve[-1][1] <= target:
            hit = len(curve)
    best_epoch = min(t for t, _ in curve)
    return {"batch": batch, "lr": lr, "precision": precision, "target": target, "epochs_run": len(curve), "epochs_to_target": hit,
            "seconds_to_target": round(spent, 1) if hit else None,
            "seconds_to_target_at_best_epoch_time": round(hit * best_epoch, 1) if hit else None,
            "final_loss": curve[-1][1], "curve_epoch_s_loss": curve, "compile_s": round(run.compile_s, 1)}


def main(argv=None) -> dict:
    """Run every measurement, write results/vae.json, print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--budget", type=float, default=50.0, help="max training seconds per time-to-quality run")
    ap.add_argument("--max-epochs", type=int, default=45, help="max epochs per time-to-quality run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved epochs per contender (60 s cap)")
    ap.add_argument("--batches", default="128,256,512", help="batch sizes for speed and time to quality")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (numbers not meaningful)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    ap.add_argument("--skip-ttq", action="store_true", help="speed only (about 1 minute): no time-to-quality runs")
    ap.add_argument("--bf16", action="store_true", help="add bf16 autocast at batch 128 (speed and time to quality)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.budget, args.max_epochs, args.rounds, args.batches = 5.0, 3, 1, "128,512"
    batches = [int(b) for b in args.batches.split(",")]
    mnist = load_mnist("train")
    data = np.concatenate([mnist.images.reshape(N_TRAIN, 784), mnist.labels[:, None].astype(np.uint8)], 1)[None]
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()}}
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: other processes are running, timings will be "
              "slow and noisy (with threads > free cores, torch slows by 10x or more); try --threads 1",
              file=sys.stderr)
    t_start = time.perf_counter()

    # 1-2. reference vs ours, interleaved, one full epoch per timing; best (least disturbed) and median
    ref = ref_setup(mnist.images)
    ours = {f"ours{b}": Ours(data, 1, b) for b in batches}
    ours["ours128x4"], ours["ours128-eager"] = Ours(data, 4, 128), Ours(data, 1, 128, compile=False)
    if args.bf16:
        ours["ours128-bf16"] = Ours(data, 1, 128, precision="bf16")
    times: dict[str, list[float]] = {"ref128": [], **{k: [] for k in ours}}
    t_speed = time.perf_counter()
    for r in range(args.rounds):
        if r and time.perf_counter() - t_speed > SPEED_DEADLINE:   # a contended machine: keep the total bounded
            break
        times["ref128"].append(ref_epoch(*ref))
        for k, o in ours.items():
            times[k].append(per_epoch_equivalent(o.epoch(), o))
    speed = {}
    for k, v in times.items():
        models = 4 if k.endswith("x4") else 1
        speed[k] = {"best_s": round(min(v), 3), "median_s": round(statistics.median(v), 3),
                    "gflops_best": round(GFLOP_EPOCH * models / min(v), 1),
                    "gflops_median": round(GFLOP_EPOCH * models / statistics.median(v), 1),
                    "epochs_s": [round(t, 3) for t in v], "compile_s": round(getattr(ours.get(k), "compile_s", 0), 1)}
    out["speed"] = speed
    for stat in ("best_s", "median_s"):
        ref_s, o128 = speed["ref128"][stat], speed["ours128"][stat]
        out[f"ratios_{stat[:-2]}"] = {"ref_over_ours128": round(ref_s / o128, 2),
                                      "ref_over_eager128": round(ref_s / speed["ours128-eager"][stat], 2),
                                      "model_epochs_x4_over_x1": round(4 * o128 / speed["ours128x4"][stat], 2)}
    del ours, ref

    # 3. time to quality from scratch
    lrs = {128: 1e-3, 256: 1e-3, 512: 2e-3}
    runs = [(b, "fp32") for b in batches] + ([(128, "bf16")] if args.bf16 else [])
    out["time_to_quality"] = [] if args.skip_ttq else [
        time_to_quality(data, b, lrs.get(b, 1e-3), args.budget, args.max_epochs, precision=p) for b, p in runs]
    out["machine"]["load_avg_end"] = os.getloadavg()
    out["total_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(table(out))
    return out


def table(out: dict) -> str:
    """The results as markdown."""
    m, sp = out["machine"], out["speed"]
    lines = [f"threads {m['threads']}, load average {m['load_avg_start'][0]:.2f} at start, "
             f"{m['load_avg_end'][0]:.2f} at end; total {out['total_s']} s", "",
             "| contender | s/epoch best | s/epoch median | GFLOP/s best | GFLOP/s median | compile s |",
             "|---|---|---|---|---|---|"]
    for k, v in sp.items():
        lines.append(f"| {k} | {v['best_s']:.3f} | {v['median_s']:.3f} | {v['gflops_best']:.1f} | "
                     f"{v['gflops_median']:.1f} | {v['compile_s']} |")
    for stat in ("best", "median"):
        r = out[f"ratios_{stat}"]
        lines.append(f"\n{stat}: reference / ours at batch 128 **{r['ref_over_ours128']}x** (eager fallback "
                     f"{r['ref_over_eager128']}x); 4 chains batched: {r['model_epochs_x4_over_x1']}x the "
                     "model-epochs/s of one")
    lines += ["", "| batch | precision | lr | epochs run | epochs to 160 | s to 160 | s to 160 at best epoch time | "
              "final loss |", "|---|---|---|---|---|---|---|---|"]
    for r in out["time_to_quality"]:
        lines.append(f"| {r['batch']} | {r['precision']} | {r['lr']:g} | {r['epochs_run']} | {r['epochs_to_target'] or '-'} | "
                     f"{r['seconds_to_target'] or '-'} | {r['seconds_to_target_at_best_epoch_time'] or '-'} | "
                     f"{r['final_loss']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
