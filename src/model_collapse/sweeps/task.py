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
from pathlib import Path

from ..errors import RunDirError
from ..locks import exclusive

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")

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


def _message(e: BaseException) -> str:
    """`Type: text` of an exception (the run store's convention)."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _run_one(raw: dict, out: Path) -> dict:
    """Start, resume or skip one run directory through the one runner (as `collapse run --resume`);
    the loop records failures in its status.json."""
    from ..runner import execute
    try:
        execute(raw, out, resume=True, progress=False, figures=False, echo=False)
    except KeyboardInterrupt:
        return {"status": "interrupted", "message": "interrupted"}
    except RunDirError as e:   # refused before writing (locked by another process, damaged): its status is not ours
        return {"status": "failed", "message": _message(e)}
    except Exception as e:  # noqa: BLE001 - a failed run is a result, not a crash of the sweep
        from ..store import RunStore
        return {"status": "failed", "message": RunStore(out).status().get("message") or _message(e)}
    return {"status": "complete", "message": ""}


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
        Path(task.lock).parent.mkdir(parents=True, exist_ok=True)
        with exclusive(Path(task.lock), wait=True):   # a worker left by a killed driver finishes first
            names = list(exp.variants)
            if not names:
                result = _run_one(task.raw, out)
            else:   # as `collapse run`: the experiment's config on top, one sub-directory per variant
                out.mkdir(parents=True, exist_ok=True)
                top = dump(exp)
                if not (out / "config.yaml").exists() or (out / "config.yaml").read_text() != top:
                    atomic_write(out / "config.yaml", top.encode())
                bad = []
                result = {"status": "complete", "message": ""}
                for name in names:
                    r = _run_one(variant_raw(task.raw, name), out / name)
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
