"""SWEEP/sweep.csv (the index: one row per grid point x seed) and SWEEP/sweep.log (history).

The run directories are the truth (each has its status.json); the index is a view of them,
rebuilt from the planned tasks and their statuses. It is rewritten whole (atomically, not
fsynced: it can always be rebuilt), but at most once a second while runs finish, and at the
end: a 1,000-run sweep rewrites it a few dozen times, not 1,000 (benchmarks/bench_sweep.py).
sweep.log gets one appended line per finished attempt, so its cost per run is constant.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path

from ..store import atomic_write
from .spec import show

INTERVAL = 1.0   # seconds between rewrites of sweep.csv while runs finish


class Index:
    """Statuses and messages of a sweep's runs, written to sweep.csv and sweep.log."""

    def __init__(self, out: Path, tasks: list, keys: list[str]):
        self.out, self.tasks, self.keys = out, tasks, keys
        self.state = {t.label: ("pending", "") for t in tasks}
        self.written = 0.0
        self.rewrites = 0
        self.seconds = 0.0   # time spent writing the index (for the benchmark)
        self.lock = threading.Lock()         # guards state
        self.writing = threading.Lock()      # one rewrite at a time (driver thread, deferred timer)
        self.closed = False
        self.timer = None    # a deferred rewrite, so a skipped one is never lost

    def set(self, task, status: str, message: str = "") -> None:
        """Record a run's status (the file follows within INTERVAL)."""
        with self.lock:
            self.state[task.label] = (status, " | ".join(message.splitlines()))

    def log(self, task, result: dict, seconds: float) -> None:
        """Append one line for a finished attempt."""
        t0 = time.perf_counter()
        self.event("run", run=task.label, status=result["status"], seconds=round(seconds, 3),
                   cpu=result.get("cpu"), message=result.get("message", ""))
        self.seconds += time.perf_counter() - t0

    def event(self, kind: str, **fields) -> None:
        """Append one JSON line to sweep.log: a finished run, or a driver's start or end."""
        line = json.dumps({"time": round(time.time(), 3), "event": kind, **fields})
        with open(self.out / "sweep.log", "a") as f:
            f.write(line + "\n")

    def text(self) -> str:
        """The whole of sweep.csv."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["point", *self.keys, "seed", "status", "run_dir", "message"])
        with self.lock:
            state = dict(self.state)
        for t in self.tasks:
            values = dict(t.values)
            status, message = state[t.label]
            w.writerow([t.point, *(show(values[k]) for k in self.keys), t.seed, status, t.label, message])
        return buf.getvalue()

    def write(self, force: bool = False) -> None:
        """Rewrite sweep.csv if INTERVAL has passed since the last time, else within INTERVAL (or now,
        when forced)."""
        now = time.monotonic()
        if not force and now - self.written < INTERVAL:
            if self.timer is None:
                self.timer = threading.Timer(INTERVAL - (now - self.written), self._deferred)
                self.timer.daemon = True
                self.timer.start()
            return
        self._rewrite()

    def _deferred(self) -> None:
        """The rewrite a throttled write() put off."""
        self.timer = None
        if not self.closed:
            try:
                self._rewrite()
            except OSError:
                pass   # the next rewrite (at the latest, the final one) will try again

    def _rewrite(self) -> None:
        """Write sweep.csv now."""
        with self.writing:
            t0 = time.perf_counter()
            atomic_write(self.out / "sweep.csv", self.text().encode(), durable=False)
            self.written = time.monotonic()
            self.rewrites += 1
            self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        """Cancel any deferred rewrite and write the final index."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._rewrite()


def read_index(sweep: Path) -> list[dict]:
    """The rows of SWEEP/sweep.csv as dicts."""
    path = Path(sweep) / "sweep.csv"
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
