"""The Python API: what a notebook or script calls; the `collapse` command is a thin layer on top.

    import model_collapse as mc
    run = mc.run("gaussian-replace", out="runs/g", chains=200, regime__n=50)
    run.metrics()            # a pandas DataFrame: generation, chain, one column per metric
    run.plot(); run.report("g.html")
    mc.open_run("runs/g").resume(generations=200)
    sw = mc.sweep("gaussian-n-sweep", out="runs/n", seeds=2)
    sw.stats()

Every function raises the lab's own errors (model_collapse.errors): ConfigError for a config the
user can fix, RunDirError / CorruptRunError for a directory that cannot be used, DiskFullError,
DivergenceError, and Interrupted (a KeyboardInterrupt) naming the directory to resume.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, CorruptRunError, Interrupted, RunDirError

__all__ = ["Run", "Sweep", "open_run", "open_sweep", "run", "sweep"]


def _override_items(overrides, dotted: dict) -> list[tuple[str, Any]]:
    """(dotted key, value) pairs from a dict, a list of "key=value" strings, and keyword arguments
    (`regime__n=50` for `regime.n`)."""
    from .config import parse_overrides
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items += list(overrides.items())
    elif overrides:
        items += parse_overrides(list(overrides))
    items += [(k.replace("__", "."), v) for k, v in dotted.items()]
    return items


def load(recipe, overrides=None, **dotted) -> dict:
    """A raw experiment dict from a recipe name, a YAML path or a dict, with overrides applied."""
    from .config import load_raw, set_dotted
    if isinstance(recipe, dict):
        raw = copy.deepcopy(recipe)
        raw.setdefault("name", "run")
    elif isinstance(recipe, (str, Path)):
        raw = load_raw(recipe)
        raw.setdefault("name", Path(str(recipe)).stem)
    else:
        raise ConfigError(f"a recipe is a name, a path to a YAML file or a dict, not {type(recipe).__name__}")
    for key, value in _override_items(overrides, dotted):
        set_dotted(raw, key, value)
    return raw


def run(recipe, out: str | Path | None = None, overrides=None, *, resume: bool = False, overwrite: bool = False,
        figures: bool = True, progress: bool = False, log=(), mlflow_uri: str | None = None, echo: bool = False,
        **dotted) -> "Run":
    """Run an experiment (a recipe name, a YAML path or a dict) into `out` and return its Run.

    overrides: {"regime.n": 50} or ["regime.n=50"]; keyword arguments too, `__` for a dot
    (`regime__n=50`). resume=True continues (or extends) the run in `out`; overwrite=True replaces it;
    figures=False skips drawing figures; log: trackers ("tensorboard", "mlflow")."""
    from .runner import execute
    raw = load(recipe, overrides, **dotted)
    if out is None:
        out = Path("runs") / f"{raw['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    execute(raw, Path(out), resume=resume, overwrite=overwrite, progress=progress, log=log, mlflow_uri=mlflow_uri,
            figures=figures, echo=echo)
    return Run(out)


def open_run(path: str | Path) -> "Run":
    """The Run stored in a directory made by `run` or `collapse run` (RunDirError if it is none)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; pass a run directory (from `collapse run`)")
    if not (path / "config.yaml").exists():
        if (path / "metrics.csv").exists() or any(path.glob("checkpoint-*.npz")):
            raise CorruptRunError(f"{path / 'config.yaml'} is missing from a run directory; restore it (the "
                                  "recipe resolved with the run's overrides), then run the command again")
        raise RunDirError(f"{path} is not a run directory (no config.yaml); start one with `collapse run`")
    return Run(path)


