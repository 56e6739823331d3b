"""Figures of a text run, read from its run directory only.

- ppl_hist.png: per-block perplexity of each generation's text under the generation-0 model, the
  histograms of several generations overlaid (the figure of Shumailov et al., Nature 2024);
- text.png: the text metrics against the generation, with the true language's own value dotted
  where the source knows it (RUN/truth_values.csv);
- samples.txt: the sample texts kept by the `text_samples` metric, generation by generation.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from ..store import find_checkpoint, read_metrics
from .canvas import cmap as get_cmap
from .canvas import save, subplots
from .panels import grid, panel

# Columns drawn on text.png (those the run has), in this order.
TEXT_COLUMNS = ("test_ppl", "truth_ppl", "ppl0_median", "ppl0_impossible", "token_tail", "vocab_survival",
                "unigram_entropy", "distinct_2", "repetition", "vocab_seen")
MAX_CURVES = 8


def committed_rows(run: Path, table: str) -> list[dict]:
    """The committed rows of RUN/<table>.csv as dicts (CSV quoting honoured); [] if absent."""
    path = run / f"{table}.csv"
    if not path.exists():
        return []
    data = path.read_bytes()
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else {}
    if status.get("status") != "complete":      # rows past the last checkpoint are not part of the run
        found = find_checkpoint(run)
        if found is not None:
            data = data[: json.loads(str(found[1]["__csv_bytes"])).get(table, 0)]
    return list(csv.DictReader(io.StringIO(data.decode())))




def plot_ppl_hist(run: Path, out: Path) -> Path | None:
    """Overlaid per-block perplexity histograms (all chains pooled) of up to 8 generations."""
    rows = committed_rows(run, "ppl_hist")
    if not rows:
        return None
    g = np.array([int(r["generation"]) for r in rows])
    b = np.array([int(r["bin"]) for r in rows])
    lo = np.array([float(r["lo"]) for r in rows])
    hi = np.array([float(r["hi"]) for r in rows])
    count = np.array([float(r["count"]) for r in rows])
    bins = int(b.max()) + 1
    edges = np.empty(bins + 1)
    edges[b], edges[b + 1] = lo, hi
    gens = np.unique(g)
    pick = gens[np.unique(np.linspace(0, len(gens) - 1, min(MAX_CURVES, len(gens))).round().astype(int))]
    cm = get_cmap("viridis")
    fig, ax = subplots(figsize=(6.4, 3.8))
    width = np.diff(np.log(edges))
    for j, gen in enumerate(pick):
        h = np.bincount(b[g == gen], weights=count[g == gen], minlength=bins)
        if h.sum() == 0:
            continue
        dens = h / h.sum() / width                    # density in log-perplexity
        colour = cm(j / max(len(pick) - 1, 1))
        ax.stairs(dens, edges, color=colour, lw=1.4, label=f"gen {gen}")
        ax.stairs(dens, edges, color=colour, alpha=0.06, fill=True)
    used = np.flatnonzero(np.bincount(b, weights=count, minlength=bins))
    if len(used):   # the fixed bins span 1 .. 2V; show the part that holds blocks
        ax.set_xlim(edges[max(used[0] - 1, 0)], edges[min(used[-1] + 2, bins)])
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("perplexity of a block under the generation-0 model")
    ax.set_ylabel("density (per unit log perplexity)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{run.name}: per-block perplexity of each generation's text (all chains)", fontsize=9)
    return save(fig, out / "ppl_hist.png", tight=True)


def plot_text_metrics(run: Path, out: Path, metrics: tuple | None = None) -> Path | None:
    """The text metric columns with the truth's value (dotted) where known (metrics: (cols, rows)
    of metrics.csv when the caller has read it)."""
    cols, rows = metrics or read_metrics(run)
    names = [c for c in TEXT_COLUMNS if c in cols]
    if not names or not len(rows):
        return None
    truth = {r["column"]: float(r["value"]) for r in committed_rows(run, "truth_values")}
    fig, axes = grid(len(names))
    for ax, name in zip(axes, names):
        panel(ax, cols, rows, name)
        if name in truth:
            ax.axhline(truth[name], color="k", lw=1.2, ls=":", label="true language")
            ax.legend(fontsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{run.name}: text metrics, median and 5-95% band over chains (dotted: the true language)",
                 fontsize=9)
    return save(fig, out / "text.png", top=0.55)


def write_samples(run: Path, out: Path) -> Path | None:
    """samples.txt: the kept sample texts, generation by generation."""
    rows = committed_rows(run, "text_samples")
    if not rows:
        return None
    lines = []
    for r in rows:
        lines.append(f"--- generation {r['generation']}, chain {r['chain']}, sample {r['index']}\n{r['text']}\n")
    path = out / "samples.txt"
    path.write_text("\n".join(lines))
    return path


def plot_text_run(run: Path, metrics: tuple | None = None) -> list[Path]:
    """Every text figure whose input exists; returns the files written."""
    run = Path(run)
    out = run / "figures"
    out.mkdir(exist_ok=True)
    made = [plot_ppl_hist(run, out), plot_text_metrics(run, out, metrics), write_samples(run, out)]
    return [p for p in made if p is not None]
