"""A run's figures: metric-vs-generation panels, density snapshots, image and text figures.

plot_run is the one entry that draws them all: `collapse run`, `resume` and `plot`, sweeps'
--run-figures and the HTML report call it (and skip it with --no-figures).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..store import read_metrics
from .canvas import save
from .panels import HISTOGRAM, SKIP, grid, panel

__all__ = ["HISTOGRAM", "SKIP", "load", "plot_images", "plot_metrics", "plot_run"]


def load(run: Path, cache: dict | None = None):
    """(experiment, columns, rows) of one run directory; read once per `cache` (one plot_run call)."""
    key = Path(run).resolve()
    if cache is not None and key in cache:
        return cache[key]
    from ..config import validate
    exp = validate(yaml.safe_load((run / "config.yaml").read_text()))
    cols, rows = read_metrics(run)
    if cache is not None:
        cache[key] = (exp, cols, rows)
    return exp, cols, rows


def plot_metrics(runs: dict[str, Path], out: Path, cache: dict | None = None) -> Path:
    """One panel per metric column; several runs (variants) are overlaid."""
    from ..theory import bound, expected
    loaded = {k: load(p, cache) for k, p in runs.items()}
    cols = [c for c in next(iter(loaded.values()))[1] if c not in SKIP and not HISTOGRAM.fullmatch(c)]
    fig, axes = grid(len(cols))
    for i, (label, (exp, c, rows)) in enumerate(loaded.items()):
        for ax, name in zip(axes, cols):
            if name in c and len(rows):
                panel(ax, c, rows, name, label if len(runs) > 1 else None, f"C{i}", expected(exp, name),
                      bound(exp, name))
    chains = next(iter(loaded.values()))[0].chains
    fig.supxlabel("generation", fontsize=8, y=0.005)   # one label for every panel
    fig.suptitle(f"{out.parent.name}: median and 5-95% band over {chains} chains "
                 "(dashed: mean, dotted: closed form)", fontsize=9)
    axes[0].legend(fontsize=7)
    return save(fig, out / ("metrics.png" if len(runs) == 1 else "compare.png"), top=0.55)


def plot_images(run: Path, cache: dict | None = None) -> list[Path]:
    """Fixed-latent grids (one PNG per generation, an animated GIF), class histograms, classifier heatmaps."""
    from ..store import RunStore
    from .images import plot_image_run, save_generation_grid
    exp, _, _ = load(run, cache)
    shape = {"digits": (8, 8)}.get(exp.source.kind, (28, 28))
    for g, images in RunStore(run).arrays("grid").items():
        save_generation_grid(run, g, images[0].reshape(-1, *shape), ncol=8)   # chain 0
    return plot_image_run(run)


def plot_run(run: Path) -> list[Path]:
    """Draw every figure of a run directory (and of its variants); returns the files written."""
    from .density import plot_density
    run = Path(run)
    subs = {p.name: p for p in sorted(run.iterdir()) if (p / "metrics.csv").exists()} if run.is_dir() else {}
    runs = subs if subs and not (run / "metrics.csv").exists() else {run.name: run}
    written = []
    cache: dict = {}   # each run's config and metrics.csv are read (and validated) once
    for r in runs.values():
        (r / "figures").mkdir(exist_ok=True)
        written.append(plot_metrics({r.name: r}, r / "figures", cache))
        exp, cols, rows = load(r, cache)
        d = plot_density(r, r / "figures", exp)
        if d:
            written.append(d)
        if exp.source.declare().data_kind == "text":
            from .text import plot_text_run
            written += plot_text_run(r, (cols, rows))
        if (r / "arrays").exists() or (r / "classifier_matrix.csv").exists() or "class_0" in cols:
            written += plot_images(r, cache)
    if len(runs) > 1:
        (run / "figures").mkdir(exist_ok=True)
        written.append(plot_metrics(runs, run / "figures", cache))
    return written
