"""One live line on a terminal: done / running / failed and an ETA; nothing when stderr is not a TTY."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    """H:MM:SS (or M:SS)."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
    """The sweep's status line, redrawn at most 5 times a second."""

    def __init__(self, name: str, total: int, skipped: int, workers: int, stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.name, self.total, self.skipped, self.workers = name, total, skipped, workers
        self.done = self.failed = self.running = 0
        self.t0 = time.monotonic()
        self.drawn = 0.0
        self.width = 0

    def line(self) -> str:
        """The text of the line now."""
        finished = self.done + self.failed
        left = self.total - self.skipped - finished
        elapsed = time.monotonic() - self.t0
        if finished:   # throughput so far, so parallel runs are counted as they overlap
            eta = f"ETA {_clock(elapsed / finished * left)}"
        else:
            eta = "ETA --"
        skipped = f" ({self.skipped} already complete)" if self.skipped else ""
        return (f"{self.name}: {self.skipped + finished}/{self.total} done{skipped}, {self.running} running, "
                f"{self.failed} failed, {_clock(elapsed)} elapsed, {eta}")

    def update(self, force: bool = False) -> None:
        """Redraw the line (throttled)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.drawn < 0.2:
            return
        self.drawn = now
        text = self.line()
        self.stream.write("\r" + text + " " * max(0, self.width - len(text)))
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        """Leave the last state on screen and end the line."""
        if self.enabled:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()
