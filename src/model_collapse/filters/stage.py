"""The filter stage: draw, keep what the filter accepts, draw again until every chain is full."""

from __future__ import annotations

import math

import numpy as np

from ..errors import FilterError
from ..interfaces import Begins, Draws, Transforms


def filtered_sample(model, filt, n: int, sample_rng: np.random.Generator, filter_rng: np.random.Generator,
                    max_rounds: int = 10, name: str = "filter") -> tuple[np.ndarray, np.ndarray]:
    """n accepted samples per chain (S, n, ...) and each chain's acceptance rate (S,).

    Each round draws one batch for all chains, sized from the lowest acceptance rate seen so
    far among chains still short (with 20% margin); accepted items are kept in draw order, so
    the result is deterministic given the two generators. Raises FilterError after max_rounds.
    """
    parts: list[list[np.ndarray]] | None = None
    have = drawn = None
    ask = filt.first_draw(n) if isinstance(filt, Draws) else n
    if isinstance(filt, Begins):   # a filter with memory across rounds (dedupe) starts the generation afresh
        filt.begin()
    for _ in range(max_rounds):
        x = model.sample(ask, sample_rng)
        if not isinstance(x, np.ndarray):
            raise FilterError(f"{name} needs items, but the model sampled a summary ({type(x).__name__}); "
                              "declare needs = Needs(model=('items',)) on the filter so validation says so")
        if isinstance(filt, Transforms):   # a correction maps the samples first (Gillman et al. 2024)
            x = filt.transform(x, model, filter_rng)
        keep = np.asarray(filt(x, model, filter_rng), bool)
        if keep.shape != x.shape[:2]:
            raise FilterError(f"{name} returned a keep mask of shape {keep.shape}, expected {x.shape[:2]}")
        if parts is None:
            parts = [[] for _ in range(x.shape[0])]
            have, drawn = np.zeros(x.shape[0], int), np.zeros(x.shape[0], int)
        for s in range(x.shape[0]):
            if have[s] < n:
                parts[s].append(x[s][keep[s]])
        have += keep.sum(axis=1)
        drawn += ask
        short = n - have
        if (short <= 0).all():
            out = np.stack([np.concatenate(p)[:n] for p in parts])
            return out, have / drawn
        rate = max((have / drawn)[short > 0].min(), 1.0 / (drawn.max() + 1))
        ask = min(int(math.ceil(short.max() / rate * 1.2)) + 1, 50 * n)
    rate = have / drawn
    worst = int(np.argmin(rate))
    raise FilterError(
        f"{name} accepted too few samples: chain {worst} kept {have[worst]} of {drawn[worst]} drawn "
        f"(acceptance rate {rate[worst]:.3g}) after {max_rounds} rounds, but the regime needs {n} per chain; "
        "relax the filter or raise its max_rounds")
