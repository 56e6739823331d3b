"""Statistics across seeds: per grid point, metric and generation, the mean and the median over
seeds with percentile-bootstrap confidence intervals (95%, 1,000 resamples, a fixed seed, so
stats.csv is the same file every time it is computed from the same runs).

The unit is the seed (independent runs); a seed's value at a generation is its run's mean over
chains (with chains: 1, the run's value). Seeds are resampled jointly across generations and
metrics. Only complete runs count; `n` is how many seeds had a value. NaN is missing, +-inf is
a value (a median may be inf, e.g. a collapse that never happened).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..store import atomic_write, read_metrics, save_npz
from .bootstrap import RESAMPLES, bootstrap, nanmean, nanmedian, resample_indices
from .index import read_index

SKIP = {"generation", "chain"}
# The bootstrap's numbers live in bootstrap.py; these names stay importable from here.
__all__ = ["RESAMPLES", "Group", "bootstrap", "groups", "nanmedian", "resample_indices", "seed_table",
           "summary", "summary_path", "write_stats"]


def seed_table(run: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(metric names, generations (G,), values (G, M)): a run's metrics averaged over its chains."""
    cols, rows = read_metrics(run)
    names = [c for c in cols if c not in SKIP]
    if not len(rows):
        return names, np.zeros(0), np.zeros((0, len(names)))
    g = rows[:, cols.index("generation")]
    data = rows[:, [cols.index(c) for c in names]]
    gens, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    if (counts == counts[0]).all() and (np.diff(inv) >= 0).all():   # the usual layout: every chain each time
        return names, gens, nanmean(data.reshape(len(gens), int(counts[0]), len(names)), 1)
    sums = np.zeros((len(gens), len(names)))
    seen = np.zeros((len(gens), len(names)))
    finite = ~np.isnan(data)
    np.add.at(sums, inv, np.where(finite, data, 0.0))
    np.add.at(seen, inv, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return names, gens, np.where(seen > 0, sums / np.maximum(seen, 1), np.nan)


def summary_path(sweep: Path, label: str, variant: str | None = None) -> Path:
    """Where a run's chain means are cached: SWEEP/.cache/<point>--seed-<s>[--<variant>].npz."""
    name = label.replace("/", "--") + (f"--{variant}" if variant else "")
    return Path(sweep) / ".cache" / f"{name}.npz"


def summary(run: Path, cache: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """seed_table(run), from its cache when the cache was made from this very metrics.csv.

    Workers write the cache as each run completes, so the statistics of a sweep of large runs
    read a few kilobytes per run instead of re-parsing every metrics.csv (a 1,000-chain run of
    1,000 generations is a 50 MB file)."""
    csv_path = Path(run) / "metrics.csv"
    stamp = f"{csv_path.stat().st_size}:{csv_path.stat().st_mtime_ns}" if csv_path.exists() else ""
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["stamp"]) == stamp:
                return json.loads(str(z["names"])), z["gens"], z["values"]
    except Exception:  # noqa: BLE001 - absent, stale, truncated, not an npz: recompute
        pass
    names, gens, values = seed_table(run)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_npz(cache, {"stamp": np.array(stamp), "names": np.array(json.dumps(names)), "gens": gens,
                         "values": values}, durable=False)
    except OSError:
        pass   # a cache only
    return names, gens, values


@dataclass
class Group:
    """The complete runs of one grid point (and variant): per-seed tables on shared generations."""

    point: str
    values: dict                 # swept key -> value
    variant: str | None
    runs: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    gens: np.ndarray = None
    table: np.ndarray = None     # (seeds, G, M)

    @property
    def label(self) -> str:
        """point, or point/variant."""
        return self.point if self.variant is None else f"{self.point}/{self.variant}"


def _parse(text: str):
    """A swept value back from its text in sweep.csv."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def groups(sweep: Path) -> list[Group]:
    """Every point (x variant) of a sweep with its complete runs loaded, in index order."""
    sweep = Path(sweep)
    rows = read_index(sweep)
    spec = yaml.safe_load((sweep / "sweep.yaml").read_text()) or {}
    keys = [k for key in (spec.get("grid") or {}) for k in str(key).split(",")]
    out: dict[tuple, Group] = {}
    caches: dict[Path, Path] = {}
    for row in rows:
        run = sweep / row["run_dir"]
        variants = sorted(p.name for p in run.iterdir() if (p / "status.json").exists()) \
            if run.is_dir() and not (run / "metrics.csv").exists() else []
        for variant in variants or [None]:
            g = out.setdefault((row["point"], variant), Group(row["point"], {k: _parse(row[k]) for k in keys},
                                                              variant))
            if row["status"] == "complete":
                g.runs.append(run if variant is None else run / variant)
                g.seeds.append(int(row["seed"]))
                caches[g.runs[-1]] = summary_path(sweep, row["run_dir"], variant)
    for g in out.values():
        tables = [summary(r, caches[r]) for r in g.runs]
        if not tables:
            g.gens, g.table = np.zeros(0), np.zeros((0, 0, 0))
            continue
        g.names = tables[0][0]
        g.gens = np.unique(np.concatenate([t[1] for t in tables]))
        g.table = np.full((len(tables), len(g.gens), len(g.names)), np.nan)
        for i, (names, gens, vals) in enumerate(tables):
            cols = [names.index(n) if n in names else None for n in g.names]
            at = np.searchsorted(g.gens, gens)
            for j, c in enumerate(cols):
                if c is not None:
                    g.table[i, at, j] = vals[:, c]
    return list(out.values())


def _prefix(fields: list) -> str:
    """The leading fields of a stats.csv row, quoted as csv quotes them."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def write_stats(sweep: Path, found: list[Group] | None = None) -> Path:
    """SWEEP/stats.csv: point, swept values, [variant], metric, generation, n, mean (CI), median (CI)."""
    from .spec import show
    sweep = Path(sweep)
    found = groups(sweep) if found is None else found
    keys = list(found[0].values) if found else []
    with_variant = any(g.variant is not None for g in found)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["point", *keys, *(["variant"] if with_variant else []), "metric", "generation", "n",
                "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi"])
    stats = ("n", "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi")
    for g in found:
        if not g.runs:
            continue
        k, n_gen, n_met = g.table.shape
        res = bootstrap(g.table.reshape(k, n_gen * n_met))
        cols = {s: res[s].reshape(n_gen, n_met) for s in stats}
        head = [g.point, *(show(g.values[key]) for key in keys), *([g.variant or ""] if with_variant else [])]
        for m, name in enumerate(g.names):
            # One %-format per row (numbers never need quoting): "%.10g" % v is f"{v:.10g}".
            line = _prefix([*head, name]).replace("%", "%%") + ",%d,%d" + ",%.10g" * 6 + "\n"
            table = np.column_stack([g.gens, *(cols[s][:, m] for s in stats)]).tolist()
            buf.write("".join(line % tuple(row) for row in table))
    path = sweep / "stats.csv"
    atomic_write(path, buf.getvalue().encode(), durable=False)
    return path
