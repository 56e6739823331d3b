"""Data sets flowing through the loop, and the two operations regimes need.

A data set is an array with a leading chain axis, ``(S, N, ...)``: S chains
(independent replicate runs) each holding N items (a row of d floats, a
category index, an image). A family may instead hand out a *summary* object
(e.g. ``GaussianStats``: count, mean, scatter) that is exact for its own fit;
summaries support ``merge`` but not random subsets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Images are (S, N, H*W + 1): pixels on 0..255, then the class label; this label marks an item
# without a class (a generated image before a classifier labels it).
UNLABELLED = 255

from .errors import ConfigError

Data = Any  # np.ndarray (S, N, ...) or a summary with .n, .merge, .from_array


def size(data: Data) -> int:
    """Number of items per chain."""
    return int(data.n) if hasattr(data, "merge") else int(data.shape[1])


def concat(parts: list[Data]) -> Data:
    """Pool data sets item-wise (per chain); summaries absorb raw arrays exactly."""
    parts = [p for p in parts if size(p) > 0]
    if len(parts) == 1:
        return parts[0]
    summary = next((p for p in parts if hasattr(p, "merge")), None)
    if summary is None:
        return np.concatenate(parts, axis=1)
    kind = type(summary)
    out = None
    for p in parts:
        p = p if isinstance(p, kind) else kind.from_array(p)
        out = p if out is None else out.merge(p)
    return out


def subset(data: Data, k: int, rng: np.random.Generator) -> Data:
    """An independent uniform random subset of k items per chain (no replacement)."""
    n = size(data)
    if k >= n:
        return data
    if hasattr(data, "merge"):
        raise ConfigError(
            "this regime draws random subsets of earlier data, which needs the "
            "individual samples; set model.summary=false")
    # Random keys + argpartition: O(N) per chain, no per-sample Python.
    idx = rng.random((data.shape[0], n)).argpartition(k - 1, axis=1)[:, :k]
    idx.sort(axis=1)  # keep memory access forward-moving; order is irrelevant to fits
    if data.shape[0] == 1:
        return data[:, idx[0]]
    return np.take_along_axis(data, idx.reshape(idx.shape + (1,) * (data.ndim - 2)), axis=1)


def pack(name: str, data: Data) -> dict[str, np.ndarray]:
    """Flatten a data set (array or summary) into named arrays for a checkpoint."""
    if data is None:
        return {}
    if not hasattr(data, "merge"):
        return {name: np.asarray(data)}
    out = {f"{name}.__summary": np.array(type(data).__name__)}
    out.update({f"{name}.{k}": np.asarray(v) for k, v in vars(data).items()})
    return out


def unpack(name: str, arrays: dict[str, np.ndarray]) -> Data:
    """Inverse of pack(); None when the name is absent."""
    if name in arrays:
        return arrays[name]
    key = f"{name}.__summary"
    if key not in arrays:
        return None
    from .families.categorical import CategoricalCounts
    from .families.gaussian import GaussianStats
    cls = {c.__name__: c for c in (GaussianStats, CategoricalCounts)}[str(arrays[key])]
    fields = {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(name + ".") and k != key}
    fields["n"] = int(fields["n"])
    return cls(**fields)
