"""One writer per directory: an OS advisory lock held for the writing process's life.

`flock` locks belong to an open file, so the kernel releases them when the process dies (kill -9
included): a lock can never go stale the way a marker file does. The lock file itself stays in the
directory (deleting it would let a second process lock a new file of the same name); it names the
holder's pid for the refusal message. Readers (plot, report, list) never take it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per directory is then the user's care
    fcntl = None

LOCK_NAME = ".lock"


def holder(path: Path) -> str:
    """The pid a lock file names ('?' while unknown)."""
    try:
        return Path(path).read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def exclusive(path: Path, busy: str = "", wait: bool = False):
    """Hold an exclusive lock on the file `path` (made if absent, then naming our pid).

    Without `wait`, a lock another process holds raises RunDirError: `busy` with `{pid}` filled in
    (default: "PATH is in use by process PID")."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = holder(path)
                raise RunDirError((busy or f"{path.parent} is in use by process {{pid}}").format(pid=pid)) from None
            except OSError:
                pass   # a filesystem without locks (some network mounts): run unlocked
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass   # a full disk: the lock holds all the same; only the pid is not shown to others
        yield
    finally:
        os.close(fd)   # releases the lock


def run_lock(run: Path):
    """The lock of one run directory (RUN/.lock): taken by run, resume and overwrite before writing."""
    run = Path(run)
    return exclusive(run / LOCK_NAME,
                     f"run directory {run} is in use by process {{pid}} (another `collapse run` or resume); "
                     "wait for it to finish or stop it (kill -INT {pid}), or choose another --out")
