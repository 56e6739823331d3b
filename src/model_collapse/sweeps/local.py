"""The `local` executor: `workers` processes on this machine, one run at a time each, one thread each.

Why not concurrent.futures.ProcessPoolExecutor: when one of its workers dies (SIGKILL, the
out-of-memory killer) the whole pool is broken and every pending run fails with it. Here the
driver watches each worker's process: a worker that dies has its run reported with the signal,
a fresh worker takes its place, and the other runs go on. Workers are forked from a forkserver
that has already imported the engine, with the thread variables set before that server starts,
and each serves many runs (a fresh process per run costs ~40 ms more: fork, page faults, exit).

Each worker also holds a control pipe from the driver. If the driver goes away (kill -9
included) the worker sees end-of-file and stops its run with SIGTERM, which the loop turns into
a checkpoint at the end of the generation: no run outlives its sweep, and a rerun resumes it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from multiprocessing.connection import wait

from ..errors import ConfigError
from .task import one_thread_env, run_task


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def _context():
    """forkserver where the platform has it (fast, no inherited locks or threads), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Imported once in the server, before any worker forks from it.
        ctx.set_forkserver_preload(["model_collapse.sweeps.warm"])
        return ctx
    return mp.get_context("spawn")


def _interrupt(signum, frame):
    """SIGTERM in a worker: stop like Ctrl-C (inside a run the loop's own handler takes over)."""
    raise KeyboardInterrupt


def _worker(tasks, control) -> None:
    """Body of a worker: run the tasks the driver sends, one at a time, until it sends None."""
    signal.signal(signal.SIGTERM, _interrupt)
    busy = threading.Event()

    def watch():
        try:
            control.recv()   # returns on "stop"; EOFError when the driver died
        except (EOFError, OSError):
            pass
        if busy.is_set():
            os.kill(os.getpid(), signal.SIGTERM)   # the run checkpoints and stops
        else:
            os._exit(0)   # idle: nothing to save

    threading.Thread(target=watch, daemon=True).start()
    try:
        while True:
            task = tasks.recv()
            if task is None:
                return
            busy.set()
            result = run_task(task)
            busy.clear()
            tasks.send(result)
    except (EOFError, OSError, KeyboardInterrupt):
        return   # the driver is gone or stopping; the run directory holds the outcome


def death(exitcode: int | None) -> dict:
    """The result of a run whose worker ended without reporting one."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = f"worker killed by {name}"
    else:
        why = f"worker exited with status {exitcode} before reporting a result"
    return {"status": "failed", "message": f"{why}; rerun the sweep to resume this run from its last checkpoint",
            "died": True}


class _Worker:
    """The driver's handle on one worker process."""

    def __init__(self, ctx):
        self.tasks, theirs = ctx.Pipe(duplex=True)
        control_theirs, self.control = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker, args=(theirs, control_theirs), name="collapse-sweep-worker")
        self.proc.start()
        theirs.close()
        control_theirs.close()
        self.task = None

    def give(self, task) -> None:
        """Send a run to this (idle) worker."""
        self.task = task
        self.tasks.send(task)

    def close(self) -> None:
        """Let the worker exit: an idle one normally (its finalizers run, nothing is reported
        leaked), a busy one through its control pipe (its run checkpoints and stops)."""
        if self.task is None:
            try:
                self.tasks.send(None)
            except OSError:
                pass
            self.proc.join(timeout=10)
        for conn in (self.control, self.tasks):
            conn.close()
        self.proc.join()


class LocalExecutor:
    """Runs tasks in `workers` processes on this machine (default: the usable cores)."""

    name = "local"

    def __init__(self, workers: int | None = None, gpus_per_run: float | None = None, **_):
        if gpus_per_run:
            raise ConfigError("--gpus-per-run is for --executor ray or slurm; locally every run uses this "
                              "machine's GPU through model.device (auto or cuda): leave it out, and set --workers "
                              "to the runs that fit on it at once")
        self.workers = max(1, workers or usable_cores())

    def run(self, tasks, started, finished) -> None:
        """Run every task; started(task) and finished(task, result) are called in the driver."""
        ctx = _context()
        pending = deque(tasks)
        pool: list[_Worker] = []
        saved = {k: os.environ.get(k) for k in one_thread_env()}
        os.environ.update(one_thread_env())   # inherited by the forkserver (or spawned workers) at start
        try:
            while pending or any(w.task for w in pool):
                while pending and len(pool) < min(self.workers, len(pending) + sum(w.task is not None for w in pool)):
                    pool.append(_Worker(ctx))
                for w in pool:
                    if w.task is None and pending:
                        w.give(pending.popleft())
                        started(w.task)
                self._collect(pool, finished)
        except KeyboardInterrupt:
            self._stop(pool, finished)
            raise
        finally:
            for w in pool:
                w.close()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @staticmethod
    def _collect(pool: list, finished) -> None:
        """Wait for a result or a worker's death; report it (a dead worker leaves the pool)."""
        by_conn = {w.tasks: w for w in pool if w.task is not None}
        by_sentinel = {w.proc.sentinel: w for w in pool}
        for ready in wait([*by_conn, *by_sentinel]):
            w = by_conn.get(ready) or by_sentinel.get(ready)
            if w not in pool:
                continue   # already handled through its other handle
            result, gone = None, False
            if w.task is not None:
                try:
                    if w.tasks.poll():
                        result = w.tasks.recv()
                except (EOFError, OSError):
                    gone = True   # its end closed: the process is exiting
            if isinstance(result, dict):
                task, w.task = w.task, None
                finished(task, result)
            if gone or not w.proc.is_alive():
                w.proc.join()
                pool.remove(w)
                if w.task is not None:
                    finished(w.task, death(w.proc.exitcode))

    def _stop(self, pool: list, finished) -> None:
        """Ctrl-C or SIGTERM: ask every running run to checkpoint and stop, and record how each ended."""
        for w in pool:
            try:
                w.control.send("stop")
            except OSError:
                pass
        while any(w.task is not None for w in pool):
            self._collect(pool, finished)
