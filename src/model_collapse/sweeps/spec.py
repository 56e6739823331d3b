"""What a sweep runs: a recipe, dotted overrides, a grid of values, a number of seeds.

A grid axis is one dotted key (`regime.n=10,100`) or several keys that move together
(`regime.truth,regime.fitted=[0,1],[0.1,0.9]`: each value a list, one entry per key). Axes
combine as a Cartesian product; every point runs with seeds s0, s0+1, ..., s0+K-1, where s0
is the recipe's `seed`. A sweep spec file (configs/sweeps/NAME.yaml) holds the same things::

    recipe: gaussian-replace         # a recipe name (configs/) or a path
    overrides: {generations: 101}    # dotted keys, as on the command line
    grid: {regime.n: [10, 100]}
    seeds: 5
    figures: [var@100]               # panels of the sweep figure (see figures.py)
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import dump, load_raw, parse_overrides, set_dotted, validate
from ..errors import ConfigError

SPEC_KEYS = {"name", "description", "recipe", "overrides", "grid", "seeds", "figures", "expected_time"}


@dataclass
class Axis:
    """One grid dimension: keys that move together and their value tuples."""

    keys: tuple[str, ...]
    values: list[tuple]


@dataclass
class Spec:
    """A sweep before it is planned."""

    name: str
    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: list[Axis] = field(default_factory=list)
    seeds: int = 1
    figures: list[str] = field(default_factory=list)
    description: str = ""
    expected_time: str = ""

    def keys(self) -> list[str]:
        """Every swept key, in grid order."""
        return [k for a in self.axes for k in a.keys]

    def to_yaml(self) -> str:
        """The spec as written to SWEEP/sweep.yaml (readable back by load_spec)."""
        doc = {"name": self.name, "description": self.description, "recipe": self.recipe,
               "overrides": self.overrides,
               "grid": {",".join(a.keys): [list(v) if len(a.keys) > 1 else v[0] for v in a.values]
                        for a in self.axes},
               "seeds": self.seeds, "figures": self.figures, "expected_time": self.expected_time}
        return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Task:
    """One grid point x seed: everything a worker needs to run it (picklable, no validated objects)."""

    point: str
    values: tuple           # ((key, value), ...) of the point
    seed: int
    run_dir: str            # absolute
    lock: str               # absolute path of the run's lock file
    raw: dict               # the full raw experiment (variants included)
    figures: bool = False   # draw the run's own figures when it completes
    config: str = ""        # its resolved config.yaml text (to spot a changed experiment on resume)

    @property
    def label(self) -> str:
        """`point/seed-s`, the run directory relative to the sweep."""
        return f"{self.point}/seed-{self.seed}"


def split_values(text: str) -> list[str]:
    """Split `a,[b,c],{d: e}` at top-level commas (brackets and quotes protect theirs)."""
    out, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def _yaml(text: str):
    """A value as YAML reads it (numbers, booleans, lists); a bad one is a ConfigError."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"grid value {text!r} is not valid YAML: {e}") from None


def make_axis(key: str, values: list) -> Axis:
    """An axis from `k` or `k1,k2` and its values (for several keys each value is a list)."""
    keys = tuple(k.strip() for k in str(key).split(","))
    if not all(keys):
        raise ConfigError(f"grid key {key!r}: an empty key; write key=v1,v2 or key1,key2=[a1,a2],[b1,b2]")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"grid {key}: give at least one value (key=v1,v2,...)")
    rows = []
    for v in values:
        if len(keys) == 1:
            rows.append((v,))
        elif isinstance(v, list) and len(v) == len(keys):
            rows.append(tuple(v))
        else:
            raise ConfigError(f"grid {key}: each value must be a list of {len(keys)} entries, one per key "
                              f"(e.g. [{', '.join('...' for _ in keys)}]); got {v!r}")
    return Axis(keys, rows)


def parse_grid(item: str) -> Axis:
    """`--grid key=v1,v2,...` (or `k1,k2=[a,b],[c,d]`) as an Axis."""
    if "=" not in item:
        raise ConfigError(f"--grid {item!r} must look like key=v1,v2,... (e.g. regime.n=10,100,1000)")
    key, text = item.split("=", 1)
    return make_axis(key, [_yaml(v) for v in split_values(text)])


def merge_axes(axes: list[Axis], extra: list[Axis]) -> list[Axis]:
    """Axes of a spec with command-line ones: a command-line axis replaces any spec axis sharing a key."""
    given = {k for a in extra for k in a.keys}
    out = [a for a in axes if not given & set(a.keys)] + list(extra)
    seen = set()
    for a in out:
        for k in a.keys:
            if k in seen:
                raise ConfigError(f"grid key {k} is given twice; give each key once")
            if k == "seed":
                raise ConfigError("seed is set by --seeds (seeds s0..s0+K-1 from the recipe's seed); "
                                  "remove it from the grid")
            if k == "variants" or k.startswith("variants."):
                raise ConfigError(f"grid key {k}: variants cannot be swept; sweep the keys they set instead")
            seen.add(k)
    return out


