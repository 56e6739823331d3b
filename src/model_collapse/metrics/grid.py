"""Fixed-latent sample grids: the same 64 latent draws decoded every generation.

Each grid cell follows one z through the generations, so a figure or GIF shows
how the decoder's image of the same code drifts (towards smudged 8s).
"""

from __future__ import annotations

import numpy as np

from ..rng import Seeds

GRID = 64  # 8 x 8 cells


def sample_grid(ctx) -> dict[str, np.ndarray]:
    """Decode the run's fixed latent draws and store them as arrays/grid-gen-G.npz (no columns)."""
    model = ctx.model
    rng = Seeds(ctx.exp.seed).rng("grid", 0)  # same draws at every generation and on resume
    z = rng.standard_normal((model.chains, GRID, model.latent_dim)) * model.temperature
    images = np.clip(np.rint(model.decode(z)), 0, 255).astype(np.uint8)   # (S, 64, P)
    ctx.store.save_array("grid", ctx.generation, images)
    return {}
