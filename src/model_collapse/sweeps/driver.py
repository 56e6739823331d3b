"""Runs a planned sweep: checks, resume decisions, the executor, the index, progress, statistics.

Rerunning the same command resumes: a complete run is skipped, an interrupted one resumed from
its last checkpoint, a failed one tried once more (from its last checkpoint too); a failed run
never stops the others. Nothing is written until every grid point x seed has validated and every
existing run directory has been found to hold the same experiment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import yaml

from ..errors import CollapseWarning, ConfigError, RunDirError
from ..locks import exclusive
from .executors import get_executor
from .index import Index
from .progress import Progress
from .spec import Spec, plan


def run_status(task) -> str:
    """A run's status from its directory: complete only when every variant is complete."""
    out = Path(task.run_dir)
    names = list((task.raw.get("variants") or {}).keys())
    docs = []
    for d in ([out / n for n in names] if names else [out]):
        try:
            doc = json.loads((d / "status.json").read_text())
        except (OSError, ValueError):
            doc = {}
        docs.append(doc.get("status", "") if isinstance(doc, dict) else "")
    if all(s == "complete" for s in docs):
        return "complete"
    return next((s for s in docs if s in ("failed", "interrupted", "running")), "pending")


def _changes(stored: str, planned: str) -> list[str]:
    """`key: stored -> planned` for a run directory whose config differs from the planned one."""
    from ..config import dump, flat, validate
    try:   # read the stored config through today's schema, as `collapse resume` does
        stored = dump(validate(yaml.safe_load(stored)))
    except Exception:  # noqa: BLE001 - an unreadable stored config simply differs
        pass
    if stored == planned:
        return []
    a, b = flat(yaml.safe_load(stored) or {}), flat(yaml.safe_load(planned) or {})
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in dict.fromkeys([*a, *b])
            if a.get(k) != b.get(k)] or ["(formatting)"]


def check_existing(out: Path, tasks: list) -> None:
    """Refuse (changing nothing) to resume into runs that hold another experiment."""
    stale = []
    for t in tasks:
        cfg = Path(t.run_dir) / "config.yaml"
        if cfg.exists() and cfg.read_text() != t.config:
            diffs = _changes(cfg.read_text(), t.config)
            if diffs:
                stale.append(f"{t.label}: {'; '.join(diffs[:3])}")
    if stale:
        more = f"\n  ... and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise RunDirError(f"{out} holds runs of a different experiment:\n  " + "\n  ".join(stale[:5]) + more +
                          "\nrerun with the original settings, choose another --out, or pass --overwrite "
                          "to start the sweep again")


def driver_lock(out: Path):
    """One driver per sweep directory at a time (released by the kernel if this process dies)."""
    path = out / ".locks" / "driver.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return exclusive(path, f"another `collapse sweep` (pid {{pid}}) is running on {out}; "
                           "wait for it to finish or stop it first")


