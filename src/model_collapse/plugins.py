"""Components from other packages: entry points and `package.module:Name` references.

A researcher's family, filter or metric plugs in without editing this package:
- an entry point in group `model_collapse.families`, `model_collapse.filters`
  or `model_collapse.metrics` (the entry's name becomes the kind), or
- a reference `kind: package.module:Name` in the config.
Families and filters are config classes (subclasses of
`model_collapse.schema.Component` declaring `data_kinds`/`capabilities()` or
`needs`, with `build`); metrics are functions or classes, optionally with
`needs` (a `kinds.Needs`) and `Params` (a `metrics.Params` subclass).
They are checked against the same protocol as built-in entries, and
`model_collapse.contracts` holds the contract checks to run in their tests.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Literal

from pydantic import Field, create_model

from .errors import ConfigError
from .kinds import Needs
from .schema import Component

GROUPS = ("families", "filters", "metrics")
REQUIRED = {"families": ("build", "capabilities"), "filters": ("build",), "sources": ("build", "declare"),
            "regimes": ("build",)}


def registry(group: str) -> dict:
    """The built-in registry of a group."""
    if group == "families":
        from .families import FAMILIES
        return FAMILIES
    if group == "filters":
        from .filters import FILTERS
        return FILTERS
    if group == "metrics":
        from .metrics import METRICS
        return METRICS
    if group == "sources":
        from .sources import SOURCES
        return SOURCES
    from .regimes import REGIMES
    return REGIMES


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict:
    """Installed entry points of `model_collapse.<group>` by name (read once per process)."""
    return {ep.name: ep for ep in entry_points(group=f"model_collapse.{group}")}


def _import(ref: str):
    """The object a `package.module:Name` reference names."""
    module, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load '{ref}': {type(e).__name__}: {e}") from None


def find(group: str, name: str):
    """The registered, installed (entry point) or referenced component `name`, or None if unknown."""
    reg = registry(group)
    if name in reg:
        return reg[name]
    if ":" in name:
        obj = _import(name)
    elif group in GROUPS and name in _entry_points(group):
        try:
            obj = _entry_points(group)[name].load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is a config error, not a crash
            raise ConfigError(f"plugin '{name}' (entry point model_collapse.{group}) failed to load: "
                              f"{type(e).__name__}: {e}") from None
    else:
        return None
    return adapt(group, name, obj)


def names(group: str) -> list[str]:
    """Built-in and installed names of a group (for error messages)."""
    return list(registry(group)) + (sorted(_entry_points(group)) if group in GROUPS else [])


@lru_cache(maxsize=None)
def adapt(group: str, name: str, obj):
    """Check a plugin object against its group's protocol; components get kind = name."""
    if group == "metrics":
        from .metrics import Metric, Params
        params = getattr(obj, "Params", Params)
        needs = getattr(obj, "needs", Needs())
        if not callable(obj) or not (isinstance(params, type) and issubclass(params, Params)) \
                or not isinstance(needs, Needs):
            raise ConfigError(f"metric '{name}' is not a metric: it must be a function(ctx) -> columns or a "
                              "class, with optional `needs` (model_collapse.kinds.Needs) and `Params` "
                              "(a model_collapse.metrics.Params subclass)")
        return Metric(obj, needs, params)
    if hasattr(obj, "Config") and not (isinstance(obj, type) and issubclass(obj, Component)):
        obj = obj.Config   # a family class carrying its config class
    missing = [m for m in REQUIRED[group] if not callable(getattr(obj, m, None))]
    if not (isinstance(obj, type) and issubclass(obj, Component)) or missing:
        what = {"families": "family", "filters": "filter"}.get(group, group)
        raise ConfigError(f"{what} '{name}' is not a {what} config: it must subclass model_collapse.schema.Component"
                          f" and define {', '.join(REQUIRED[group])}"
                          + (f" (missing: {', '.join(missing)})" if missing else ""))
    if group == "families" and not obj.data_kinds:
        raise ConfigError(f"family '{name}' declares no data_kinds (e.g. frozenset({{'vector'}}))")
    # The discriminated union needs the kind as a literal: a subclass pins it to the name used,
    # keeping the plugin's own description of it (or its docstring's first line) for `collapse explain`.
    base = obj.model_fields.get("kind")
    about = (base.description if base is not None and base.description else
             f"the {group.rstrip('s')}: {name}, {(obj.__doc__ or 'a plugin').strip().splitlines()[0]}")
    return create_model(obj.__name__, __base__=obj, __module__=obj.__module__,
                        kind=(Literal[name], Field(name, description=about)))
