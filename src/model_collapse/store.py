"""The run store: one directory per run, written atomically.

Layout::

    RUN/config.yaml          resolved experiment (every default filled in)
    RUN/metrics.csv          generation, chain, metric columns (one row per generation x chain)
    RUN/checkpoint-G.npz     state after the last complete generation G (model, regime, csv length)
    RUN/snapshots/gen-G.npz  model state at chosen generations (for density figures)
    RUN/timings.csv          seconds per generation and phase (not part of the results)
    RUN/status.json          running / complete / failed, last complete generation
    RUN/figures/*.png

Rows are appended to metrics.csv, then the checkpoint is written to a temp file
and renamed; the checkpoint records how many bytes of metrics.csv are
committed. A run killed at any moment therefore has a consistent last
checkpoint; resume truncates metrics.csv to the committed length, so a
generation is either fully recorded or absent.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .errors import RunDirError


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to path via a temp file + fsync + rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write arrays as an .npz file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz written by save_npz (never unpickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.columns: list[str] | None = None
        self.pending: list[tuple[str, int, str, str]] = []  # (table, generation, header, text)
        self.generation = 0  # the generation being computed (for add_table)

    # -- creation and status ------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config_text: str, overwrite: bool = False) -> "RunStore":
        """Make a new run directory holding the resolved config."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise RunDirError(f"run directory {path} already exists; pass --resume to continue it "
                                  "or --overwrite to replace it")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "config.yaml", config_text.encode())
        store = cls(path)
        store.set_status("running", -1)
        return store

    def set_status(self, status: str, last: int, **extra) -> None:
        """Record the run's state for humans and tools."""
        doc = {"status": status, "last_complete_generation": last, "updated": time.time(), **extra}
        atomic_write(self.path / "status.json", json.dumps(doc, indent=1).encode())

    def status(self) -> dict:
        """The status document ({} if absent)."""
        p = self.path / "status.json"
        return json.loads(p.read_text()) if p.exists() else {}

    # -- metrics and tables ----------------------------------------------------
    def add_rows(self, generation: int, columns: dict[str, np.ndarray], chains: int) -> None:
        """Buffer one generation's metric rows (one per chain) until the next checkpoint."""
        names = list(columns)
        if self.columns is None:
            self.columns = names
        elif names != self.columns:
            raise RuntimeError(f"metric columns changed at generation {generation}: {names} != {self.columns}")
        table = np.column_stack([np.broadcast_to(np.asarray(columns[c], float), (chains,)) for c in names])
        lines = [f"{generation},{c}," + ",".join(f"{v:.10g}" for v in row) for c, row in enumerate(table)]
        self.pending.append(("metrics", generation, "generation,chain," + ",".join(names),
                             "\n".join(lines) + "\n"))

    def add_table(self, name: str, rows: list[dict], generation: int | None = None) -> None:
        """Buffer rows for RUN/<name>.csv (e.g. a classifier-by-generation matrix), committed like metrics."""
        if not rows:
            return
        cols = list(rows[0])
        text = "".join(",".join(f"{r[c]:.10g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n"
                       for r in rows)
        g = self.generation if generation is None else generation
        self.pending.append((name, g, ",".join(cols), text))

    def _flush(self, upto: int) -> dict[str, int]:
        """Append buffered rows of generations <= upto to their CSVs (fsynced); returns committed lengths."""
        ready = [p for p in self.pending if p[1] <= upto]
        self.pending = [p for p in self.pending if p[1] > upto]
        for name in {p[0] for p in ready}:
            with open(self.path / f"{name}.csv", "ab") as f:
                for n, _, header, text in ready:
                    if n != name:
                        continue
                    if f.tell() == 0:
                        f.write((header + "\n").encode())
                    f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())
        return {p.stem: p.stat().st_size for p in self.path.glob("*.csv") if p.name != "timings.csv"}

    # -- checkpoints ------------------------------------------------------------
    def checkpoint(self, generation: int, state: dict[str, np.ndarray]) -> None:
        """Commit buffered rows and the loop state after `generation` (atomic)."""
        lengths = self._flush(generation)
        arrays = dict(state)
        arrays["__generation"] = np.array(generation)
        arrays["__csv_bytes"] = np.array(json.dumps(lengths))
        arrays["__columns"] = np.array(json.dumps(self.columns or []))
        save_npz(self.path / f"checkpoint-{generation:06d}.npz", arrays)
        for old in self.path.glob("checkpoint-*.npz"):
            if old.name != f"checkpoint-{generation:06d}.npz":
                old.unlink(missing_ok=True)

    def latest_checkpoint(self) -> dict[str, np.ndarray] | None:
        """The newest readable checkpoint, with metrics.csv truncated to match it."""
        for path in sorted(self.path.glob("checkpoint-*.npz"), reverse=True):
            try:
                state = load_npz(path)
            except (OSError, ValueError, EOFError):
                continue  # a torn write from a kill; an older one is still there
            lengths = json.loads(str(state["__csv_bytes"]))
            for csv in self.path.glob("*.csv"):
                if csv.name == "timings.csv":
                    continue
                committed = lengths.get(csv.stem, 0)
                if csv.stat().st_size < committed:
                    raise RunDirError(f"{csv} is shorter than its checkpoint records; the run directory is damaged")
                with open(csv, "r+b") as f:
                    f.truncate(committed)
            self.columns = json.loads(str(state["__columns"])) or None
            return state
        return None

    def save_snapshot(self, generation: int, state: dict[str, np.ndarray]) -> None:
        """Keep the model state at a chosen generation for figures."""
        (self.path / "snapshots").mkdir(exist_ok=True)
        save_npz(self.path / "snapshots" / f"gen-{generation:06d}.npz", state)

    def snapshots(self) -> dict[int, dict[str, np.ndarray]]:
        """All saved model snapshots by generation."""
        out = {}
        for p in sorted((self.path / "snapshots").glob("gen-*.npz")):
            out[int(p.stem[4:])] = load_npz(p)
        return out

    def save_array(self, name: str, generation: int, array: np.ndarray) -> None:
        """Keep one array per generation under RUN/arrays/ (e.g. a fixed-latent sample grid)."""
        (self.path / "arrays").mkdir(exist_ok=True)
        save_npz(self.path / "arrays" / f"{name}-gen-{generation:06d}.npz", {"array": array})

    def arrays(self, name: str) -> dict[int, np.ndarray]:
        """All saved arrays of one name by generation."""
        out = {}
        for p in sorted((self.path / "arrays").glob(f"{name}-gen-*.npz")):
            out[int(p.stem.rsplit("-", 1)[1])] = load_npz(p)["array"]
        return out

    def add_timing(self, generation: int, phases: dict[str, float]) -> None:
        """Append wall-clock seconds per phase for one generation (informational)."""
        p = self.path / "timings.csv"
        new = not p.exists()
        with open(p, "a") as f:
            if new:
                f.write("generation,phase,seconds\n")
            f.writelines(f"{generation},{k},{v:.6f}\n" for k, v in phases.items())


def read_metrics(path: str | Path, table: str = "metrics") -> tuple[list[str], np.ndarray]:
    """A run's metrics.csv (or another table) as (column names, float rows), committed rows only."""
    path = Path(path)
    csv = path / f"{table}.csv" if path.is_dir() else path
    if not csv.exists():
        raise RunDirError(f"{csv} not found: is {path} a run directory?")
    text = csv.read_text()
    ckpts = sorted(csv.parent.glob("checkpoint-*.npz"))
    status = json.loads((csv.parent / "status.json").read_text()) if (csv.parent / "status.json").exists() else {}
    if ckpts and status.get("status") != "complete":
        lengths = json.loads(str(load_npz(ckpts[-1])["__csv_bytes"]))
        text = text.encode()[: lengths.get(csv.stem, 0)].decode()
    header, *lines = text.splitlines()
    cols = header.split(",")
    if not lines:
        return cols, np.zeros((0, len(cols)))
    return cols, np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2)
