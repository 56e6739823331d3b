"""The diffusion family's speed: a 2-D generation through `collapse`, the training step against the plain
loop a user would write, and sampling batched over chains.

1. `collapse run` of one generation on 8 Gaussians (train on 10,000 points, sample 10,000), whole process
   (start-up, metrics and figures included), and its fit / sample phases from timings.csv.
2. Training, 100 epochs of 10,000 points at batch 512: the plain loop (nn.Sequential of the same widths and
   SiLU, the same sinusoidal time embedding, torch.optim.AdamW, a shuffled DataLoader, fp32 eager, flow
   matching's loss) against the family's fit with 1 chain and with 8 chains (one batched module): points
   per second per chain.
3. Sampling 10,000 points per chain with 50 Euler steps: 8 chains batched against 8 one-chain models.

    .venv/bin/python benchmarks/bench_diffusion.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_collapse.config import validate
from model_collapse.loop import build

HERE = Path(__file__).resolve().parent
HIDDEN, EMBED, N, EPOCHS, BATCH = [128, 128, 128], 32, 10_000, 100, 512


def family(chains: int):
    exp = validate({"chains": chains, "source": {"kind": "toy", "shape": "ring", "std": 0.1},
                    "model": {"kind": "diffusion", "hidden": HIDDEN, "epochs": EPOCHS, "batch": BATCH},
                    "regime": {"kind": "replace", "n": N}})
    src, fam, _, _ = build(exp)
    return src.real(N, np.random.default_rng(0)), fam


class Plain(nn.Module):
    """The same network, written the usual way (one model)."""

    def __init__(self):
        super().__init__()
        widths = [2 + EMBED, *HIDDEN]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 2))
        half = EMBED // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

    def forward(self, x, t):
        a = (1000.0 * t)[:, None] * self.freqs
        return self.net(torch.cat([x, torch.sin(a), torch.cos(a)], -1))


def plain_loop(x: np.ndarray) -> float:
    """Seconds for EPOCHS of flow matching the way the tutorials write it."""
    torch.manual_seed(0)
    model = Plain()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    z = torch.from_numpy(((x - x.mean(0)) / x.std(0)).astype(np.float32))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(z), batch_size=BATCH, shuffle=True,
                                         drop_last=True)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        for (xb,) in loader:
            eps, t = torch.randn_like(xb), torch.rand(len(xb))
            xt = t[:, None] * xb + (1 - t[:, None]) * eps
            loss = ((model(xt, t) - (xb - eps)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def cli_generation() -> dict:
    """One generation through `collapse run`, whole process, and its phases."""
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "exp.yaml"
        cfg.write_text(
            "seed: 0\nchains: 1\ngenerations: 1\nsource: {kind: toy, shape: ring, std: 0.1}\n"
            f"model: {{kind: diffusion, hidden: {HIDDEN}, epochs: {EPOCHS}, batch: {BATCH}}}\n"
            f"regime: {{kind: replace, n: {N}}}\nreference_n: 4000\nmetrics: [params, modes, sliced_wasserstein]\n")
        exe = Path(sys.executable).with_name("collapse")
        t0 = time.perf_counter()
        subprocess.run([str(exe), "run", str(cfg), "--out", f"{d}/run", "--quiet"], check=True)
        wall = time.perf_counter() - t0
        rows = [line.split(",") for line in (Path(d) / "run" / "timings.csv").read_text().splitlines()[1:]]
        phases = {r[1]: float(r[2]) for r in rows}
        return {"wall_s": wall, "fit_s": phases.get("fit"), "sample_s": phases.get("sample")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(HERE / "results" / "diffusion.json"))
    args = ap.parse_args()
    out = {"cli": cli_generation()}
    print("collapse run, one generation:", out["cli"], flush=True)
    x1, _ = family(1)
    plain = plain_loop(x1[0])
    train = {"plain loop (1 model)": {"seconds": plain, "points_per_s_per_chain": EPOCHS * N / plain}}
    for s in (1, 8):
        x, fam = family(s)
        t0 = time.perf_counter()
        fam.fit(x, np.random.default_rng(1))
        sec = time.perf_counter() - t0
        train[f"family, {s} chain(s)"] = {"seconds": sec, "points_per_s_per_chain": EPOCHS * N / (sec / s)}
        if s == 8:
            t0 = time.perf_counter()
            fam.sample(N, np.random.default_rng(2))
            batched = time.perf_counter() - t0
    print(train, flush=True)
    x, one = family(1)
    one.fit(x[:, :BATCH], np.random.default_rng(1))           # weights only matter for timing here
    t0 = time.perf_counter()
    for _ in range(8):
        one.sample(N, np.random.default_rng(2))
    separate = time.perf_counter() - t0
    out.update(training=train, sampling={"8 chains batched_s": batched, "8 one-chain models_s": separate},
               cpus=os.cpu_count(), loadavg_at_end=os.getloadavg(), torch=torch.__version__)
    base = train["plain loop (1 model)"]["points_per_s_per_chain"]
    print("\n| measure | value |\n|---|---|")
    print(f"| `collapse run`, one 2-D generation (10,000 points trained, 10,000 sampled), whole process | "
          f"{out['cli']['wall_s']:.1f} s (fit {out['cli']['fit_s']:.1f} s, sample {out['cli']['sample_s']:.2f} s) |")
    for k, r in train.items():
        print(f"| training, {k} | {r['points_per_s_per_chain']:,.0f} points/s per chain "
              f"(x{r['points_per_s_per_chain'] / base:.2f}) |")
    print(f"| sampling 10,000 x 8 chains, 50 Euler steps | batched {batched:.2f} s vs one model at a time "
          f"{separate:.2f} s (x{separate / batched:.1f}) |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
