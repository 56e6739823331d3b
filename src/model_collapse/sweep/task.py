"""One sweep run, as a worker executes it (a pool process, a Ray task or a Slurm job).

`run_task` starts, resumes or skips the run directory of one grid point x seed exactly as
`collapse run --resume` would (same store, same numbers), and returns
{"status": complete | failed | interrupted, "message": ...}; it never raises for a failed run.
A lock file held for the whole attempt keeps two workers (say, one left over from a killed
driver and one from the rerun) from ever writing the same run directory at once.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a sweep directory then needs one driver at a time
    fcntl = None


def one_thread_env() -> dict[str, str]:
    """Environment variables that hold BLAS, OpenMP and torch to one thread per process."""
    return {v: "1" for v in THREAD_VARS}


def limit_threads(torch_family: bool) -> None:
    """One BLAS / torch thread in this worker: several runs share the cores, each single-threaded.

    Executors set the variables before the worker starts (BLAS reads them once, at load); this
    catches a worker started otherwise, and sets torch's own count for neural families."""
    started_with_one = os.environ.get("OMP_NUM_THREADS") == "1"
    os.environ.update(one_thread_env())
    if not started_with_one and "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(1)
        except Exception:  # noqa: BLE001 - an optional speed setting, never a reason to fail a run
            pass
    if torch_family or "torch" in sys.modules:
        import torch
        torch.set_num_threads(1)


@contextmanager
def held(lock: Path):
    """Hold an exclusive lock file (waiting for another holder to finish); the file names our pid."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass   # a filesystem without locks (some network mounts): run unlocked
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)   # releases the lock


def _message(e: BaseException) -> str:
    """`Type: text` of an exception (the run store's convention)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _run_one(exp, text: str, out: Path) -> dict:
    """Start, resume or skip one run directory; the loop records failures in its status.json."""
    from ..errors import CorruptRunError
    from ..loop import run_generations
    from ..store import RunStore
    if (out / "config.yaml").exists():
        store = RunStore(out)
        doc = store.status()
        if doc.get("status") == "complete":
            return {"status": "complete", "message": ""}
        try:
            store.check_resumable()
        except CorruptRunError as e:
            return {"status": "failed", "message": str(e)}
        store.set_status("running", doc.get("last_complete_generation", -1))
    else:   # new, or a directory a kill left without its config: start it cleanly
        store = RunStore.create(out, text, overwrite=True)
    try:
        run_generations(exp, store, progress=False)
    except KeyboardInterrupt:
        _mark(store, "interrupted", "interrupted")
        return {"status": "interrupted", "message": "interrupted"}
    except Exception as e:  # noqa: BLE001 - a failed run is a result, not a crash of the sweep
        _mark(store, "failed", _message(e))
        return {"status": "failed", "message": store.status().get("message") or _message(e)}
    return {"status": "complete", "message": ""}


def _mark(store, kind: str, message: str) -> None:
    """Record a stop the loop did not record itself (e.g. while building the model)."""
    doc = store.status()
    if doc.get("status") == "running":
        store.set_status(kind, doc.get("last_complete_generation", -1), message=message)


def _summarise(task, variants: list[str]) -> None:
    """Cache each complete run's chain means for the sweep's statistics (in parallel, here)."""
    from .stats import summary, summary_path
    sweep = Path(task.lock).parent.parent
    for name in variants or [None]:
        run = Path(task.run_dir) if name is None else Path(task.run_dir) / name
        try:
            summary(run, summary_path(sweep, task.label, name))
        except Exception:  # noqa: BLE001 - a cache: the driver recomputes what is missing
            pass


def run_task(task) -> dict:
    """Run one grid point x seed (every variant of it); returns its status, message and CPU seconds."""
    cpu = time.process_time()
    result = _attempt(task)
    result["cpu"] = round(time.process_time() - cpu, 3)
    return result


def _attempt(task) -> dict:
    """run_task without the bookkeeping."""
    from ..config import dump, validate, variant_raw
    from ..store import atomic_write
    out = Path(task.run_dir)
    try:
        exp = validate(task.raw)
        limit_threads(hasattr(exp.model, "threads"))
        with held(Path(task.lock)):
            names = list(exp.variants)
            if not names:
                result = _run_one(exp, dump(exp), out)
            else:   # as `collapse run`: the experiment's config on top, one sub-directory per variant
                out.mkdir(parents=True, exist_ok=True)
                top = dump(exp)
                if not (out / "config.yaml").exists() or (out / "config.yaml").read_text() != top:
                    atomic_write(out / "config.yaml", top.encode())
                bad = []
                result = {"status": "complete", "message": ""}
                for name in names:
                    vexp = validate(variant_raw(task.raw, name))
                    r = _run_one(vexp, dump(vexp), out / name)
                    if r["status"] == "interrupted":
                        return r
                    if r["status"] != "complete":
                        bad.append(f"variant {name}: {r['message']}")
                if bad:
                    result = {"status": "failed", "message": "; ".join(bad)}
            if result["status"] == "complete":
                _summarise(task, names)
                if task.figures:
                    from ..plots import plot_run
                    plot_run(out)
            return result
    except KeyboardInterrupt:
        return {"status": "interrupted", "message": "interrupted"}
    except Exception as e:  # noqa: BLE001 - reported in sweep.csv; the other runs go on
        return {"status": "failed", "message": _message(e)}