class Run:
    """A run directory: its config, status, metrics, figures; resumable."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> dict:
        """The resolved config as stored in config.yaml (every default written out)."""
        from .runner import read_config
        return read_config(self.path)

    @property
    def variants(self) -> dict[str, "Run"]:
        """name -> Run of each variant (empty for an experiment without variants)."""
        return {name: Run(self.path / name) for name in (self.config.get("variants") or {})}

    @property
    def status(self) -> str:
        """running | interrupted | failed | complete (an experiment: complete only when every variant is)."""
        runs = list(self.variants.values()) or [self]
        states = [r.status_info.get("status", "pending") for r in runs]
        if all(s == "complete" for s in states):
            return "complete"
        return next((s for s in states if s != "complete"), "pending")

    @property
    def status_info(self) -> dict:
        """The status document: status, last_complete_generation, updated, message."""
        from .store import RunStore
        return RunStore(self.path).status()

    def metrics(self, table: str = "metrics"):
        """Committed rows as a pandas DataFrame (generation, chain, one column per metric; an experiment
        with variants adds a leading `variant` column)."""
        import pandas as pd

        from .store import read_metrics
        frames = []
        for name, r in (self.variants or {None: self}).items():
            cols, rows = read_metrics(r.path, table)
            df = pd.DataFrame(rows, columns=cols)
            for c in ("generation", "chain"):
                if c in df and len(df):
                    df[c] = df[c].astype(int)
            if name is not None:
                df.insert(0, "variant", name)
            frames.append(df)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def plot(self) -> list[Path]:
        """(Re)draw the figures from the store; returns their paths."""
        from .runner import draw_figures
        return draw_figures(self.path)

    @property
    def figures(self) -> list[Path]:
        """The figure files drawn so far (the experiment's and its variants')."""
        return sorted(self.path.glob("figures/*.*")) + sorted(self.path.glob("*/figures/*.*"))

    def report(self, path: str | Path = "report.html", **options) -> Path:
        """Write a self-contained HTML report of this run (options as `collapse report`)."""
        from .report import write_report
        return write_report([self.path], Path(path), **options)

    def resume(self, overrides=None, *, figures: bool = True, progress: bool = False, log=(), echo: bool = False,
               **dotted) -> "Run":
        """Continue the run from its last checkpoint; only `generations` may change (and only grow)."""
        from .config import set_dotted
        from .runner import execute
        raw = self.config
        for key, value in _override_items(overrides, dotted):
            set_dotted(raw, key, value)
        execute(raw, self.path, resume=True, progress=progress, log=log, figures=figures, echo=echo)
        return self


def sweep(recipe, out: str | Path | None = None, grid: dict | list[str] | None = None, seeds: int | None = None,
          overrides=None, *, executor: str = "local", workers: int | None = None, panels: list[str] = (),
          figures: bool = True, run_figures: bool = False, overwrite: bool = False, progress: bool = False,
          **options) -> "Sweep":
    """Run (or resume) a sweep of a recipe or sweep spec over a grid x seeds; returns its Sweep.

    grid: {"regime.n": [10, 20, 50]} (a product over keys) or CLI strings ["regime.n=10,20,50"];
    overrides apply to every run; panels: figures/sweep.png's panels (`var@100`, `var<0.5`); figures=False
    draws no figure (stats.csv is still written); run_figures draws each run's own figures too;
    options go to the executor (address, partition, time, mem, cluster, gpus_per_run).
    Rerunning the same call resumes: complete runs are skipped, interrupted ones resumed, failed ones
    retried once. Failed runs are counted in `.counts` (and sweep.csv); an interrupt raises Interrupted."""
    from .config import parse_overrides
    from .sweeps.driver import run_sweep
    from .sweeps.figures import parse_panel
    from .sweeps.spec import load_spec, make_axis, merge_axes
    strings = list(grid) if isinstance(grid, (list, tuple)) else []
    spec = load_spec(str(recipe), [], strings, seeds, list(panels))
    if isinstance(grid, dict):
        spec.axes = merge_axes(spec.axes, [make_axis(k, v) for k, v in grid.items()])
    items = list(overrides.items()) if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    for key, value in items:
        spec.overrides[key] = value
    for f in spec.figures:
        parse_panel(f)   # a typo is reported before anything runs
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers})")
    unknown = sorted(set(options) - EXECUTOR_OPTIONS)
    if unknown:
        raise ConfigError(f"sweep() got unknown options {', '.join(unknown)}; executor options are "
                          f"{', '.join(sorted(EXECUTOR_OPTIONS))}")
    counts = run_sweep(spec, Path(out) if out else None, executor, {"workers": workers, **options}, overwrite,
                       run_figures, progress=progress, figures=figures)
    if counts["interrupted"]:
        raise Interrupted(f"sweep interrupted; call sweep() again with the same arguments (or rerun "
                          f"`collapse sweep`) to continue it in {counts['out']}")
    result = Sweep(counts["out"])
    result.counts = counts
    return result


# What `sweep(**options)` passes to the executor (ray: address; slurm: partition, time, mem, cluster; both:
# gpus_per_run).
EXECUTOR_OPTIONS = {"address", "partition", "time", "mem", "cluster", "gpus_per_run"}


def open_sweep(path: str | Path) -> "Sweep":
    """The Sweep stored in a directory made by `sweep` or `collapse sweep`."""
    path = Path(path)
    if not (path / "sweep.csv").exists():
        raise RunDirError(f"{path} is not a sweep directory (no sweep.csv); start one with `collapse sweep`")
    return Sweep(path)


class Sweep:
    """A sweep directory: its index, statistics across seeds, runs and figures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.counts: dict = {}

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def index(self):
        """sweep.csv as a pandas DataFrame: one row per grid point x seed (values, seed, status, run dir)."""
        import pandas as pd
        return pd.read_csv(self.path / "sweep.csv")

    def stats(self):
        """stats.csv as a pandas DataFrame: per point and generation, mean / median across seeds with
        bootstrap intervals (computed first if missing)."""
        import pandas as pd
        if not (self.path / "stats.csv").exists():
            from .sweeps.stats import write_stats
            write_stats(self.path)
        return pd.read_csv(self.path / "stats.csv")

    def runs(self) -> list[Run]:
        """The Run of every grid point x seed, in index order."""
        return [Run(self.path / d) for d in self.index()["run_dir"]]

    def plot(self, figures: list[str] = ()) -> list[Path]:
        """Recompute stats.csv and redraw figures/sweep.png (panels as `collapse plot SWEEP --figure`)."""
        from .sweeps.commands import plot_sweep
        return plot_sweep(self.path, list(figures))

    def report(self, path: str | Path = "report.html", **options) -> Path:
        """Write a self-contained HTML report of the sweep."""
        from .report import write_report
        return write_report([self.path], Path(path), **options)
