"""Start, resume or extend one experiment in its run directory: the one runner.

`collapse run`, `collapse resume`, the Python API (`model_collapse.run`), the demo and every sweep
worker call `execute`. Order matters, and is the promise that a refusal changes nothing:

1. validate the config and every variant (all errors at once);
2. make the directory (only what is missing) and take its lock (one writer per run, released by
   the kernel if the process dies);
3. with the lock held, decide per variant: new, resume or skip (a resumed config must match the
   stored one; damaged checkpoints are refused before anything is altered);
4. write config.yaml, run the loop per variant, draw figures.

A run that never committed a generation, stopped by an error the user can fix (a config that
fails against its data, a full disk), leaves nothing behind: the directories it made are removed.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from .errors import (CollapseError, ConfigError, CorruptRunError, DiskFullError, Interrupted, RunDirError,
                     disk_full)
from .locks import LOCK_NAME, run_lock

_ABSENT = object()


def run_dirs(exp_raw: dict, out: Path) -> list[tuple[str | None, dict, Path]]:
    """(variant name or None, raw config, run dir) for every run an experiment holds."""
    from .config import variant_raw
    names = list((exp_raw.get("variants") or {}).keys())
    if not names:
        return [(None, exp_raw, out)]
    return [(n, variant_raw(exp_raw, n), out / n) for n in names]


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


def differences(stored: dict, new: dict, label: str = "") -> list[str]:
    """`key: stored -> new` for every differing dotted key; `generations` (any level) may only grow."""
    from .config import flat
    a, b = flat(stored), flat(new)
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


def read_config(run: Path) -> dict:
    """A run directory's stored config.yaml as a dict; one clear error when it is missing or damaged."""
    path = Path(run) / "config.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunDirError(f"{run} is not a run directory (no config.yaml); start one with `collapse run`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{path} cannot be read ({getattr(e, 'strerror', None) or e}); restore it "
                              "from a copy of the recipe (`collapse run RECIPE --out DIR`)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise CorruptRunError(f"{path} is not valid YAML{line}; repair or restore it, then run the "
                              "command again") from None
    if not isinstance(raw, dict):
        raise CorruptRunError(f"{path} does not hold a config (a mapping of keys); repair or restore it")
    return raw


def _stored_tree(run: Path) -> dict:
    """A stored config resolved through today's schema (its raw text when that no longer validates)."""
    from .config import dump, validate
    raw = read_config(run)
    try:
        return yaml.safe_load(dump(validate(raw)))
    except (ConfigError, TypeError):
        return raw


def _check_unchanged(out: Path, top_text: str, runs: list) -> None:
    """Refuse (listing `key: stored -> new`) to resume with a config other than the stored one."""
    diffs = []
    if (out / "config.yaml").exists():
        diffs = differences(_stored_tree(out), yaml.safe_load(top_text))
    if not diffs:  # also catch a variant directory that disagrees with its experiment
        for name, text, vdir in runs:
            if name is not None and (vdir / "config.yaml").exists():
                diffs += differences(_stored_tree(vdir), yaml.safe_load(text), f"{name}: ")
    if diffs:
        raise RunDirError(f"{out} holds a different experiment; only `generations` may change on resume "
                          "(and only grow): run the changed experiment into a new --out (or replace this one "
                          "with --overwrite). Changed:\n  " + "\n  ".join(diffs))


def holds_run(out: Path) -> bool:
    """Whether a directory holds anything but its lock file."""
    return out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())


