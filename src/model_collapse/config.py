"""Experiment configuration: one YAML per experiment, dotted overrides, strict validation.

Validation rejects unknown keys and reports every error at once, each with
its dotted path; the CLI prints them and exits 2 without writing anything.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError
from .kinds import family_mismatch, mismatches
from .metrics import metric_entry
from .plugins import find, names, registry

COMPONENTS = {"source": "sources", "model": "families", "regime": "regimes", "filter": "filters"}
NOUN = {"sources": "source", "families": "family", "regimes": "regime", "filters": "filter"}


def _union(classes: list[type]):
    """A pydantic union discriminated by ``kind``."""
    return Annotated[Union[tuple(classes)], Field(discriminator="kind")]


class Settings(BaseModel):
    """Fields shared by every experiment (components are added in experiment_model())."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str = Field("", description=(
        "the experiment's name (default: the recipe's file name); run directories are named after it"))
    description: str = Field("", description=(
        "what the experiment shows, in a sentence (its first line is shown by `collapse list`)"))
    seed: int = Field(0, ge=0, description=(
        "root of every random stream: SeedSequence(seed, spawn_key=(role, generation)), so a resumed run "
        "draws the same numbers"))
    chains: int = Field(1, gt=0, description=(
        "independent replicate runs advanced together as arrays (one set of fits per chain)"))
    generations: int = Field(10, gt=0, description="rows per chain: generation 0 (fit to real data) .. generations-1")
    metrics: list[Union[str, dict[str, Any]]] = Field(["params"], description=(
        "Each entry a metric name, or a mapping with its name and parameters: {name: tail, k: 2}."))
    reference_n: int = Field(10000, gt=0, description=(
        "held-out true items the metrics score every generation on"))
    reference: Literal["shared", "per-chain"] = Field("shared", description=(
        "shared: one held-out set scores every chain; per-chain: each chain its own, drawn from (seed, chain), "
        "as Kazdan et al. (2024) draw a fresh test set per seed (nll and perplexity; the spread over chains then "
        "includes the test set's)"))
    record_every: int = Field(1, gt=0, description=(
        "compute and record metrics on every k-th generation (the last one is always recorded)"))
    snapshots: list[int] = Field([], description=(
        "generations whose fitted model is kept under snapshots/ for the density figures (the last is always "
        "kept)"))
    checkpoint_seconds: float = Field(30.0, ge=0, description=(
        "seconds between checkpoints (and at the end, and on a stop); 0 checkpoints every generation"))
    variants: dict[str, dict[str, Any]] = Field({}, description=(
        "named sets of dotted overrides run side by side into sub-directories, e.g. {mle: {model.ddof: 0}, "
        "unbiased: {model.ddof: 1}}"))


def _components(raw: dict) -> tuple[dict, list[str]]:
    """Config classes per component (built-in plus any plugin the raw config names), and lookup errors."""
    classes, errors = {}, []
    for comp, group in COMPONENTS.items():
        reg = dict(registry(group))
        kind = raw.get(comp, {}).get("kind") if isinstance(raw.get(comp), dict) else None
        if isinstance(kind, str) and kind not in reg:
            try:
                found = find(group, kind)
            except ConfigError as e:
                errors.append(f"{comp}.kind: {e}")
                found = None
            else:
                if found is None:
                    errors.append(f"{comp}.kind: unknown {NOUN[group]} '{kind}'; choose from "
                                  f"{', '.join(dict.fromkeys(names(group)))}, or name a plugin as package.module:Class")
            if found is not None:
                reg[kind] = found
        classes[comp] = list(dict.fromkeys(reg.values()))
    return classes, errors


def experiment_model(raw: dict | None = None):
    """The Experiment model with one discriminated union per component (plugins the raw config names included)."""
    classes, _ = _components(raw or {})
    return _experiment_model(*(tuple(classes[c]) for c in COMPONENTS))


@lru_cache(maxsize=32)
def _experiment_model(sources: tuple, families: tuple, regimes: tuple, filters: tuple):
    """Built once per set of component classes: building a pydantic model costs ~50 ms."""
    classes = dict(zip(COMPONENTS, (list(sources), list(families), list(regimes), list(filters))))
    return create_model(
        "Experiment", __base__=Settings,
        source=(_union(classes["source"]), ...),
        model=(_union(classes["model"]), ...),
        regime=(_union(classes["regime"]), ...),
        filter=(_union(classes["filter"]), classes["filter"][0]()),
    )


def _path(loc: tuple, raw: dict) -> str:
    """Dotted path from a pydantic location, dropping union tags (model.gaussian.ddof -> model.ddof)."""
    parts = [str(x) for x in loc]
    if len(parts) > 1 and parts[0] in COMPONENTS:
        given = raw.get(parts[0], {}).get("kind") if isinstance(raw.get(parts[0]), dict) else None
        if parts[1] == given or parts[1] in names(COMPONENTS[parts[0]]):
            del parts[1]
    return ".".join(parts)


