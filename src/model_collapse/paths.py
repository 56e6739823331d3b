"""Filesystem locations shared by the whole package."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """Root of the cache (data sets, classifiers, compiled kernels): $MODEL_COLLAPSE_CACHE, else ~/.cache/model-collapse."""
    env = os.environ.get("MODEL_COLLAPSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "model-collapse"
