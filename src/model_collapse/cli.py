"""The `collapse` command line: run, resume, list, plot, demo, report."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
from pathlib import Path

import yaml

from .errors import CollapseError, CollapseWarning, ConfigError, CorruptRunError, DivergenceError, RunDirError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _runs(exp_raw: dict, out: Path):
    """(variant name or None, raw config, run dir) for every run an experiment holds."""
    from .config import variant_raw
    names = list((exp_raw.get("variants") or {}).keys())
    if not names:
        return [(None, exp_raw, out)]
    return [(n, variant_raw(exp_raw, n), out / n) for n in names]


def _flat(tree, prefix: str = "") -> dict[str, object]:
    """{dotted key: leaf value} of a config tree (lists are leaves)."""
    if not isinstance(tree, dict) or (prefix and not tree):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _show(value) -> str:
    """A config value as it would read in YAML flow style."""
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


_ABSENT = object()


def _differences(stored: dict, new: dict, label: str = "") -> list[str]:
    """`key: stored -> new` for every differing dotted key; `generations` (any level) may only grow."""
    a, b = _flat(stored), _flat(new)
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        old, cur = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if old == cur:
            continue
        if key.split(".")[-1] == "generations" and isinstance(old, int) and isinstance(cur, int) and cur > old:
            continue  # a run may be extended
        note = " (generations may grow, not shrink)" if key.split(".")[-1] == "generations" else ""
        out.append(f"{label}{key}: {_show(old)} -> {_show(cur)}{note}")
    return out


def _stored_tree(path: Path) -> dict:
    """A stored config.yaml resolved through today's schema (its raw text when that no longer validates)."""
    from .config import dump, validate
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return yaml.safe_load(dump(validate(raw)))
    except (ConfigError, TypeError):
        return raw


def _check_unchanged(out: Path, top_text: str, runs: list) -> None:
    """Refuse (listing `key: stored -> new`) to resume with a config other than the stored one."""
    diffs = []
    if (out / "config.yaml").exists():
        diffs = _differences(_stored_tree(out / "config.yaml"), yaml.safe_load(top_text))
    if not diffs:  # also catch a variant directory that disagrees with its experiment
        for name, text, vdir in runs:
            if name is not None and (vdir / "config.yaml").exists():
                diffs += _differences(_stored_tree(vdir / "config.yaml"), yaml.safe_load(text), f"{name}: ")
    if diffs:
        raise RunDirError(f"{out} holds a different experiment; only `generations` may change on resume "
                          "(and only grow):\n  " + "\n  ".join(diffs) +
                          "\nrun the changed experiment into a new --out (or replace this one with --overwrite)")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Make (or empty, with overwrite) the run directory; one clear error, nothing half-made, if it can't be."""
    import shutil
    import tempfile
    made = []
    try:
        if out.exists() and not out.is_dir():
            raise NotADirectoryError("it exists and is not a directory")
        if overwrite and out.exists():
            shutil.rmtree(out)
        missing = [d for d in [out, *out.parents] if not d.exists()]
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)  # writable for this user, root included
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        reason = e.strerror or str(e)
        if e.filename and Path(e.filename) != out:
            reason += f" ({e.filename})"
        raise RunDirError(f"cannot write run directory {out}: {reason}") from None


