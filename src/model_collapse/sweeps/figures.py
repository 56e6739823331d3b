"""Sweep figures: final metrics against the swept parameter, and curves of several runs compared.

A panel of the sweep figure is named by a short spec:

    var           the metric at the last recorded generation
    var@100       at generation 100 (the nearest recorded one at or before it)
    var<0.5       collapse time: the first generation whose value is below 0.5 (above: var>2)

Each point shows the mean over seeds with its 95% bootstrap interval (error bars) and the
median with its interval (dashed, shaded); where theory.py has a closed form for the metric,
it is drawn too (black crosses). The x axis is the first swept key; other swept keys (and
variants) get one line each. A collapse that never happened is drawn at the top as a triangle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import ConfigError, RunDirError
from .spec import show
from .bootstrap import bootstrap
from .stats import Group, groups

_PANEL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:@\s*(\d+)|([<>])\s*([-+0-9.eE]+))?\s*$")


@dataclass
class Panel:
    """One panel: a metric at a generation, or the first generation past a threshold."""

    metric: str
    generation: int | None = None   # None: the last recorded generation
    op: str | None = None           # "<" or ">" for a collapse time
    threshold: float | None = None

    def title(self, last: int) -> str:
        """How the panel is labelled (last: the last recorded generation)."""
        if self.op:
            return f"first generation with {self.metric} {self.op} {self.threshold:g}"
        return f"{self.metric} at generation {last if self.generation is None else self.generation}"


def parse_panel(text: str) -> Panel:
    """A Panel from `metric`, `metric@G`, `metric<x` or `metric>x` (a ConfigError otherwise)."""
    m = _PANEL.match(str(text))
    if not m:
        raise ConfigError(f"figure {text!r}: write metric, metric@GENERATION (var@100) or a collapse time "
                          "metric<THRESHOLD (var<0.5)")
    name, gen, op, thr = m.groups()
    try:
        return Panel(name, int(gen) if gen else None, op, float(thr) if thr else None)
    except ValueError:
        raise ConfigError(f"figure {text!r}: {thr!r} is not a number") from None


def _per_seed(g: Group, p: Panel) -> tuple[np.ndarray, int | None]:
    """Each seed's value for a panel, and the generation it was read at (None for a time)."""
    j = g.names.index(p.metric)
    vals = g.table[:, :, j]
    if p.op is None:
        i = len(g.gens) - 1 if p.generation is None else int(np.searchsorted(g.gens, p.generation, "right")) - 1
        if i < 0:
            return np.full(len(vals), np.nan), None
        return vals[:, i], int(g.gens[i])
    hit = vals < p.threshold if p.op == "<" else vals > p.threshold
    first = np.where(hit.any(axis=1), g.gens[np.argmax(hit, axis=1)], np.inf)
    return first.astype(float), None


def _theory(g: Group, p: Panel, gen: int | None, configs: dict):
    """The closed form for a panel at a point, or None (configs: each point's experiment, read once)."""
    from ..config import validate
    from ..theory import expected
    if not g.runs:
        return None
    if g.runs[0] not in configs:
        configs[g.runs[0]] = validate(yaml.safe_load((g.runs[0] / "config.yaml").read_text()))
    fn = expected(configs[g.runs[0]], p.metric)
    if fn is None:
        return None
    if p.op is None:
        return None if gen is None else float(fn(np.array([gen]))[0])
    curve = np.asarray(fn(g.gens), float)
    hit = curve < p.threshold if p.op == "<" else curve > p.threshold
    return float(g.gens[np.argmax(hit)]) if hit.any() else np.inf


def _numeric(xs: list) -> bool:
    """Whether swept values can go on a numeric axis."""
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)


def default_panels(found: list[Group]) -> list[Panel]:
    """Every metric at the last generation (histogram columns and flags left out), at most 12."""
    from ..plots.panels import HISTOGRAM
    names = next((g.names for g in found if g.runs), [])
    return [Panel(n) for n in names if not HISTOGRAM.fullmatch(n) and n != "degenerate"][:12]


