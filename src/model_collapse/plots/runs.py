"""Metric-vs-generation figures (median, 5-95% band, mean, theory) and density snapshots."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import yaml

from ..store import read_metrics
from .canvas import cmap as get_cmap
from .canvas import save, subplots

SKIP = {"generation", "chain"}
# Histogram columns have figures of their own (plots/images.py), not one panel each.
HISTOGRAM = re.compile(r"(class|pix_hist)_\d+")


def _load(run: Path, cache: dict | None = None):
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


def _table(g_all: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(generations (G,), values (G, W)): one row per generation, its values in file order, NaN-padded
    where a generation has fewer rows than the widest one (chains missing at a generation)."""
    gens, inv = np.unique(g_all, return_inverse=True)
    counts = np.bincount(inv, minlength=len(gens))
    width = int(counts.max()) if len(counts) else 0
    if len(v) == len(gens) * width and np.array_equal(inv, np.repeat(np.arange(len(gens)), width)):
        return gens, v.reshape(len(gens), width)        # the usual layout: sorted, every chain every time
    order = np.argsort(inv, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gi = inv[order]
    table = np.full((len(gens), width), np.nan)
    table[gi, np.arange(len(v)) - start[gi]] = v[order]
    return gens, table


def _percentiles(table: np.ndarray, q) -> np.ndarray:
    """np.nanpercentile(table, q, axis=1), (len(q), G), without its per-row Python loop.

    Rows are grouped by their count n of finite values; each group's finite values (moved to the
    front by one sort) go through np.percentile along axis 1 at once, which runs the same
    order-statistic + interpolation code as nanpercentile's per-row path: the same numbers."""
    q = np.asarray(q, float)
    out = np.full((len(q), table.shape[0]), np.nan)
    n = np.isfinite(table).sum(axis=1)
    if table.shape[1] == 0:
        return out
    full = n == table.shape[1]
    if full.all():
        return np.percentile(table, q, axis=1)
    if full.any():
        out[:, full] = np.percentile(table[full], q, axis=1)
    part = ~full & (n > 0)
    if part.any():
        s = np.sort(table[part], axis=1)              # NaN sorts last
        idx = np.flatnonzero(part)
        for k in np.unique(n[part]):
            sel = n[part] == k
            out[:, idx[sel]] = np.percentile(s[sel, :k], q, axis=1)
    return out


def _bands(cols, rows, name):
    """Per-generation generations, median, 5%, 95%, mean of one column across chains."""
    gens, table = _table(rows[:, cols.index("generation")], rows[:, cols.index(name)])
    table = np.where(np.isfinite(table), table, np.nan)  # all-inf columns (e.g. NLL of a lost category)
    q = _percentiles(table, [5, 50, 95])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN generations: NaN mean
        mean = np.nanmean(table, axis=1)
    return gens, q[1], q[0], q[2], mean


def _panel(ax, cols, rows, name, label=None, color=None, theory=None, bound=None):
    """Draw one metric column: median line, 5-95% band, mean dashed, theory dotted, a bound dash-dotted.

    Overlaid runs (variants) draw their closed forms in their own colour, so replace's and
    accumulate's curves can be told apart; a single run draws it in black."""
    gens, med, lo, hi, mean = _bands(cols, rows, name)
    several = rows.shape[0] > len(gens)   # more than one chain: a band and a mean say something
    # A panel is ~250 px wide: past ~150 points a line only drawing time grows (7 panels of 300-point
    # lines took ~12 ms more than of 50 here); metrics.csv keeps every generation.
    step = max(1, -(-len(gens) // 150))
    if step > 1:
        keep = np.r_[np.arange(0, len(gens) - 1, step), len(gens) - 1]
        gens, med, lo, hi, mean = (a[keep] for a in (gens, med, lo, hi, mean))
    line, = ax.plot(gens, med, color=color, lw=1.5, label=f"{label or ''} median".strip())
    if several:
        ax.fill_between(gens, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.plot(gens, mean, color=line.get_color(), lw=1, ls="--", label=f"{label or ''} mean".strip())
    ink = "k" if label is None else line.get_color()
    if theory is not None:
        ax.plot(gens, theory(gens), color=ink, lw=1.2, ls=":", label=f"{label or ''} theory".strip())
    if bound is not None:
        ax.axhline(bound, color=ink, lw=0.8, ls="-.", label=f"{label or ''} bound".strip())
    ax.set_title(name, fontsize=9, y=1.0)   # a fixed y skips matplotlib's title placement pass
    ax.tick_params(labelsize=7)
    ax.locator_params(nbins=4)   # few ticks: drawing tick objects is most of a figure's cost


def _grid(n):
    """A figure with n panels."""
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig, axes = subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.remove()
    return fig, axes.ravel()


def plot_metrics(runs: dict[str, Path], out: Path, cache: dict | None = None) -> Path:
    """One panel per metric column; several runs (variants) are overlaid."""
    from ..theory import bound, expected
    loaded = {k: _load(p, cache) for k, p in runs.items()}
    cols = [c for c in next(iter(loaded.values()))[1] if c not in SKIP and not HISTOGRAM.fullmatch(c)]
    fig, axes = _grid(len(cols))
    for i, (label, (exp, c, rows)) in enumerate(loaded.items()):
        for ax, name in zip(axes, cols):
            if name in c and len(rows):
                _panel(ax, c, rows, name, label if len(runs) > 1 else None, f"C{i}", expected(exp, name),
                       bound(exp, name))
    chains = next(iter(loaded.values()))[0].chains
    fig.supxlabel("generation", fontsize=8, y=0.005)   # one label for every panel
    fig.suptitle(f"{out.parent.name}: median and 5-95% band over {chains} chains "
                 "(dashed: mean, dotted: closed form)", fontsize=9)
    axes[0].legend(fontsize=7)
    return save(fig, out / ("metrics.png" if len(runs) == 1 else "compare.png"), top=0.55)


def plot_density(run: Path, out: Path, cache: dict | None = None) -> Path | None:
    """Fitted densities at snapshot generations against the truth (chain 0, plus a few more in 1-D)."""
    from ..loop import build
    from ..store import RunStore
    exp, _, _ = _load(run, cache)
    snaps = RunStore(run).snapshots()
    decl = exp.source.declare()
    if not snaps or decl.truth is None or decl.data_kind not in ("vector", "category"):
        return None   # densities of vectors and categories only (not regression pairs)
    source, model, _, _ = build(exp)
    truth = source.truth
    cmap = get_cmap("viridis")
    gens = sorted(snaps)
    if decl.data_kind == "category":
        fig, ax = subplots(figsize=(6, 3.5))
        ax.plot(np.sort(truth.p[0])[::-1], "k", lw=2, label="truth")
        for j, g in enumerate(gens):
            model.load_state_dict(snaps[g])
            ax.plot(np.sort(model.p[0])[::-1], color=cmap(j / max(len(gens) - 1, 1)), label=f"gen {g}")
        ax.set_yscale("log")
        ax.set_xlabel("rank")
        ax.set_ylabel("probability (chain 0)")
    elif source.dim == 1:
        m0, c0 = truth.moments()
        sd = np.sqrt(c0[0, 0, 0])
        x = np.linspace(m0[0, 0] - 4 * sd, m0[0, 0] + 4 * sd, 300)   # smooth at 100 dpi
        nc = min(exp.chains, 4)
        fig, axes = subplots(1, nc, figsize=(3.6 * nc, 3), squeeze=False)
        dens = {}
        for g in gens:   # each snapshot's densities once, all chains at a time
            model.load_state_dict(snaps[g])
            dens[g] = np.exp(model.log_prob(x[:, None])[:nc])
        true = np.exp(truth.log_prob(x[:, None])[0])
        for c, ax in enumerate(axes[0]):
            ax.plot(x, true, "k", lw=2, label="truth")
            for j, g in enumerate(gens):
                ax.plot(x, dens[g][c], color=cmap(j / max(len(gens) - 1, 1)), lw=1, label=f"gen {g}")
            ax.set_title(f"chain {c}", fontsize=9, y=1.0)
            ax.locator_params(nbins=4)
        ax = axes[0, 0]
    elif source.dim == 2:
        m0, c0 = truth.moments()
        half = 4 * np.sqrt(np.diagonal(c0[0]).max())
        a = np.linspace(-half, half, 120)
        xx, yy = np.meshgrid(a + m0[0, 0], a + m0[0, 1], indexing="xy")
        pts = np.stack([xx.ravel(), yy.ravel()], 1)
        fig, axes = subplots(1, len(gens) + 1, figsize=(2.8 * (len(gens) + 1), 2.8), squeeze=False)
        axes[0, 0].contourf(xx, yy, np.exp(truth.log_prob(pts)[0]).reshape(xx.shape), 12)
        axes[0, 0].set_title("truth", fontsize=9, y=1.0)
        for ax, g in zip(axes[0, 1:], gens):
            model.load_state_dict(snaps[g])
            ax.contourf(xx, yy, np.exp(model.log_prob(pts)[0]).reshape(xx.shape), 12)
            ax.set_title(f"gen {g} (chain 0)", fontsize=9, y=1.0)
        for ax in axes[0]:
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
        return save(fig, out / "density.png", top=0.3)
    else:
        return None
    ax.legend(fontsize=7)
    return save(fig, out / "density.png", top=0.3)


def plot_images(run: Path, cache: dict | None = None) -> list[Path]:
    """Fixed-latent grids (one PNG per generation, an animated GIF), class histograms, classifier heatmaps."""
    from ..store import RunStore
    from .images import plot_image_run, save_generation_grid
    exp, _, _ = _load(run, cache)
    shape = {"digits": (8, 8)}.get(exp.source.kind, (28, 28))
    for g, grid in RunStore(run).arrays("grid").items():
        save_generation_grid(run, g, grid[0].reshape(-1, *shape), ncol=8)   # chain 0
    return plot_image_run(run)


def plot_run(run: Path) -> list[Path]:
    """Draw every figure of a run directory (and of its variants); returns the files written."""
    run = Path(run)
    subs = {p.name: p for p in sorted(run.iterdir()) if (p / "metrics.csv").exists()} if run.is_dir() else {}
    runs = subs if subs and not (run / "metrics.csv").exists() else {run.name: run}
    written = []
    cache: dict = {}   # each run's config and metrics.csv are read (and validated) once
    for r in runs.values():
        (r / "figures").mkdir(exist_ok=True)
        written.append(plot_metrics({r.name: r}, r / "figures", cache))
        d = plot_density(r, r / "figures", cache)
        if d:
            written.append(d)
        if _load(r, cache)[0].source.declare().data_kind == "text":
            from .text import plot_text_run
            written += plot_text_run(r)
        if (r / "arrays").exists() or (r / "classifier_matrix.csv").exists() or "class_0" in _load(r, cache)[1]:
            written += plot_images(r, cache)
    if len(runs) > 1:
        (run / "figures").mkdir(exist_ok=True)
        written.append(plot_metrics(runs, run / "figures", cache))
    return written