def _make_dirs(out: Path) -> list[Path]:
    """Make out and its missing parents; returns what was made (deepest last); one clear error if it can't."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"cannot write run directory {out}: it exists and is not a directory")
    made = []
    try:
        for d in reversed([d for d in [out, *out.parents] if not d.exists()]):
            try:
                d.mkdir()
            except FileExistsError:   # another process (a sweep's other worker) made it just now: not ours
                continue
            made.append(d)
    except OSError as e:
        _remove(made)
        raise _unwritable(out, e) from None
    return made


def _unwritable(out: Path, e: OSError) -> CollapseError:
    """The one error for a run directory that cannot be written."""
    reason = e.strerror or str(e)
    if e.filename and Path(e.filename) != out:
        reason += f" ({e.filename})"
    cls = DiskFullError if disk_full(e) else RunDirError
    return cls(f"cannot write run directory {out}: {reason}" +
               ("; free some space and run the command again" if cls is DiskFullError else ""))


def _remove(made: list[Path]) -> None:
    """Remove what this command made: the run directory (deepest, last in `made`) with its contents,
    then each parent it made only while empty (another run, a sweep's sibling seed, may live there)."""
    if not made:
        return
    shutil.rmtree(made[-1], ignore_errors=True)
    for d in reversed(made[:-1]):
        try:
            d.rmdir()
        except OSError:
            break   # not empty: someone else's, from here up


def _probe(out: Path) -> None:
    """Check that out takes a new file (for this user, root included) before anything is decided."""
    import tempfile
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(out, e) from None


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


def _plan(raw: dict, out: Path, resume: bool, overwrite: bool) -> list:
    """(exp, config text, run dir, "new" | "resume" | "skip") per variant; raises before anything changes."""
    from .config import dump, validate
    from .store import RunStore
    runs = []
    for name, vraw, vdir in run_dirs(raw, out):
        exp = validate(vraw)
        runs.append((name, dump(exp), vdir, exp))
    plan = []
    for name, text, vdir, exp in runs:
        action = "new"
        if resume and not overwrite and (vdir / "config.yaml").exists():
            store = RunStore(vdir)
            stored_gens = read_config(vdir).get("generations")
            grown = isinstance(stored_gens, int) and exp.generations > stored_gens
            store.check_resumable()  # CorruptRunError (exit 1) before anything is altered
            if store.status().get("status") == "complete" and not grown:
                action = "skip"
            else:
                action = "resume"
        plan.append((exp, text, vdir, action))
    return plan


def execute(raw: dict, out: Path, *, resume: bool = False, overwrite: bool = False, progress: bool | None = None,
            log=(), mlflow_uri: str | None = None, figures: bool = True, echo: bool = True) -> Path:
    """Validate, then run every variant of an experiment into out (resuming where asked); returns out.

    `log` names trackers (logging_sinks.py) that get each committed generation; `figures` draws the
    run's figures at the end; `echo` prints a line per finished variant on stderr. Raises
    ConfigError / RunDirError / CorruptRunError / DiskFullError / DivergenceError, or Interrupted
    (a KeyboardInterrupt) naming the directory to resume."""
    from .config import dump, validate
    from .logging_sinks import check_available
    out = Path(out)
    log = [log] if isinstance(log, str) else list(log or ())
    top = validate(raw)  # every error at once, before anything is written
    check_available(log)
    top_text = dump(top)
    if holds_run(out) and not (resume or overwrite):
        raise RunDirError(f"run directory {out} already exists; pass --resume to continue it "
                          "or --overwrite to replace it")
    made = _make_dirs(out)
    fresh = bool(made) or not holds_run(out)   # nothing of an earlier run is here: roll back on a refusal
    try:
        _probe(out)
    except CollapseError:
        _remove(made)
        raise
    try:
        with run_lock(out):
            if overwrite:
                from .store import clear_dir
                clear_dir(out)
            elif resume and holds_run(out):
                _check_unchanged(out, top_text, [(n, dump(validate(r)), d) for n, r, d in run_dirs(raw, out)])
            plan = _plan(raw, out, resume, overwrite)
            from .store import atomic_write
            if not (out / "config.yaml").exists() or (out / "config.yaml").read_text() != top_text:
                atomic_write(out / "config.yaml", top_text.encode())
            # The objects made so far (modules, configs: ~40,000) live to the end of the run: keep the
            # cyclic collector from re-scanning them during the loop (~2 us a generation of W1's 120);
            # unfrozen after, so a notebook calling run() again and again does not keep them forever.
            frozen = gc.get_freeze_count() > 0
            gc.freeze()
            try:
                for exp, text, vdir, action in plan:
                    _run_one(exp, text, vdir, action, out, progress, log, mlflow_uri, echo)
            finally:
                if not frozen:
                    gc.unfreeze()
            if figures:
                draw_figures(out)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue with `collapse resume {out}`") from None
    except (CollapseError, OSError) as e:
        kept = not fresh or any(out.rglob("checkpoint-*.npz"))
        from .datasets.errors import DataError
        refused = isinstance(e, (ConfigError, DataError, DiskFullError)) or (isinstance(e, OSError) and disk_full(e))
        if not kept and refused:   # a start refused by its data, or by a full disk, leaves nothing behind
            _remove(made) if made else _clear(out)
        if isinstance(e, OSError) and disk_full(e):
            raise _disk_error(out, e, kept) from None
        raise
    return out


def _clear(out: Path) -> None:
    """Empty a directory that held nothing of ours before this command (its lock file included)."""
    from .store import clear_dir
    try:
        clear_dir(out)
        (out / LOCK_NAME).unlink(missing_ok=True)
    except OSError:
        pass


def _disk_error(out: Path, e: OSError, committed: bool) -> DiskFullError:
    """The one line for a full disk: what filled, where the run stands, what to do."""
    from .store import RunStore
    where = f" while writing {e.filename}" if e.filename else ""
    if not committed:
        return DiskFullError(f"{e.strerror or e}{where}: nothing was kept; free some space and run the "
                             "command again")
    from .store import checkpoint_paths
    newest = checkpoint_paths(out)   # the file itself: status.json may be the write that failed
    last = int(newest[0].stem.split("-")[1]) if newest else RunStore(out).status().get("last_complete_generation")
    at = f" (last checkpoint: generation {last})" if isinstance(last, int) and last >= 0 else ""
    return DiskFullError(f"{e.strerror or e}{where}: the run stopped{at} and its last checkpoint is intact; "
                         f"free some space, then `collapse resume {out}`")


def _run_one(exp, text: str, vdir: Path, action: str, top: Path, progress, log, mlflow_uri, echo: bool) -> None:
    """Run (or skip) one variant."""
    from .logging_sinks import attach
    from .loop import run_generations
    from .store import RunStore, atomic_write
    if action == "skip":
        with attach(RunStore(vdir), log, top, mlflow_uri):
            pass   # a finished run: its trackers only catch up on what they have not logged
        return
    if vdir != top:
        vdir.mkdir(exist_ok=True)
    lock = run_lock(vdir) if vdir != top else _nothing()
    with lock:
        if action == "resume":
            store = RunStore(vdir)
            if (vdir / "config.yaml").read_text() != text:  # a grown `generations` (the only change allowed)
                atomic_write(vdir / "config.yaml", text.encode())
        else:
            store = RunStore.create(vdir, text, overwrite=True)
        t0 = time.perf_counter()
        try:
            with attach(store, log, top, mlflow_uri):
                run_generations(exp, store, progress=progress)
        except (Exception, KeyboardInterrupt) as e:
            _record_stop(store, e)
            raise
    if echo:
        print(f"{exp.name or 'run'}: {exp.generations} generations x {exp.chains} chains "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


class _nothing:
    """A context manager that does nothing (the top directory's lock is already held)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def draw_figures(out: Path) -> list[Path]:
    """Draw a run's (or an experiment's) figures; a full disk is one clear error, the run stays complete."""
    from .plots import plot_run
    out = Path(out)
    runs = [out, *(p for p in out.iterdir() if (p / "metrics.csv").exists())] if out.is_dir() else []
    for run in runs:
        if (run / "metrics.csv").exists():
            read_config(run)   # a missing or damaged config.yaml: one line naming it, before any drawing
    new = [run / "figures" for run in runs if not (run / "figures").exists()]
    try:
        return plot_run(out)
    except BaseException as e:
        for d in new:   # a failed plot leaves no empty figures/ behind
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if isinstance(e, OSError) and disk_full(e):
            raise DiskFullError(f"{e.strerror or e} while drawing the figures of {out}: the run itself is "
                                f"complete and intact; free some space, then `collapse plot {out}`") from None
        raise
