"""Metrics for regression families against a known linear truth."""

from __future__ import annotations

import numpy as np

from .distribution import Context


def test_error(ctx: Context) -> dict[str, np.ndarray]:
    """Excess test risk E[(x.w_hat - y)^2] - sigma^2 = ||w_hat - w*||^2 for x ~ N(0, I).

    The quantity of Dohmatob et al. 2024 and Gerstgrasser et al. 2024 (Sec. 2),
    exact (no test set): under replace E = sigma^2 d/(T-d-1) (g+1) (theory.py).
    """
    diff = ctx.model.w - ctx.source.truth.w[:1]
    return {"test_error": (diff ** 2).sum(axis=1)}