def _metric_checks(exp, src, caps) -> list[str]:
    """Each metric entry: known, valid parameters, and needs met by source and model."""
    errs = []
    for i, entry in enumerate(exp.metrics):
        name, params = metric_entry(entry)
        if name in [metric_entry(e)[0] for e in exp.metrics[:i]]:
            errs.append(f"metrics.{i}: metric '{name}' is listed twice; give it once (with its parameters)")
            continue
        try:
            spec = find("metrics", name)
        except ConfigError as e:
            errs.append(f"metrics.{i}: {e}")
            continue
        if spec is None:
            errs.append(f"metrics.{i}: unknown metric '{name}'; choose from {', '.join(names('metrics'))}")
            continue
        try:
            spec.params(**params)
        except ValidationError as e:
            errs += [f"metrics.{i}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        errs += [f"metrics.{i}: {m}" for m in mismatches(f"metric {name}", spec.needs, src, exp.model.kind, caps)]
        if exp.reference == "per-chain" and spec.reference == "shared":
            errs.append(f"metrics.{i}: metric {name} scores one shared held-out set; use reference: shared with it "
                        f"(per-chain sets are for nll and perplexity)")
    return errs


def _cross_checks(exp) -> list[str]:
    """Checks that span components, from their declarations: kinds, capabilities, sizes."""
    errs = []
    for comp in COMPONENTS:
        errs += [f"{p}: {m}" for p, m in getattr(exp, comp).check(exp)]
    src = exp.source.declare()
    fit = family_mismatch(exp.model.kind, exp.model.data_kinds, src)
    if fit:
        return errs + [f"model.kind: {m}" for m in fit]
    caps = exp.model.capabilities(src)
    errs += _metric_checks(exp, src, caps)
    errs += [f"filter.kind: {m}" for m in mismatches(f"filter {exp.filter.kind}", exp.filter.needs, src,
                                                     exp.model.kind, caps)]
    errs += [f"regime.kind: {m}" for m in mismatches(f"regime {exp.regime.kind}", exp.regime.needs, src,
                                                     exp.model.kind, caps)]
    errs += _memory_check(exp, src, caps)
    if any(g < 0 for g in exp.snapshots):
        errs.append("snapshots: generations must be >= 0 (ones past the last generation are ignored)")
    return errs


def flat(tree, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a config tree (lists are leaves)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


# Bytes an item takes in memory, per data kind (vectors and pairs: 8 per coordinate; images: 785
# pixels as float32 in training copies; text: a block of token ids, assumed at most 256 long).
ITEM_BYTES = {"vector": 8, "category": 8, "pairs": 8, "image": 4 * 785, "text": 4 * 256}


def memory_needed(exp, src, caps) -> int:
    """A lower estimate of the bytes a run holds at once: every chain's items (training set, samples,
    an accumulated pool), or a few hundred bytes a chain for families that keep only a summary."""
    per_item = ITEM_BYTES.get(src.data_kind, 8) * (src.dim or 1) if src.data_kind in ("vector", "pairs") \
        else ITEM_BYTES.get(src.data_kind, 8)
    items = exp.regime.items_held(exp.generations) if "items" in caps else 0
    return exp.chains * (items * per_item + 256)


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    import os
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _memory_check(exp, src, caps) -> list[str]:
    """Refuse, before anything is allocated, a run that needs more memory than the machine has."""
    need, have = memory_needed(exp, src, caps), machine_memory()
    if have is None or need <= have:
        return []
    return [f"chains: {exp.chains:,} chains x {exp.regime.kind} regime would need at least {need / 2**30:,.1f} GiB "
            f"of memory; this machine has {have / 2**30:,.1f} GiB: use fewer chains (or a smaller regime.n)"]


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set tree['a']['b'] = value for key 'a.b', creating dicts on the way."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Parse 'a.b=value' strings; values are read as YAML (numbers, lists, booleans)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "cannot be parsed"
            raise ConfigError(f"override '{item}': the value is not valid YAML ({problem}); "
                              "close its brackets or quote it") from None
        out.append((key.strip(), value))
    return out


def load_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a YAML experiment and apply dotted overrides."""
    from .paths import recipe_path
    path = recipe_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where} ({getattr(e, 'problem', None) or 'cannot be parsed'})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for key, value in parse_overrides(list(overrides)):
        set_dotted(raw, key, value)
    return raw


def _non_finite(tree, prefix: str = "") -> list[str]:
    """Dotted paths of NaN or infinite numbers anywhere in a config tree (free-form fields included)."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in _non_finite(v, f"{prefix}.{i}")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [prefix]
    return []


def validate(raw: dict):
    """Validate a raw experiment dict; raise ConfigError listing every problem with its dotted path."""
    if not isinstance(raw, dict):
        raise ConfigError("invalid configuration: the top level must be a mapping of keys")
    _, errors = _components(raw)
    unknown = {e.split(".", 1)[0] for e in errors}   # components whose kind does not exist
    errors += [f"{p}: Input should be a finite number" for p in _non_finite(raw)]
    try:
        # Components of an unknown kind are left out, so every other error is listed with theirs.
        exp = experiment_model(raw)(**{k: v for k, v in raw.items() if k not in unknown})
    except ValidationError as e:
        for err in e.errors():
            path = _path(err["loc"], raw)
            if path.split(".", 1)[0] in unknown or f"{path}: {err['msg']}" in errors:
                continue
            if err["type"] == "finite_number" and any(x.startswith(path + ":") for x in errors):
                continue
            errors.append(f"{path}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors)) from None
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    errors = _cross_checks(exp)
    for name, over in exp.variants.items():
        try:
            validate(variant_raw(raw, name))
        except ConfigError as e:
            errors.append(f"variants.{name}: " + str(e).replace("\n", "\n  "))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return exp


def variant_raw(raw: dict, name: str) -> dict:
    """The raw config of one variant: the base with the variant's dotted overrides, no variants."""
    out = copy.deepcopy(raw)
    over = out.pop("variants", {})[name] or {}
    for key, value in over.items():
        set_dotted(out, key, value)
    out["name"] = f"{raw.get('name', '')}/{name}".lstrip("/")
    return out


def dump(exp) -> str:
    """YAML text of a resolved experiment (every default filled in)."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)