def _record_stop(store, e: BaseException) -> None:
    """Mark a run that stopped before the loop could record why (e.g. while building its model)."""
    if isinstance(e, CorruptRunError):
        return  # its promise is that nothing in the run directory changed
    try:
        doc = store.status()
        if doc.get("status") != "running":
            return  # the loop recorded it (failed / interrupted, with its message)
        kind = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        message = kind if kind == "interrupted" else (f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        store.set_status(kind, doc.get("last_complete_generation", -1), message=message)
    except Exception:  # noqa: BLE001 - never hide the original error behind a bookkeeping one
        pass


def _execute(raw: dict, out: Path, overwrite: bool, resume: bool, progress, log=(), mlflow_uri=None) -> None:
    """Validate, then run every variant of an experiment into out (resuming where asked); `log` names
    trackers (logging_sinks.py) that get each committed generation."""
    from .config import dump, validate
    from .logging_sinks import attach, check_available
    from .loop import run_generations
    from .store import RunStore, atomic_write
    top = validate(raw)  # every error at once, before anything is written
    check_available(log)
    top_text = dump(top)
    if out.is_dir() and any(out.iterdir()) and not (resume or overwrite):
        raise RunDirError(f"run directory {out} already exists; pass --resume to continue it "
                          "or --overwrite to replace it")
    runs = []
    for name, vraw, vdir in _runs(raw, out):
        exp = validate(vraw)
        runs.append((name, dump(exp), vdir, exp))
    # Every check that can refuse comes before the first write, so a refusal changes nothing.
    plan = []  # (exp, config text, run dir, "new" | "resume" | "skip")
    if resume and not overwrite and out.is_dir():
        _check_unchanged(out, top_text, [(n, t, d) for n, t, d, _ in runs])
    for name, text, vdir, exp in runs:
        action = "new"
        if resume and not overwrite and (vdir / "config.yaml").exists():
            store = RunStore(vdir)
            stored_gens = (yaml.safe_load((vdir / "config.yaml").read_text()) or {}).get("generations")
            grown = isinstance(stored_gens, int) and exp.generations > stored_gens
            if store.status().get("status") == "complete" and not grown:
                action = "skip"
            else:
                store.check_resumable()  # CorruptRunError (exit 1) before anything is altered
                action = "resume"
        plan.append((exp, text, vdir, action))
    _prepare_out(out, overwrite)
    if not (out / "config.yaml").exists() or (out / "config.yaml").read_text() != top_text:
        atomic_write(out / "config.yaml", top_text.encode())
    # The objects made so far (modules, configs: ~40,000) live to the end: keep the cyclic collector
    # from re-scanning them during the loop (~2 us a generation of W1's 120).
    gc.freeze()
    for exp, text, vdir, action in plan:
        if action == "skip":
            with attach(RunStore(vdir), log, out, mlflow_uri):
                pass   # a finished run: its trackers only catch up on what they have not logged
            continue
        if action == "resume":
            store = RunStore(vdir)
            if (vdir / "config.yaml").read_text() != text:  # a grown `generations` (the only change allowed)
                atomic_write(vdir / "config.yaml", text.encode())
        else:
            store = RunStore.create(vdir, text, overwrite=True)
        t0 = time.perf_counter()
        try:
            with attach(store, log, out, mlflow_uri):
                run_generations(exp, store, progress=progress)
        except (Exception, KeyboardInterrupt) as e:
            _record_stop(store, e)
            raise
        print(f"{exp.name or 'run'}: {exp.generations} generations x {exp.chains} chains "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    from .plots import plot_run
    plot_run(out)


def cmd_run(args) -> int:
    """collapse run CONFIG [key=value ...]"""
    from .config import load_raw
    raw = load_raw(args.config, args.overrides)
    name = raw.get("name") or Path(args.config).stem
    raw.setdefault("name", name)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _execute(raw, out, args.overwrite, args.resume, None if not args.quiet else False, args.log, args.mlflow_uri)
    print(out)
    return 0


def cmd_resume(args) -> int:
    """collapse resume RUN_DIR [key=value ...]"""
    from .config import parse_overrides, set_dotted
    out = Path(args.run_dir)
    cfg = out / "config.yaml"
    if not cfg.exists():
        raise RunDirError(f"{out} is not a run directory (no config.yaml); start one with `collapse run`")
    raw = yaml.safe_load(cfg.read_text())
    for key, value in parse_overrides(args.overrides):
        set_dotted(raw, key, value)
    _execute(raw, out, overwrite=False, resume=True, progress=None if not args.quiet else False, log=args.log,
             mlflow_uri=args.mlflow_uri)
    print(out)
    return 0


def cmd_list(args) -> int:
    """List the recipes in configs/ with their one-line descriptions."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{path.stem:32s} {desc.splitlines()[0] if desc else ''}")
    return 0


def cmd_plot(args) -> int:
    """Redraw a run's figures from its store (a sweep's: stats.csv and figures/sweep.png)."""
    from .plots import plot_run
    if (Path(args.run_dir) / "sweep.csv").exists():
        from .sweep.commands import plot_sweep
        for p in plot_sweep(Path(args.run_dir), args.figure):
            print(p)
        return 0
    for p in plot_run(Path(args.run_dir)):
        print(p)
    return 0


def cmd_demo(args) -> int:
    """Run the demo recipes and write a report."""
    from .report import demo
    md = demo(Path(args.out), quick=args.quick)
    print(md)
    print(md.with_name("report.html"))
    return 0


def cmd_report(args) -> int:
    """collapse report RUN|SWEEP ... -o report.html"""
    from .html import write_report
    for p in args.paths:
        if not Path(p).is_dir():
            raise RunDirError(f"{p} is not a directory; pass run directories (from `collapse run`) or sweeps")
    print(write_report([Path(p) for p in args.paths], Path(args.out), title=args.title, max_runs=args.max_runs,
                       all_seeds=args.all_seeds, plot=args.plot))
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
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment from a YAML config (or a recipe name)")
    r.add_argument("config")
    r.add_argument("overrides", nargs="*", help="dotted overrides, e.g. chains=2000 regime.n=100")
    r.add_argument("--out", help="run directory (default: a new folder under runs/)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run directory")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _log_options(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("resume", help="continue a run from its last complete generation")
    s.add_argument("run_dir")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generations=200")
    s.add_argument("--quiet", action="store_true")
    _log_options(s)
    s.set_defaults(fn=cmd_resume)
    sub.add_parser("list", help="list recipes").set_defaults(fn=cmd_list)
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
    from .sweep.commands import add_commands
    add_commands(sub)   # sweep, compare
    return p


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """`warning: ...` for the lab's own warnings (no source line); Python's format for the rest."""
    if issubclass(category, CollapseWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear message (exit 2 for bad input, 1 for a failed or damaged run)."""
    args = parser().parse_args(argv)
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (DivergenceError, CorruptRunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with `collapse resume RUN_DIR`", file=sys.stderr)
        return 130
    except CollapseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
