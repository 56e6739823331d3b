"""density.png: fitted densities at the snapshot generations against the truth.

Only the drawn chains are evaluated (chain 0; the first four in 1-D): a snapshot's model is
rebuilt with those chains alone. A density whose evaluation grows with its state (a KDE holds
its training points: 10,000 points of 50 chains took 13 minutes on a 120 x 120 grid for every
chain) is drawn on a coarser grid, so a snapshot costs at most about EVALUATIONS grid points
times numbers of state (that KDE's chain 0 gets 70 x 70 points, whose contours look the same at
this size; Gaussians and mixtures keep the full grid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .canvas import cmap as get_cmap
from .canvas import save, subplots

EVALUATIONS = 1e8   # per snapshot: grid points x numbers in one chain's state
GRID_2D = (40, 120)   # points per axis, fewest and most
GRID_1D = (100, 300)


def chain_state(state: dict, chains: int, keep: int) -> dict:
    """The first `keep` chains of a snapshot: every array whose leading axis is the chain axis."""
    return {k: (np.asarray(v)[:keep] if np.ndim(v) and np.shape(v)[0] == chains else v) for k, v in state.items()}


def drawn_models(exp, snaps: dict, keep: int):
    """(source, {generation: model}) with the first `keep` chains of each snapshot only; the whole
    model where a family cannot be built with fewer chains (a plugin's state laid out otherwise)."""
    source = exp.source.build(keep)
    models = {}
    for g, state in snaps.items():
        model = exp.model.build(source, keep)
        try:
            model.load_state_dict(chain_state(state, exp.chains, keep))
        except (ValueError, IndexError, KeyError, TypeError):
            model = exp.model.build(exp.source.build(exp.chains), exp.chains)
            model.load_state_dict(state)
        models[g] = model
    return source, models


def resolution(snaps: dict, chains: int, bounds: tuple[int, int], power: int, keep: int = 1) -> int:
    """Grid points per axis: the most within EVALUATIONS per snapshot for `keep` chains of the largest
    state (its numbers per chain stand for the cost of evaluating it at one point)."""
    size = max((sum(np.size(v) for v in s.values()) / max(chains, 1) for s in snaps.values()), default=1)
    fit = int((EVALUATIONS / max(size * keep, 1)) ** (1 / power))
    return int(np.clip(fit, *bounds))


def plot_density(run: Path, out: Path, exp) -> Path | None:
    """Fitted densities at snapshot generations against the truth (chain 0, plus a few more in 1-D)."""
    from ..store import RunStore
    decl = exp.source.declare()
    dim = getattr(decl, "dim", None)
    if decl.data_kind not in ("vector", "category") or (decl.data_kind == "vector" and dim not in (1, 2)) or \
            (decl.truth is None and dim != 2):
        return None   # densities of 1-D and 2-D vectors and of categories only (not regression pairs)
    snaps = RunStore(run).snapshots()
    if not snaps:
        return None
    if decl.data_kind == "vector" and ("log_prob" not in exp.model.capabilities(decl) or decl.truth is None):
        return _scatter_2d(exp, snaps, out) if dim == 2 else None   # no density (or truth) to draw: samples
    keep = min(exp.chains, 4) if decl.data_kind == "vector" and dim == 1 else 1
    source, models = drawn_models(exp, snaps, keep)
    truth, gens = source.truth, sorted(models)
    colour = get_cmap("viridis")
    shade = {g: colour(j / max(len(gens) - 1, 1)) for j, g in enumerate(gens)}
    if decl.data_kind == "category":
        fig, ax = subplots(figsize=(6, 3.5))
        ax.plot(np.sort(truth.p[0])[::-1], "k", lw=2, label="truth")
        for g in gens:
            ax.plot(np.sort(models[g].p[0])[::-1], color=shade[g], label=f"gen {g}")
        ax.set_yscale("log")
        ax.set_xlabel("rank")
        ax.set_ylabel("probability (chain 0)")
    elif dim == 1:
        m0, c0 = truth.moments()
        sd = np.sqrt(c0[0, 0, 0])
        x = np.linspace(m0[0, 0] - 4 * sd, m0[0, 0] + 4 * sd, resolution(snaps, exp.chains, GRID_1D, 1, keep))
        fig, axes = subplots(1, keep, figsize=(3.6 * keep, 3), squeeze=False)
        dens = {g: np.exp(models[g].log_prob(x[:, None])[:keep]) for g in gens}   # drawn chains at once
        true = np.exp(truth.log_prob(x[:, None])[0])
        for c, ax in enumerate(axes[0]):
            ax.plot(x, true, "k", lw=2, label="truth")
            for g in gens:
                ax.plot(x, dens[g][c], color=shade[g], lw=1, label=f"gen {g}")
            ax.set_title(f"chain {c}", fontsize=9, y=1.0)
            ax.locator_params(nbins=4)
        ax = axes[0, 0]
    else:
        return _plot_2d(exp, snaps, truth, models, gens, out)
    ax.legend(fontsize=7)
    return save(fig, out / "density.png", top=0.3)


def _scatter_2d(exp, snaps, out: Path) -> Path:
    """2,000 points of the truth and of chain 0's model at each snapshot (a family or a truth without a density)."""
    source, models = drawn_models(exp, snaps, 1)
    gens = sorted(models)
    rng = np.random.default_rng(0)
    panels = [("truth", source.reference(2000, rng))] + [
        (f"gen {g} (chain 0)", models[g].sample(2000, np.random.default_rng(g))[0]) for g in gens]
    lo, hi = panels[0][1].min(0), panels[0][1].max(0)
    pad = 0.25 * (hi - lo)
    fig, axes = subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4, lw=0)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(title, fontsize=9, y=1.0)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    return save(fig, out / "density.png", top=0.3)


def _plot_2d(exp, snaps, truth, models, gens, out: Path) -> Path:
    """Filled contours of the truth and of chain 0 at each snapshot, on one shared grid."""
    if hasattr(truth, "moments"):
        m0, c0 = truth.moments()
        centre, half = m0[0], 4 * np.sqrt(np.diagonal(c0[0]).max())
    else:   # a truth without moments (the checkerboard): the box of its draws, a quarter wider
        pts = exp.source.build(1).reference(2000, np.random.default_rng(0))
        lo, hi = pts.min(0), pts.max(0)
        centre, half = (lo + hi) / 2, 0.625 * (hi - lo).max()
    a = np.linspace(-half, half, resolution(snaps, exp.chains, GRID_2D, 2))
    xx, yy = np.meshgrid(a + centre[0], a + centre[1], indexing="xy")
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    fig, axes = subplots(1, len(gens) + 1, figsize=(2.8 * (len(gens) + 1), 2.8), squeeze=False)
    axes[0, 0].contourf(xx, yy, np.exp(truth.log_prob(pts)[0]).reshape(xx.shape), 12)
    axes[0, 0].set_title("truth", fontsize=9, y=1.0)
    for ax, g in zip(axes[0, 1:], gens):
        ax.contourf(xx, yy, np.exp(models[g].log_prob(pts)[0]).reshape(xx.shape), 12)
        ax.set_title(f"gen {g} (chain 0)", fontsize=9, y=1.0)
    for ax in axes[0]:
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    return save(fig, out / "density.png", top=0.3)
