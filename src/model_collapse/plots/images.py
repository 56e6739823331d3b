"""Figures of image runs: sample grids, an animated GIF over generations, the
classifier-by-generation heatmaps and the class histogram's evolution.

Everything is drawn from files in a run directory (plot_image_run):

    RUN/samples/gen-G.png        a sample grid per generation (save_generation_grid writes them)
    RUN/metrics.csv              class_0..class_{C-1} columns (metrics.images.classes)
    RUN/classifier_matrix.csv    chain, classifier, generation, accuracy, loss (ClassifierMatrix)

Images are on the project's 0..255 scale (uint8, or float clipped and rounded).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .canvas import cmap, save, subplots

SAMPLES_DIR = "samples"
BAND = 14  # pixels of white band above each GIF frame for the generation label


def _uint8(images) -> np.ndarray:
    """Any 0..255-scale array -> uint8 (float values clipped and rounded)."""
    a = np.asarray(images)
    return a if a.dtype == np.uint8 else np.clip(np.rint(np.asarray(a, np.float32)), 0, 255).astype(np.uint8)


def tile(images, ncol: int = 10, pad: int = 2, scale: int = 2) -> np.ndarray:
    """Images (m, H, W) -> one grid (rows * (H*scale + pad) + pad, ...) uint8, white background."""
    imgs = _uint8(images)
    if scale > 1:
        imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour: keep pixels crisp
    m, h, w = imgs.shape
    ncol = max(1, min(ncol, m))
    nrow = -(-m // ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, np.uint8)
    for k in range(m):
        r, c = divmod(k, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = imgs[k]
    return grid


def sample_grid(images, path, ncol: int = 10, scale: int = 2) -> Path:
    """Write images (m, H, W) on the 0..255 scale as one PNG grid; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tile(images, ncol, scale=scale)).save(path)
    return path


def save_generation_grid(run, generation: int, images, ncol: int = 10) -> Path:
    """Write generation G's sample grid where plot_image_run finds it: RUN/samples/gen-G.png."""
    return sample_grid(images, Path(run) / SAMPLES_DIR / f"gen-{generation:06d}.png", ncol)


def _frame(src, ncol: int) -> Image.Image:
    """A PNG path, a grid (Hg, Wg) or images (m, H, W) -> a greyscale PIL image."""
    if isinstance(src, (str, Path)):
        return Image.open(src).convert("L")
    a = np.asarray(src)
    return Image.fromarray(tile(a, ncol) if a.ndim == 3 else _uint8(a))


