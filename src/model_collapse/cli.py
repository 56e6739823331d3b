"""The `collapse` command line: run, resume, list, plot, demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from .errors import CollapseError, ConfigError, DivergenceError, RunDirError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _runs(exp_raw: dict, out: Path):
    """(variant name or None, raw config, run dir) for every run an experiment holds."""
    from .config import variant_raw
    names = list((exp_raw.get("variants") or {}).keys())
    if not names:
        return [(None, exp_raw, out)]
    return [(n, variant_raw(exp_raw, n), out / n) for n in names]


def _execute(raw: dict, out: Path, overwrite: bool, resume: bool, progress) -> None:
    """Validate, then run every variant of an experiment into out (resuming where asked)."""
    from .config import dump, validate
    from .loop import run_generations
    from .store import RunStore, atomic_write
    top = validate(raw)  # every error at once, before anything is written
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise RunDirError(f"run directory {out} already exists; pass --resume to continue it "
                          "or --overwrite to replace it")
    if overwrite and out.exists():
        import shutil
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", dump(top).encode())
    for name, vraw, vdir in _runs(raw, out):
        exp = validate(vraw)
        if (vdir / "config.yaml").exists() and resume:
            store = RunStore(vdir)
            if store.status().get("status") == "complete":
                continue
        else:
            store = RunStore.create(vdir, dump(exp), overwrite=True)
        t0 = time.perf_counter()
        run_generations(exp, store, progress=progress)
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
    _execute(raw, out, args.overwrite, args.resume, None if not args.quiet else False)
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
    _execute(raw, out, overwrite=False, resume=True, progress=None if not args.quiet else False)
    print(out)
    return 0


def cmd_list(args) -> int:
    """List the recipes in configs/ with their one-line descriptions."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{path.stem:32s} {desc.splitlines()[0] if desc else ''}")
    return 0


def cmd_plot(args) -> int:
    """Redraw a run's figures from its store."""
    from .plots import plot_run
    for p in plot_run(Path(args.run_dir)):
        print(p)
    return 0


def cmd_demo(args) -> int:
    """Run the demo recipes and write a report."""
    from .report import demo
    print(demo(Path(args.out), quick=args.quick))
    return 0


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
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("resume", help="continue a run from its last complete generation")
    s.add_argument("run_dir")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generations=200")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_resume)
    sub.add_parser("list", help="list recipes").set_defaults(fn=cmd_list)
    pl = sub.add_parser("plot", help="redraw a run's figures")
    pl.add_argument("run_dir")
    pl.set_defaults(fn=cmd_plot)
    d = sub.add_parser("demo", help="run the demo recipes and write a report")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="smaller settings (for tests)")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear message (exit 2 for bad input)."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with `collapse resume RUN_DIR`", file=sys.stderr)
        return 130
    except CollapseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
