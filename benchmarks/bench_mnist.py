"""The MNIST VAE loop end to end, and early stopping against the fixed-epoch protocol.

    .venv/bin/python benchmarks/bench_mnist.py end2end    # configs/mnist-seed.yaml, 50 generations
    .venv/bin/python benchmarks/bench_mnist.py protocol   # shorter run: early stopping vs fixed epochs

end2end runs the whole recipe through the CLI and reads the per-generation
breakdown from the run's timings.csv. protocol runs the same short experiment
twice, once with the default early stopping (warm-started VAE, classifiers that
stop when accurate) and once with a fixed number of epochs per generation (the
original protocol's shape), and compares the collapse curves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from model_collapse.store import read_metrics

HERE = Path(__file__).parent
OUT = HERE / "out"
RESULTS = HERE / "results"
CURVES = ["top_share", "class_entropy", "pix_mean", "latent_std", "acc_first"]


def collapse(*args: str) -> float:
    """Run the CLI; returns wall-clock seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "model_collapse.cli", *args, "--quiet"], check=True)
    return time.perf_counter() - t0


def breakdown(run: Path) -> dict[str, float]:
    """Total seconds per phase over all generations, from timings.csv."""
    rows = [line.split(",") for line in (run / "timings.csv").read_text().splitlines()[1:]]
    out: dict[str, float] = {}
    for _, phase, sec in rows:
        out[phase] = out.get(phase, 0.0) + float(sec)
    return out


def curves(run: Path) -> dict[str, list[float]]:
    """Chain-0 curves of the collapse measures."""
    cols, rows = read_metrics(run)
    return {c: rows[:, cols.index(c)].tolist() for c in CURVES if c in cols}


def end2end() -> dict:
    """The mnist-seed recipe, timed, with its per-phase breakdown."""
    run = OUT / "mnist-seed"
    seconds = collapse("run", "configs/mnist-seed.yaml", "--out", str(run), "--overwrite")
    phases = breakdown(run)
    cols, rows = read_metrics(run)
    res = {"seconds": seconds, "minutes": seconds / 60, "phases_seconds": phases,
           "vae_epochs": rows[:, cols.index("epochs")].tolist(),
           "clf_epochs": rows[:, cols.index("clf_epochs")].tolist(), "curves": curves(run)}
    print(f"mnist-seed: {seconds / 60:.1f} min end to end ({len(rows)} generations)")
    print("| phase | seconds (all generations) | per generation |\n|---|---|---|")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.0f} | {v / len(rows):.2f} |")
    return res


def protocol(generations: int = 6, n: int = 20000, epochs: int = 50) -> dict:
    """Early stopping vs fixed epochs on a shorter run: time and collapse curves side by side."""
    common = [f"generations={generations}", f"regime.n={n}"]
    fast, fixed = OUT / "protocol-early-stop", OUT / "protocol-fixed"
    t_fast = collapse("run", "configs/mnist-seed.yaml", *common, "--out", str(fast), "--overwrite")
    t_fixed = collapse("run", "configs/mnist-seed.yaml", *common, f"model.epochs={epochs}",
                       "model.classifier.target_accuracy=null", "model.classifier.max_epochs=30",
                       "--out", str(fixed), "--overwrite")
    a, b = curves(fast), curves(fixed)
    res = {"generations": generations, "n": n, "fixed_epochs": epochs, "early_stop_seconds": t_fast,
           "fixed_seconds": t_fixed, "early_stop": a, "fixed": b}
    print(f"protocol ({generations} generations, n={n}): early stopping {t_fast:.0f} s, "
          f"fixed {epochs} epochs {t_fixed:.0f} s ({t_fixed / t_fast:.1f}x)")
    print("| measure | " + " | ".join(f"gen {g}" for g in range(generations)) + " |")
    print("|---|" + "---|" * generations)
    for c in CURVES:
        if c in a and c in b:
            print(f"| {c} early-stop | " + " | ".join(f"{v:.3f}" for v in a[c]) + " |")
            print(f"| {c} fixed | " + " | ".join(f"{v:.3f}" for v in b[c]) + " |")
    return res


def main() -> None:
    """Run the chosen part(s) and merge results into benchmarks/results/mnist.json."""
    parts = sys.argv[1:] or ["end2end", "protocol"]
    path = RESULTS / "mnist.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    for part in parts:
        res[part] = {"end2end": end2end, "protocol": protocol}[part]()
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