def grids_to_gif(frames: Sequence, path, fps: float = 4.0, generations: Sequence[int] | None = None,
                 ncol: int = 10) -> Path:
    """Animated GIF, one frame per generation, each labelled with its generation number."""
    if not frames:
        raise ValueError("grids_to_gif needs at least one frame")
    gens = list(generations) if generations is not None else list(range(len(frames)))
    imgs = [_frame(f, ncol) for f in frames]
    w, h = max(i.width for i in imgs), max(i.height for i in imgs)
    font = ImageFont.load_default()
    out = []
    for img, g in zip(imgs, gens):
        # The label also keeps consecutive frames distinct: Pillow merges identical frames,
        # which would break "one frame per generation" once a run has collapsed.
        canvas = Image.new("L", (w, h + BAND), 255)
        canvas.paste(img, (0, BAND))
        ImageDraw.Draw(canvas).text((3, 1), f"generation {g}", fill=0, font=font)
        out.append(canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out[0].save(path, save_all=True, append_images=out[1:], duration=int(round(1000 / fps)), loop=0)
    return path


def heatmap(matrix, path, title: str, generations: Sequence[int] | None = None,
            label: str = "accuracy", vmin: float | None = None, vmax: float | None = None) -> Path:
    """Heatmap of a (G, G) matrix: classifier i (rows) scored on generation j (columns); NaN shown grey."""
    m = np.asarray(matrix, float)
    gens = list(generations) if generations is not None else list(range(m.shape[1]))
    fig, ax = subplots(figsize=(5.2, 4.4))
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap("viridis").with_extremes(bad="0.85"), vmin=vmin, vmax=vmax, origin="upper",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    step = max(1, len(gens) // 10)  # at most ~10 tick labels per axis
    ticks = list(range(0, len(gens), step))
    ax.set_xticks(ticks, [str(gens[t]) for t in ticks], fontsize=7)
    ax.set_yticks(ticks, [str(gens[t]) for t in ticks], fontsize=7)
    if len(gens) <= 12:  # small matrices: print the values too
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if v < np.nanmean(m) else "k")
    ax.set_xlabel("data of generation j")
    ax.set_ylabel("classifier trained at generation i")
    ax.set_title(title, fontsize=9)
    return save(fig, path, tight=True)


def class_histogram_evolution(hist, path, class_names: Sequence[str] | None = None,
                              generations: Sequence[int] | None = None, title: str = "") -> Path:
    """Class shares (G, C) over generations: a stacked area for up to 20 classes, else a heatmap."""
    h = np.asarray(hist, float)
    g, c = h.shape
    gens = np.asarray(generations if generations is not None else np.arange(g))
    names = list(class_names) if class_names is not None else [str(k) for k in range(c)]
    fig, ax = subplots(figsize=(6.4, 3.6))
    if c <= 20:
        colors = cmap("tab10" if c <= 10 else "tab20")(np.arange(c))
        ax.stackplot(gens, h.T, labels=names, colors=colors, linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of samples")
        ax.legend(fontsize=6, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class",
                  title_fontsize=7, reverse=True)
    else:
        im = ax.imshow(h.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                       extent=(gens[0] - 0.5, gens[-1] + 0.5, -0.5, c - 0.5))
        fig.colorbar(im, ax=ax, label="share of samples")
        step = max(1, c // 24)
        ax.set_yticks(range(0, c, step), names[::step], fontsize=5)
        ax.set_ylabel("class")
    ax.set_xlabel("generation")
    ax.set_title(title or "class histogram of the samples (reference classifier)", fontsize=9)
    return save(fig, path, tight=True)


def _class_hist(run: Path, chain: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(generations, class shares (G, C)) of one chain from metrics.csv, or None without class columns."""
    from ..store import read_metrics
    if not (run / "metrics.csv").exists():
        return None
    cols, rows = read_metrics(run)
    idx = sorted((int(m.group(1)), i) for i, c in enumerate(cols) if (m := re.fullmatch(r"class_(\d+)", c)))
    if not idx or not len(rows):
        return None
    rows = rows[rows[:, cols.index("chain")] == chain]
    return rows[:, cols.index("generation")].astype(int), rows[:, [i for _, i in idx]]


def _matrix(run: Path, chain: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(generations, accuracy (G, G), loss (G, G)) of one chain from classifier_matrix.csv; NaN where missing."""
    from ..store import read_metrics
    if not (run / "classifier_matrix.csv").exists():
        return None
    cols, rows = read_metrics(run, "classifier_matrix")
    rows = rows[rows[:, cols.index("chain")] == chain]
    ci, gi = rows[:, cols.index("classifier")].astype(int), rows[:, cols.index("generation")].astype(int)
    gens = np.unique(np.concatenate([ci, gi]))
    pos = {g: k for k, g in enumerate(gens)}
    acc, loss = np.full((2, len(gens), len(gens)), np.nan)
    for r, i, j in zip(rows, ci, gi):
        acc[pos[i], pos[j]] = r[cols.index("accuracy")]
        loss[pos[i], pos[j]] = r[cols.index("loss")]
    return gens, acc, loss


def plot_image_run(run, chain: int = 0, fps: float = 4.0) -> list[Path]:
    """Draw the image figures of a run directory (those whose input files exist); returns the files."""
    run = Path(run)
    out = run / "figures"
    out.mkdir(exist_ok=True)
    written = []
    pngs = sorted((run / SAMPLES_DIR).glob("gen-*.png"))
    if pngs:
        gens = [int(p.stem[4:]) for p in pngs]
        written.append(grids_to_gif(pngs, out / "samples.gif", fps, gens))
    hist = _class_hist(run, chain)
    if hist is not None:
        written.append(class_histogram_evolution(hist[1], out / "class_histogram.png", generations=hist[0],
                                                 title=f"class histogram of the samples (chain {chain})"))
    mat = _matrix(run, chain)
    if mat is not None and len(mat[0]):
        gens, acc, loss = mat
        written.append(heatmap(acc, out / "classifier_accuracy.png",
                               f"accuracy of classifier i on generation j (chain {chain})", gens,
                               "accuracy", 0.0, 1.0))
        written.append(heatmap(loss, out / "classifier_loss.png",
                               f"cross-entropy of classifier i on generation j (chain {chain})", gens,
                               "mean cross-entropy (nats)"))
    return written
