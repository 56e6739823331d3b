"""Figures without pyplot: a Figure on the Agg canvas, and a fixed layout.

Importing pyplot and running tight_layout cost about half a second of a
one-generation run (benchmarks/bench_cli.py); figures of metric curves need
neither, so they use fixed margins in inches. Image-run figures (legends
outside the axes, colorbars) keep tight_layout, which costs little next to
training a VAE.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure


def subplots(nrow: int = 1, ncol: int = 1, figsize=(6.4, 4.8), squeeze: bool = True):
    """(figure, axes) like pyplot.subplots, with no pyplot state to close afterwards."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrow, ncol, squeeze=squeeze)


def cmap(name: str):
    """A registered colormap."""
    return matplotlib.colormaps[name]


def save(fig: Figure, path: Path, tight: bool = False, top: float = 0.45, dpi: int = 100) -> Path:
    """Write a PNG: fixed margins (inches; `top` leaves room for a suptitle) or tight_layout."""
    if tight:
        fig.tight_layout()
    else:
        w, h = fig.get_size_inches()
        fig.subplots_adjust(left=0.55 / w, right=1 - 0.15 / w, bottom=0.45 / h, top=1 - top / h,
                            wspace=0.32, hspace=0.5)
    path = Path(path) if Path(path).suffix else Path(f"{path}.png")   # as savefig names a bare path
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")   # a full disk never leaves half a PNG
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:].lower())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
