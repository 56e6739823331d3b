"""Experiment configuration: one YAML per experiment, dotted overrides, strict validation.

Validation rejects unknown keys and reports every error at once, each with
its dotted path; the CLI prints them and exits 2 without writing anything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError
from .families import FAMILIES, family_config
from .filters import FILTERS
from .metrics import METRICS
from .regimes import REGIMES
from .sources import SOURCES


def _union(classes: list[type]):
    """A pydantic union discriminated by ``kind``."""
    return Annotated[Union[tuple(classes)], Field(discriminator="kind")]


class Settings(BaseModel):
    """Fields shared by every experiment (components are added in experiment_model())."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    description: str = ""
    seed: int = Field(0, ge=0)
    chains: int = Field(1, gt=0)
    generations: int = Field(10, gt=0, description="rows per chain: generation 0 (fit to real data) .. generations-1")
    metrics: list[str] = ["params"]
    reference_n: int = Field(10000, gt=0)
    record_every: int = Field(1, gt=0)
    snapshots: list[int] = []
    checkpoint_seconds: float = Field(30.0, ge=0)
    variants: dict[str, dict[str, Any]] = {}


def experiment_model():
    """The Experiment model with one discriminated union per registry."""
    return create_model(
        "Experiment", __base__=Settings,
        source=(_union(list(dict.fromkeys(c for c, _ in SOURCES.values()))), ...),
        model=(_union([family_config(k) for k in FAMILIES]), ...),
        regime=(_union([c for c, _ in REGIMES.values()]), ...),
        filter=(_union([c for c, _ in FILTERS.values()]), FILTERS["none"][0]()),
    )


def _path(loc: tuple) -> str:
    """Dotted path from a pydantic location, dropping union tags (model.gaussian.ddof -> model.ddof)."""
    parts, prev = [], None
    for item in loc:
        if prev in ("source", "model", "regime", "filter") and len(parts) == 1 and isinstance(item, str) and "[" not in item:
            tagged = {"source": SOURCES, "model": FAMILIES, "regime": REGIMES, "filter": FILTERS}[prev]
            if item in tagged:
                prev = item
                continue
        parts.append(str(item))
        prev = item
    return ".".join(parts)


def _cross_checks(exp) -> list[str]:
    """Checks that span components: sizes, compatibility, metric applicability."""
    errs = []
    for comp in ("source", "model", "regime", "filter"):
        errs += [f"{p}: {m}" for p, m in getattr(exp, comp).check(exp)]
    src_kind = {"gaussian": "vector", "gmm": "vector", "categorical": "category"}.get(exp.source.kind, "image")
    if FAMILIES[exp.model.kind][2] != src_kind:
        errs.append(f"model.kind: family '{exp.model.kind}' cannot fit {src_kind} data from source '{exp.source.kind}'")
    for m in exp.metrics:
        if m not in METRICS:
            errs.append(f"metrics: unknown metric '{m}'; choose from {', '.join(METRICS)}")
            continue
        need = METRICS[m][1]
        dim = _dim(exp)
        bad = ((need == "image" and src_kind != "image")
               or (need not in (None, "image") and src_kind == "image")
               or (need in ("1d",) and dim != 1)
               or (need == "1d-or-2d" and dim not in (1, 2))
               or (need == "truth" and src_kind == "image")
               or (need == "closed-kl" and exp.model.kind not in ("gaussian", "categorical"))
               or (need == "tail" and (dim is None or (dim > 1 and getattr(exp.model, "summary", False)))))
        if bad:
            errs.append(f"metrics: '{m}' does not apply to this source/model ({need})")
    if any(g < 0 for g in exp.snapshots):
        errs.append("snapshots: generations must be >= 0 (ones past the last generation are ignored)")
    return errs


def _dim(exp):
    """Dimension of vector data (None for categories/images)."""
    src = exp.source
    if src.kind == "gaussian":
        return len(src.mean)
    if src.kind == "gmm":
        m = src.means
        return 1 if m and not isinstance(m[0], list) else len(m[0])
    return None


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
        out.append((key.strip(), yaml.safe_load(raw) if raw.strip() else ""))
    return out


def load_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a YAML experiment and apply dotted overrides."""
    path = Path(path)
    if not path.exists():
        alt = Path(__file__).resolve().parents[2] / "configs" / f"{path.stem}.yaml"
        if not path.suffix and alt.exists():
            path = alt
        else:
            raise ConfigError(f"config file {path} not found (see `collapse list` for recipes)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    for key, value in parse_overrides(list(overrides)):
        set_dotted(raw, key, value)
    return raw


def validate(raw: dict):
    """Validate a raw experiment dict; raise ConfigError listing every problem with its dotted path."""
    errors = []
    try:
        exp = experiment_model()(**raw)
    except ValidationError as e:
        for err in e.errors():
            errors.append(f"{_path(err['loc'])}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors)) from None
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
