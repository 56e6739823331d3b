"""Filesystem locations shared by the whole package."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "recipe_dir", "recipe_path", "recipes"]


def cache_dir() -> Path:
    """Root of the cache (data sets, classifiers, compiled kernels): $MODEL_COLLAPSE_CACHE, else ~/.cache/model-collapse."""
    env = os.environ.get("MODEL_COLLAPSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "model-collapse"


def recipe_dir(kind: str = "run") -> Path:
    """Where the shipped recipes live (package data): recipes/ for runs, recipes/sweeps/ for sweep specs."""
    root = Path(__file__).resolve().parent / "recipes"
    return root / "sweeps" if kind == "sweep" else root


def recipes(kind: str = "run") -> list[Path]:
    """The shipped recipes (kind "run") or sweep specs (kind "sweep"), sorted by name."""
    return sorted(recipe_dir(kind).glob("*.yaml"))


def recipe_path(name_or_path: str | Path, kind: str = "run", required: bool = True) -> Path | None:
    """The YAML file a recipe argument names: an existing file path, or the name of a shipped recipe
    (`gaussian-replace`, `configs/gaussian-replace.yaml` from a checkout, `gaussian-n-sweep` for a sweep).

    A directory, or a name that is neither, raises ConfigError saying what to pass (None instead
    when not `required`)."""
    from .errors import ConfigError
    path = Path(name_or_path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; pass a YAML file or a recipe name (see `collapse list`)")
    if path.is_file():
        return path
    shipped = recipe_dir(kind) / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and shipped.is_file():
        return shipped
    if not required:
        return None
    what = "sweep spec" if kind == "sweep" else "config file"
    raise ConfigError(f"{what} {path} not found: pass a YAML file or a recipe name (see `collapse list`)")
