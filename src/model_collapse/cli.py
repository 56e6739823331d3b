"""The `collapse` command line: run, resume, list, plot, demo, report."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import yaml

from .errors import (CollapseError, CollapseWarning, CorruptRunError, DiskFullError, DivergenceError, Interrupted,
                     RunDirError, disk_full)



def cmd_run(args) -> int:
    """collapse run CONFIG [key=value ...]"""
    from .api import run
    result = run(args.config, args.out, list(args.overrides), resume=args.resume, overwrite=args.overwrite,
                 figures=not args.no_figures, progress=None if not args.quiet else False, log=args.log,
                 mlflow_uri=args.mlflow_uri, echo=True)
    print(result.path)
    return 0


def cmd_resume(args) -> int:
    """collapse resume RUN_DIR [key=value ...]"""
    from .api import open_run
    result = open_run(args.run_dir).resume(list(args.overrides), figures=not args.no_figures,
                                           progress=None if not args.quiet else False, log=args.log, echo=True)
    print(result.path)
    return 0


def version() -> str:
    """The installed distribution's version (the package's own where it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("model-collapse")
    except PackageNotFoundError:
        from . import __version__
        return __version__


def cmd_list(args) -> int:
    """List the recipes in configs/ with their one-line descriptions."""
    from .paths import recipes
    for kind, title in (("run", "recipes (collapse run NAME)"), ("sweep", "sweep specs (collapse sweep NAME)")):
        print(f"{title}:")
        for path in recipes(kind):
            desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
            print(f"  {path.stem:32s} {desc.splitlines()[0] if desc else ''}")
    return 0


