"""The diffusion family on images: the U-Net against diffusers' UNet2DModel, and one MNIST generation through
`collapse`.

1. Kernel: a training step (forward, backward, Adam; batch 128, fp32 eager) and a sampling call (forward
   only) of this project's U-Net (nn/unet.py, one chain) against diffusers' UNet2DModel at the same widths
   (block_out_channels = channels, one ResNet block per level, DownBlock2D / UpBlock2D, no attention, 8
   GroupNorm groups), on 8x8 and 28x28 images; parameter counts beside.
2. `collapse run` of one diffusion-digits generation on MNIST (10,000 real digits trained, 10,000 sampled),
   whole process (start-up, FID, the class histogram and figures included), and its fit / sample phases;
   the reference classifier is trained (and cached) before the clock starts.

    .venv/bin/pip install -c constraints.txt diffusers    # for part 1 only
    .venv/bin/python benchmarks/bench_diffusion_images.py [--json PATH] [--skip-mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BATCH, REPEAT = 128, 10
MNIST = {"seed": 0, "chains": 1, "generations": 1, "source": {"kind": "mnist"},
         "model": {"kind": "diffusion", "objective": "flow", "denoiser": "unet", "channels": [16, 32],
                   "conditional": True, "guidance": 0.0, "epochs": 5, "batch": 128, "lr": 2e-3, "steps": 10},
         "regime": {"kind": "replace", "n": 10000}, "reference_n": 10000, "checkpoint_seconds": 0,
         "metrics": ["params", "pixels", "classes", {"name": "fid", "n": 10000}, "grid"]}


def timed(fn) -> float:
    """Median seconds of REPEAT calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def ours(hw: int, channels: tuple):
    from model_collapse.nn.unet import UNet
    net = UNet(1, (hw, hw), channels, 64, classes=0, groups=8)
    net.reset_parameters(torch.Generator().manual_seed(0))
    x, t = torch.randn(1, BATCH, hw * hw), torch.rand(1, BATCH)
    return net, (lambda: net(x, t)), x


def theirs(hw: int, channels: tuple):
    from diffusers import UNet2DModel
    net = UNet2DModel(sample_size=hw, in_channels=1, out_channels=1, block_out_channels=channels,
                      layers_per_block=1, down_block_types=("DownBlock2D",) * len(channels),
                      up_block_types=("UpBlock2D",) * len(channels), norm_num_groups=8, add_attention=False)
    x, t = torch.randn(BATCH, 1, hw, hw), torch.randint(0, 1000, (BATCH,))
    return net, (lambda: net(x, t).sample), x


def kernel(make, hw: int, channels: tuple) -> dict:
    net, fwd, x = make(hw, channels)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step():
        loss = (fwd() - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        sample = timed(fwd)
    return {"train_step_ms": 1000 * timed(step), "forward_ms": 1000 * sample,
            "params": sum(p.numel() for p in net.parameters())}


def mnist_generation() -> dict:
    """One MNIST generation through `collapse run`, whole process, and its phases."""
    import yaml
    from model_collapse.sources.images import ImageSourceConfig
    ImageSourceConfig(kind="mnist").build(1).reference_classifier()    # trained once and cached, off the clock
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "exp.yaml"
        cfg.write_text(yaml.safe_dump(MNIST))
        exe = Path(sys.executable).with_name("collapse")
        t0 = time.perf_counter()
        subprocess.run([str(exe), "run", str(cfg), "--out", f"{d}/run", "--quiet"], check=True)
        wall = time.perf_counter() - t0
        rows = [line.split(",") for line in (Path(d) / "run" / "timings.csv").read_text().splitlines()[1:]]
        phases = {r[1]: float(r[2]) for r in rows}
        head, row = (Path(d) / "run" / "metrics.csv").read_text().splitlines()[:2]
        metrics = dict(zip(head.split(","), row.split(",")))
        return {"wall_s": wall, "fit_s": phases.get("fit"), "sample_s": phases.get("sample"),
                "fid": float(metrics["fid"]), "ref_confidence": float(metrics["ref_confidence"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(HERE / "results" / "diffusion-images.json"))
    ap.add_argument("--skip-mnist", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = {"kernel": {}, "threads": torch.get_num_threads()}
    try:
        import diffusers
        out["diffusers"] = diffusers.__version__
        makers = {"ours": ours, "diffusers": theirs}
    except ImportError:
        print("diffusers is not installed: only this project's U-Net is timed")
        makers = {"ours": ours}
    for hw, ch in ((8, (16, 32)), (28, (16, 32)), (28, (32, 64))):
        for name, make in makers.items():
            r = kernel(make, hw, ch)
            out["kernel"][f"{name} {hw}x{hw} {list(ch)}"] = r
            print(name, hw, ch, r, flush=True)
    if not args.skip_mnist:
        out["mnist"] = mnist_generation()
        print("collapse run, one MNIST generation:", out["mnist"], flush=True)
    out.update(cpus=os.cpu_count(), loadavg_at_end=os.getloadavg(), torch=torch.__version__)
    print("\n| U-Net, batch 128, fp32 eager | train step | forward (sampling) | parameters |\n|---|---|---|---|")
    for k, r in out["kernel"].items():
        base = out["kernel"].get(k.replace("diffusers", "ours"), r)
        print(f"| {k} | {r['train_step_ms']:.0f} ms (x{base['train_step_ms'] / r['train_step_ms']:.2f} of ours) | "
              f"{r['forward_ms']:.0f} ms (x{base['forward_ms'] / r['forward_ms']:.2f}) | {r['params']:,} |")
    if "mnist" in out:
        m = out["mnist"]
        print(f"\n| `collapse run`, one MNIST generation (10,000 trained, 10,000 sampled), whole process | "
              f"{m['wall_s']:.0f} s (fit {m['fit_s']:.0f} s, sample {m['sample_s']:.0f} s); FID {m['fid']:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