def is_spec(path: Path) -> bool:
    """A YAML file is a sweep spec (not an experiment) when it names a recipe."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "recipe" in doc


def find_spec(arg: str) -> Path | None:
    """The sweep spec file `arg` names (a path, or the name of a shipped spec), else None."""
    from ..paths import recipe_path
    p = Path(arg)
    if p.is_file():
        return p if is_spec(p) else None
    return recipe_path(arg, "sweep", required=False) if not p.is_dir() else None


def load_spec(arg: str, overrides: list[str] = (), grid: list[str] = (), seeds: int | None = None,
              figures: list[str] = ()) -> Spec:
    """A Spec from a recipe or a spec file, with command-line overrides, grid axes, seeds, figures."""
    path = find_spec(arg)
    if path is None:
        spec = Spec(name=Path(arg).stem, recipe=arg)
    else:
        doc = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(doc) - SPEC_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}; a sweep spec has "
                              f"{', '.join(sorted(SPEC_KEYS))}")
        grid_doc = doc.get("grid") or {}
        if not isinstance(grid_doc, dict):
            raise ConfigError(f"{path}: grid must map dotted keys to lists of values")
        recipe = str(doc["recipe"])
        if (path.parent / recipe).is_file():   # a path relative to the spec file
            recipe = str(path.parent / recipe)
        spec = Spec(name=str(doc.get("name") or path.stem), recipe=recipe,
                    overrides=dict(doc.get("overrides") or {}),
                    axes=[make_axis(k, v) for k, v in grid_doc.items()],
                    seeds=int(doc.get("seeds", 1)), figures=list(doc.get("figures") or []),
                    description=str(doc.get("description", "")),
                    expected_time=str(doc.get("expected_time", "")))
    for key, value in parse_overrides(list(overrides)):
        spec.overrides[key] = value
    spec.axes = merge_axes(spec.axes, [parse_grid(g) for g in grid])
    if seeds is not None:
        spec.seeds = seeds
    if figures:
        spec.figures = list(figures)
    if not isinstance(spec.seeds, int) or spec.seeds < 1:
        raise ConfigError(f"--seeds must be a whole number >= 1 (got {spec.seeds})")
    return spec


def base_raw(spec: Spec) -> dict:
    """The recipe with the spec's overrides (no grid values, no seed offset)."""
    raw = load_raw(spec.recipe)
    for key, value in spec.overrides.items():
        set_dotted(raw, key, copy.deepcopy(value))
    raw.setdefault("name", Path(spec.recipe).stem)
    return raw


def show(value) -> str:
    """A value as YAML flow style writes it (0.1, [1, 2], replace, true)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).removesuffix("\n...\n").strip()


_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def point_id(values: tuple) -> str:
    """A directory name for a point: `key=value,key=value`, with a short hash when characters had to
    be replaced (or it was shortened), so that distinct points never share a directory."""
    text = ",".join(f"{k}={show(v)}" for k, v in values) or "base"
    safe = _SAFE.sub("_", text)
    if safe != text or len(safe) > 100:
        safe = f"{safe[:80]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe


def points(spec: Spec) -> list[tuple]:
    """Every grid point as ((key, value), ...) in grid order (the first axis varies slowest)."""
    out = []
    for combo in itertools.product(*[a.values for a in spec.axes]):
        out.append(tuple((k, v) for a, vals in zip(spec.axes, combo) for k, v in zip(a.keys, vals)))
    return out


def plan(spec: Spec, out: Path, run_figures: bool = False) -> list[Task]:
    """Every grid point x seed as a Task, each validated first: any error rejects the whole sweep
    (ConfigError listing each problem once, with the points it affects)."""
    base = base_raw(spec)
    s0 = base.get("seed", 0)
    if not isinstance(s0, int) or isinstance(s0, bool):
        s0 = 0   # validation below reports the bad seed itself
    out = out.resolve()
    tasks, problems = [], {}   # problem line -> labels of the runs it affects
    for values in points(spec):
        pid = point_id(values)
        for k in range(spec.seeds):
            raw = copy.deepcopy(base)
            for key, value in values:
                set_dotted(raw, key, copy.deepcopy(value))
            raw["seed"] = s0 + k
            text = ""
            try:
                text = dump(validate(raw))
            except ConfigError as e:
                for line in str(e).removeprefix("invalid configuration:").strip().splitlines():
                    problems.setdefault(line.strip(), []).append((pid, s0 + k))
            tasks.append(Task(pid, values, s0 + k, str(out / pid / f"seed-{s0 + k}"),
                              str(out / ".locks" / f"{pid}--seed-{s0 + k}.lock"), raw, run_figures, text))
    if problems:
        raise ConfigError(_report(problems, tasks, spec.seeds))
    return tasks


def _report(problems: dict, tasks: list[Task], seeds: int) -> str:
    """The validation errors of a grid, each once: for every run, for some points, or some runs."""
    pts = list(dict.fromkeys(t.point for t in tasks))
    lines = []
    for line, hit in problems.items():
        hit_points = list(dict.fromkeys(p for p, _ in hit))
        if len(hit) == len(tasks):
            where = "every run"
        elif len(hit) == len(hit_points) * seeds:
            where = "; ".join(hit_points) if len(hit_points) <= 4 else \
                f"{len(hit_points)} of {len(pts)} points ({'; '.join(hit_points[:3])}; ...)"
        else:
            where = "; ".join(f"{p}/seed-{k}" for p, k in hit[:4]) + (" ..." if len(hit) > 4 else "")
        lines.append(f"{where}: {line}")
    return ("invalid sweep, nothing was run (every grid point x seed is validated first; "
            "fix the grid or the overrides):\n  " + "\n  ".join(lines))