def cmd_plot(args) -> int:
    """Redraw a run's figures from its store (a sweep's: stats.csv and figures/sweep.png)."""
    from .api import open_run, open_sweep
    path = Path(args.run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; pass a run or sweep directory")
    target = open_sweep(path).plot(args.figure) if (path / "sweep.csv").exists() else open_run(path).plot()
    for p in target:
        print(p)
    return 0


def cmd_demo(args) -> int:
    """Run the demo recipes and write a report."""
    from .demo import demo
    md = demo(Path(args.out), quick=args.quick)
    print(md)
    print(md.with_name("report.html"))
    return 0


def cmd_report(args) -> int:
    """collapse report RUN|SWEEP ... -o report.html"""
    from .report import check_target, write_report
    for p in args.paths:
        if not Path(p).is_dir():
            raise RunDirError(f"{p} is not a directory; pass run directories (from `collapse run`) or sweeps")
    check_target(Path(args.out))
    print(write_report([Path(p) for p in args.paths], Path(args.out), title=args.title, max_runs=args.max_runs,
                       all_seeds=args.all_seeds, plot=args.plot))
    return 0


def cmd_explain(args) -> int:
    """collapse explain [KIND]: a component's fields with type, default and description."""
    from .explain import explain
    print(explain(args.kind))
    return 0


def _log_options(p) -> None:
    """--log and --mlflow-uri (run and resume)."""
    p.add_argument("--log", action="append", default=[], choices=["tensorboard", "mlflow"],
                   help="also log every committed generation to a tracker (repeatable): tensorboard "
                        "(RUN/tensorboard) or mlflow (a SQLite store OUT/mlflow.db unless --mlflow-uri)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI for --log mlflow (default sqlite:///OUT/mlflow.db)")


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(prog="collapse", description="Model-collapse laboratory.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("--version", action="version", version=f"collapse (model-collapse) {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment from a YAML config (or a recipe name)")
    r.add_argument("config")
    r.add_argument("overrides", nargs="*", help="dotted overrides, e.g. chains=2000 regime.n=100")
    r.add_argument("--out", help="run directory (default: a new folder under runs/)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run directory")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--no-figures", action="store_true", help="do not draw figures (redraw later with `collapse plot`)")
    _log_options(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("resume", help="continue a run from its last complete generation")
    s.add_argument("run_dir")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generations=200")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--no-figures", action="store_true", help="do not draw figures")
    _log_options(s)
    s.set_defaults(fn=cmd_resume)
    sub.add_parser("list", help="list recipes").set_defaults(fn=cmd_list)
    ex = sub.add_parser("explain", help="a component's fields: type, default, description")
    ex.add_argument("kind", nargs="?", help="a family, source, regime, filter or metric (e.g. transformer, "
                                            "source:gaussian); none: list them all")
    ex.set_defaults(fn=cmd_explain)
    pl = sub.add_parser("plot", help="redraw a run's figures")
    pl.add_argument("run_dir")
    pl.add_argument("--figure", action="append", default=[], metavar="PANEL",
                    help="sweep directories: a panel of figures/sweep.png, e.g. var@100 or var<0.5")
    pl.set_defaults(fn=cmd_plot)
    d = sub.add_parser("demo", help="run the demo recipes and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="smaller settings (for tests)")
    d.set_defaults(fn=cmd_demo)
    rp = sub.add_parser("report", help="write one self-contained HTML report of runs, experiments or sweeps")
    rp.add_argument("paths", nargs="+", metavar="RUN|SWEEP", help="run directories or directories holding them")
    rp.add_argument("-o", "--out", default="report.html", help="the HTML file to write (default report.html)")
    rp.add_argument("--title", default="model-collapse report")
    rp.add_argument("--max-runs", type=int, default=100, help="runs shown in full; later ones are only listed")
    rp.add_argument("--all-seeds", action="store_true",
                    help="show every seed-<s> run of a sweep in full (default: each point's first seed)")
    rp.add_argument("--plot", action="store_true",
                    help="first draw the figures of runs that have none (a sweep's runs, by default)")
    rp.set_defaults(fn=cmd_report)
    from .sweeps.commands import add_commands
    add_commands(sub)   # sweep, compare
    return p


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """`warning: ...` for the lab's own warnings (no source line); Python's format for the rest."""
    if issubclass(category, CollapseWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


# Commands that may run long: Ctrl-C, `kill -INT` and `kill -TERM` must always stop them cleanly.
LONG = {"run", "resume", "sweep", "demo", "report"}
OVERRIDE = re.compile(r"^[A-Za-z_][\w.-]*=")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; dotted overrides may also follow options (`run X --out D chains=4`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv   # accepted anywhere on the line
    p = parser()
    args, extra = p.parse_known_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if extra and hasattr(args, "overrides") and all(OVERRIDE.match(x) for x in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _raise_interrupt(signum, frame):
    """SIGTERM stops a command as Ctrl-C does (the loop turns either into a checkpoint and exit 130)."""
    raise KeyboardInterrupt


def arm_signals() -> None:
    """Re-arm SIGINT (a shell starts background jobs with it ignored) and make SIGTERM interrupt."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:   # not the main thread (main() called from a thread): leave signals alone
        pass


def _fail(message: str, code: int) -> int:
    """Print one `error:` line (the message may hold an indented list) and return the exit status."""
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point; every fault prints one clear message: exit 2 for what the user can fix in the command,
    1 for a failed or damaged run (or a full disk), 130 when interrupted; --debug shows tracebacks."""
    args = _parse(argv)
    if args.command in LONG:
        arm_signals()
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.fn(args)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        text = str(e) if isinstance(e, Interrupted) else "interrupted"
        print(text, file=sys.stderr)
        return 130
    except CollapseError as e:
        if args.debug:
            raise
        damaged = isinstance(e, (DivergenceError, CorruptRunError, DiskFullError))
        return _fail(str(e), 1 if damaged else 2)   # ConfigError and the other user errors: 2
    except BrokenPipeError:   # `collapse list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MemoryError:
        if args.debug:
            raise
        return _fail("out of memory; use fewer chains or smaller sizes (regime.n, reference_n)", 1)
    except OSError as e:
        if args.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        hint = "; free some space and run the command again" if disk_full(e) else ""
        return _fail(f"{e.strerror or e}{where}{hint}", 1)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback, unless --debug
        if args.debug:
            raise
        return _fail(f"unexpected {type(e).__name__}: {e} (run again with --debug for the traceback, "
                     "and please report it)", 1)
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
