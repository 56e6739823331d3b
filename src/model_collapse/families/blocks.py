"""Token blocks for the language-model families (transformer, hf): checks, held-out split, prompt pools.

Text data are (S or 1, N, T) int32 ids (sources/text.py); these are the steps both families take on
them the same way, so a fix to one is a fix to both.
"""

from __future__ import annotations

import numpy as np
import torch

from ..datasets.errors import DataError


def check_blocks(data, chains: int, block: int, vocab: int, who: str) -> np.ndarray:
    """Checked token blocks (S or 1, N, T) int32 (a shared view stays a view); ids in [0, vocab)."""
    x = np.asarray(data)
    if x.ndim != 3 or x.shape[-1] != block:
        raise DataError(f"{who}: text data must be (chains, blocks, {block} tokens), got {x.shape}")
    if x.shape[0] not in (chains, 1):
        raise DataError(f"{who}: data has {x.shape[0]} chains, the family {chains}")
    if x.size and (x.min() < 0 or x.max() >= vocab):
        raise DataError(f"{who}: token ids must lie in [0, {vocab}); got {x.min()} .. {x.max()}")
    return x


def heldout_split(x: np.ndarray, val_fraction: float, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random held-out share of the blocks x (N, T): (train, val); val is train when nothing is held out."""
    n = x.shape[0]
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, round(val_fraction * n)))
    if n_val == 0:
        return x, x
    perm = torch.randperm(n, generator=gen).numpy()
    return x[np.sort(perm[n_val:])], x[np.sort(perm[:n_val])]


def prompt_pool(x: np.ndarray, chains: int, cfg, block: int) -> np.ndarray | None:
    """Prompted configs: the first (prompt_from: start) or last `prompt` tokens of every training block,
    (S, N, prompt) int32; None when the config samples unconditionally."""
    if cfg.mode != "prompted":
        return None
    part = slice(0, cfg.prompt) if cfg.prompt_from == "start" else slice(block - cfg.prompt, block)
    return np.ascontiguousarray(np.broadcast_to(x, (chains,) + x.shape[1:])[:, :, part], dtype=np.int32)


def pick_prompts(pool: np.ndarray, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n prompts (n, prompt) int64 from one chain's pool: each once, in order, when n equals its size; else
    drawn without replacement (n smaller) or with it (n larger)."""
    pick = np.arange(n) if n == len(pool) else (
        np.sort(rng.choice(len(pool), n, replace=False)) if n < len(pool) else rng.integers(0, len(pool), n))
    return torch.from_numpy(pool[pick].astype(np.int64))