def sweep_figure(sweep: Path, specs: list[str] = (), out: Path | None = None) -> Path | None:
    """Draw SWEEP/figures/sweep.png (or `out`); None when no run is complete."""
    from ..plots.canvas import save
    from ..plots.panels import grid
    sweep = Path(sweep)
    found = [g for g in groups(sweep) if g.runs]
    if not found:
        return None
    panels = [parse_panel(s) for s in specs] or default_panels(found)
    known = found[0].names
    unknown = [p.metric for p in panels if p.metric not in known]
    if unknown:
        raise ConfigError(f"figure: no metric {', '.join(unknown)} in this sweep's metrics.csv; "
                          f"choose from {', '.join(known)}")
    # The x axis is the first grid axis (its first key, when several keys move together); every
    # other axis and each variant gets a line of its own.
    swept = (yaml.safe_load((sweep / "sweep.yaml").read_text()) or {}).get("grid") or {}
    axes = [str(k).split(",") for k in swept]
    xkey = axes[0][0] if axes else None
    lines: dict[tuple, list[Group]] = {}
    for g in found:
        rest = tuple(f"{a[0]}={show(g.values[a[0]])}" for a in axes[1:]) + \
            ((f"variant {g.variant}",) if g.variant else ())
        lines.setdefault(rest, []).append(g)
    xs_all = [g.values[xkey] for g in found] if xkey else [0]
    numeric = _numeric(xs_all)
    cats = list(dict.fromkeys(show(x) for x in xs_all))
    top = max(float(g.gens[-1]) for g in found) + 1   # where a collapse that never came is drawn
    fig, axes = grid(len(panels))
    configs: dict = {}
    for ax, p in zip(axes, panels):
        for i, (rest, gs) in enumerate(lines.items()):
            xs = [g.values[xkey] if numeric else cats.index(show(g.values[xkey])) for g in gs] if xkey \
                else [0] * len(gs)
            _draw_line(ax, gs, xs, p, f"C{i % 10}", ", ".join(rest) or None, top, configs)
        if numeric and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        ax.set_title(p.title(int(top) - 1), fontsize=9, y=1.0)
        if p.op:
            ax.set_ylabel(f"generation (top: none by {int(top) - 1})", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.supxlabel(xkey or "", fontsize=8, y=0.005)
    seeds = max(len(g.runs) for g in found)
    fig.suptitle(f"{sweep.name}: {seeds} seed(s) per point\nmean with 95% bootstrap CI (bars), median "
                 "(dashed, CI shaded)", fontsize=9)
    axes[0].legend(fontsize=6)
    target = Path(out) if out else sweep / "figures" / "sweep.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    return save(fig, target, top=0.7)


def _draw_line(ax, gs: list[Group], xs: list, p: Panel, color: str, label, top: float, configs: dict):
    """One line of a panel: the mean with error bars, the median dashed with a band, the closed form."""
    est, theory = {k: [] for k in ("mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi")}, []
    for g in gs:
        vals, gen = _per_seed(g, p)
        res = bootstrap(vals[:, None])
        for k in est:
            est[k].append(float(res[k][0]))
        theory.append(_theory(g, p, gen, configs))
    x = np.asarray(xs, float)
    ceiling = top if p.op else None   # a collapse time that never came is drawn at the top
    e = {k: np.clip(np.asarray(v, float), None, ceiling) for k, v in est.items()}
    lab = f"{label} " if label else ""
    ax.errorbar(x, e["mean"], yerr=[np.abs(e["mean"] - e["mean_lo"]), np.abs(e["mean_hi"] - e["mean"])],
                color=color, marker="o", ms=3, lw=1.2, capsize=2, label=f"{lab}mean")
    ax.plot(x, e["median"], color=color, ls="--", lw=1, label=f"{lab}median")
    ax.fill_between(x, e["median_lo"], e["median_hi"], color=color, alpha=0.15, lw=0)
    never = np.asarray(est["median"], float) >= top
    if p.op and never.any():
        ax.plot(x[never], np.full(never.sum(), top), color=color, marker="^", ls="none", ms=6,
                label=f"{lab}none by generation {int(top) - 1}")
    if theory and all(t is not None for t in theory):
        t = np.clip(np.asarray(theory, float), None, ceiling)
        ax.plot(x, t, color="k", ls=":", marker="x", ms=4, lw=1, label=f"{lab}closed form")


# -- compare ------------------------------------------------------------------------------------


def _curves(path: Path) -> list[tuple[str, object, list[str], np.ndarray]]:
    """(label, experiment, columns, rows) for a run, an experiment with variants, or a sweep's points
    (a point's complete runs pooled: its chains of every seed)."""
    from ..config import validate
    from ..store import read_metrics
    path = Path(path)
    if (path / "sweep.csv").exists():
        out = []
        for g in groups(path):
            if not g.runs:
                continue
            cols, parts = None, []
            offset = 0
            for run in g.runs:
                c, rows = read_metrics(run)
                cols = cols or c
                if c != cols or not len(rows):
                    continue
                rows = rows.copy()
                rows[:, c.index("chain")] += offset   # chains of every seed side by side
                offset = int(rows[:, c.index("chain")].max()) + 1
                parts.append(rows)
            exp = validate(yaml.safe_load((g.runs[0] / "config.yaml").read_text()))
            out.append((f"{path.name}:{g.label}", exp, cols, np.concatenate(parts)))
        return out
    if (path / "metrics.csv").exists():
        cols, rows = read_metrics(path)
        return [(path.name, validate(yaml.safe_load((path / "config.yaml").read_text())), cols, rows)]
    subs = sorted(p for p in path.iterdir() if (p / "metrics.csv").exists()) if path.is_dir() else []
    if subs:
        return [c for s in subs for c in _curves(s)]
    raise RunDirError(f"{path} is neither a run directory (metrics.csv) nor a sweep directory (sweep.csv)")


def compare(paths: list[Path], out: Path, metrics: list[str] = ()) -> Path:
    """Overlay metric curves of runs, variants and sweep points on shared axes (one panel per metric;
    one colour per curve, named in a legend beside the panels)."""
    import os

    from matplotlib.lines import Line2D

    from ..plots.canvas import subplots
    from ..plots.panels import HISTOGRAM, SKIP, panel
    from ..theory import bound, expected
    curves = [c for p in paths for c in _curves(p)]
    if not curves:
        raise RunDirError("nothing to compare: no complete runs in " + ", ".join(map(str, paths)))
    have = list(dict.fromkeys(c for _, _, cols, _ in curves for c in cols
                              if c not in SKIP and not HISTOGRAM.fullmatch(c)))
    names = list(metrics) or [c for c in curves[0][2] if c in have]
    unknown = [m for m in names if m not in have]
    if unknown:
        raise ConfigError(f"--metric {', '.join(unknown)}: not recorded by these runs; choose from {', '.join(have)}")
    ncol = min(len(names), 3)
    nrow = -(-len(names) // ncol)
    fig, axes = subplots(nrow, ncol, figsize=(3.6 * ncol + 2.2, 2.8 * nrow + 0.7), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(names):]:
        ax.remove()
    labels = [label for label, _, _, _ in curves]
    prefix = os.path.commonprefix(labels) if len(labels) > 1 else ""
    prefix = prefix[: prefix.rfind(":") + 1]   # a shared sweep name, shown once in the title
    for i, (label, exp, cols, rows) in enumerate(curves):
        for ax, name in zip(axes, names):
            if name in cols and len(rows):
                panel(ax, cols, rows, name, label, f"C{i % 10}", expected(exp, name), bound(exp, name))
    handles = [Line2D([], [], color=f"C{i % 10}", lw=1.5, label=label[len(prefix):]) for i, label in enumerate(labels)]
    handles += [Line2D([], [], color="k", lw=1, ls=ls, label=what)
                for ls, what in (("-", "median (5-95% band)"), ("--", "mean"), (":", "closed form"))]
    fig.legend(handles=handles, loc="center right", fontsize=7 if len(handles) <= 24 else 5, frameon=False)
    fig.supxlabel("generation", fontsize=8, y=0.005)
    fig.suptitle(f"{prefix.rstrip(':') + ': ' if prefix else ''}over chains (a sweep point pools its seeds' chains)",
                 fontsize=9)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.55 / w, right=1 - 2.2 / w, bottom=0.5 / h, top=1 - 0.65 / h, wspace=0.32, hspace=0.5)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
