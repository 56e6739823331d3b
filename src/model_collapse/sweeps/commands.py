"""The `collapse sweep` and `collapse compare` subcommands (and `collapse plot SWEEP_DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .executors import EXECUTORS


def add_commands(sub) -> None:
    """Add `sweep` and `compare` to the CLI's subparsers."""
    s = sub.add_parser("sweep", help="run an experiment over a grid of overrides x seeds (resumable)",
                       description="Run RECIPE for every grid point x seed into SWEEP/<point>/seed-<s>/ "
                                   "(each a `collapse run` store), index them in SWEEP/sweep.csv and write "
                                   "stats.csv and figures/sweep.png. Rerunning the same command resumes.")
    s.add_argument("recipe", help="a recipe (configs/NAME.yaml or a path) or a sweep spec "
                                  "(configs/sweeps/NAME.yaml: recipe, overrides, grid, seeds, figures)")
    s.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. chains=100")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a swept key and its values (repeat for a product); keys that move together: "
                        "k1,k2=[a1,a2],[b1,b2]")
    s.add_argument("--seeds", type=int, help="seeds per point: s0..s0+K-1 from the recipe's seed (default 1)")
    s.add_argument("--executor", default="local", choices=list(EXECUTORS),
                   help="local: worker processes on this machine (default); ray: Ray tasks; slurm: submitit jobs")
    s.add_argument("--out", help="sweep directory (default runs/<name>-sweep)")
    s.add_argument("--workers", type=int, help="runs at a time (default: the usable cores)")
    s.add_argument("--address", help="ray: an existing cluster's address (default: start a local one)")
    s.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="ray: num_gpus of each run's task (fractions share a GPU); slurm: --gpus-per-task (whole "
                        "GPUs). Each run then trains on its GPU with model.device: auto")
    s.add_argument("--partition", help="slurm: partition")
    s.add_argument("--time", help="slurm: time limit per run (minutes, HH:MM:SS or D-HH:MM)")
    s.add_argument("--mem", help="slurm: memory per run (e.g. 4G)")
    s.add_argument("--slurm-cluster", choices=["slurm", "local"], default=None,
                   help="slurm: `local` runs the submitit path on this machine (no Slurm needed)")
    s.add_argument("--figure", action="append", default=[], metavar="PANEL",
                   help="a panel of figures/sweep.png: metric, metric@GEN (var@100) or metric<X (collapse "
                        "time); default every metric at the last generation")
    s.add_argument("--run-figures", action="store_true", help="also draw each run's own figures")
    s.add_argument("--no-figures", action="store_true",
                   help="draw no figure (neither figures/sweep.png nor the runs'); stats.csv is still written")
    s.add_argument("--overwrite", action="store_true", help="delete the sweep directory and start again")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    s.set_defaults(fn=cmd_sweep)
    c = sub.add_parser("compare", help="overlay metric curves of runs and sweep points on shared axes")
    c.add_argument("paths", nargs="+", help="run directories, experiments with variants, sweep directories")
    c.add_argument("--metric", action="append", default=[], help="a metric to draw (repeat); default all")
    c.add_argument("-o", "--out", default="compare.png", help="the PNG to write (default compare.png)")
    c.set_defaults(fn=cmd_compare)


def cmd_sweep(args: argparse.Namespace) -> int:
    """collapse sweep RECIPE|SPEC [key=value ...] --grid ... --seeds K"""
    from .driver import report, run_sweep
    from .figures import parse_panel
    from .spec import load_spec
    spec = load_spec(args.recipe, args.overrides, args.grid, args.seeds, args.figure)
    for f in spec.figures:
        parse_panel(f)   # a typo is reported before anything runs
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {args.workers})")
    options = {"workers": args.workers, "address": args.address, "partition": args.partition,
               "time": args.time, "mem": args.mem, "cluster": args.slurm_cluster, "gpus_per_run": args.gpus_per_run}
    if args.no_figures and args.run_figures:
        raise ConfigError("--no-figures and --run-figures contradict each other: choose one")
    counts = run_sweep(spec, Path(args.out) if args.out else None, args.executor, options, args.overwrite,
                       args.run_figures, progress=False if args.quiet else None, figures=not args.no_figures)
    return report(counts)


def cmd_compare(args: argparse.Namespace) -> int:
    """collapse compare RUN|SWEEP ... [--metric m] -o compare.png"""
    from ..report import check_target
    from .figures import compare
    check_target(Path(args.out))
    print(compare([Path(p) for p in args.paths], Path(args.out), args.metric))
    return 0


def plot_sweep(sweep: Path, figures: list[str] = ()) -> list[Path]:
    """`collapse plot SWEEP`: recompute stats.csv and redraw figures/sweep.png (panels from the sweep's
    spec unless given)."""
    import yaml

    from .figures import sweep_figure
    from .stats import write_stats
    spec = yaml.safe_load((Path(sweep) / "sweep.yaml").read_text()) or {}
    written = [write_stats(sweep)]
    fig = sweep_figure(sweep, list(figures) or spec.get("figures") or [])
    return written + ([fig] if fig else [])