def _prepare(out: Path, overwrite: bool) -> None:
    """Make (or, with overwrite, empty) the sweep directory; one clear error if it cannot be used."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"cannot use {out} as a sweep directory: it exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.yaml").exists() and not overwrite:
        raise RunDirError(f"{out} exists and is not a sweep directory; choose another --out "
                          "(or pass --overwrite to replace it)")
    try:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write sweep directory {out}: {e.strerror or e}") from None


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the sweep like Ctrl-C: running runs checkpoint, the index is written."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_sweep(spec: Spec, out: Path | None = None, executor: str = "local", options: dict | None = None,
              overwrite: bool = False, run_figures: bool = False, progress: bool | None = None,
              stats: bool = True, figures: bool = True) -> dict:
    """Run (or resume) a sweep; returns counts {"total", "complete", "failed", "interrupted", "skipped"}
    and the sweep directory. Raises ConfigError / RunDirError before writing anything.
    stats: write stats.csv at the end; figures: and figures/sweep.png (False: --no-figures).

    From a script, call it under `if __name__ == "__main__":`: the local executor's workers
    import the main module, as every multiprocessing start method but fork does."""
    out = Path(out or Path("runs") / f"{spec.name}-sweep")
    tasks = plan(spec, out, run_figures)
    options = dict(options or {})
    options.setdefault("folder", str(out.resolve() / ".submitit"))
    ex = get_executor(executor, **options)
    if out.is_dir() and (out / "sweep.yaml").exists() and not overwrite:
        check_existing(out, tasks)
    _prepare(out, overwrite)
    with driver_lock(out):
        (out / "sweep.yaml").write_text(spec.to_yaml())
        index = Index(out, tasks, spec.keys())
        todo = []
        for t in tasks:
            status = run_status(t)
            index.set(t, "complete" if status == "complete" else "pending")
            if status != "complete":
                todo.append(t)
        index.write(force=True)
        skipped = len(tasks) - len(todo)
        index.event("start", executor=executor, workers=getattr(ex, "workers", None), runs=len(tasks),
                    to_run=len(todo), pid=os.getpid())
        bar = Progress(spec.name, len(tasks), skipped, getattr(ex, "workers", None) or 1, enabled=progress)
        if bar.enabled and spec.expected_time:
            print(f"{spec.name}: {len(todo)} of {len(tasks)} runs to go; expected run time {spec.expected_time}",
                  file=sys.stderr)
        counts = {"total": len(tasks), "skipped": skipped, "complete": skipped, "failed": 0, "interrupted": 0}
        began = {}

        def started(task):
            began[task.label] = time.monotonic()
            index.set(task, "running")
            bar.running += 1
            bar.update()
            index.write()

        def finished(task, result):
            status = result.get("status", "failed")
            message = result.get("message", "")
            if result.get("died"):   # the process died without recording it: say so in the run too
                _mark_dead(task, message)
            index.set(task, status, message)
            index.log(task, result, time.monotonic() - began.get(task.label, time.monotonic()))
            counts[status if status in counts else "failed"] += 1
            bar.running -= 1
            if status == "complete":
                bar.done += 1
            else:
                bar.failed += 1
            bar.update()
            index.write()

        interrupted = False
        try:
            with _sigterm_as_interrupt():
                if todo:
                    ex.run(todo, started, finished)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            index.close()
            bar.close()
        counts["index_rewrites"], counts["index_seconds"] = index.rewrites, index.seconds
        index.event("end", **{k: counts[k] for k in ("complete", "failed", "interrupted", "skipped")},
                    stopped=interrupted, index_rewrites=index.rewrites, index_seconds=round(index.seconds, 4))
    counts["interrupted"] = max(counts["interrupted"], int(interrupted))
    counts["out"] = out
    if stats and not interrupted and counts["complete"]:
        from .stats import write_stats
        from .figures import sweep_figure
        write_stats(out)
        try:
            counts["figure"] = sweep_figure(out, spec.figures) if figures else None
        except ConfigError as e:   # the runs are done and kept; only the figure could not be drawn
            warnings.warn(f"{e}; redraw with `collapse plot {out} --figure ...`", CollapseWarning, stacklevel=2)
    return counts


def _mark_dead(task, message: str) -> None:
    """A run whose worker died mid-way still says `running`: record the death in its status.json."""
    from ..store import RunStore
    out = Path(task.run_dir)
    names = list((task.raw.get("variants") or {}).keys())
    for d in ([out / n for n in names] if names else [out]):
        store = RunStore(d)
        try:
            doc = store.status()
            if doc.get("status") == "running":
                store.set_status("failed", doc.get("last_complete_generation", -1), message=message)
        except (OSError, ValueError):
            pass


def summary(counts: dict) -> str:
    """One line on how a sweep ended."""
    done = counts["complete"]
    parts = [f"{done} complete" + (f" ({counts['skipped']} already)" if counts["skipped"] else "")]
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["interrupted"]:
        parts.append("interrupted")
    return f"{counts['total']} runs: " + ", ".join(parts) + f"; index {counts['out'] / 'sweep.csv'}"


def report(counts: dict, stream=None) -> int:
    """Print the summary (stderr) and the sweep directory (stdout, last); returns the exit status."""
    stream = stream or sys.stderr
    print(summary(counts), file=stream)
    if counts["interrupted"]:
        print("interrupted; rerun the same command to continue the sweep", file=stream)
        print(counts["out"])
        return 130
    if counts["failed"]:
        print(f"error: {counts['failed']} run(s) failed (messages in sweep.csv); rerun the same command "
              "to retry them from their last checkpoints", file=stream)
    print(counts["out"])
    return 1 if counts["failed"] else 0
