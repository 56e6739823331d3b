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

The last two checkpoints are kept (the older one is deleted only once the new
one is renamed into place). A newest checkpoint that cannot be read (truncated,
corrupt) is set aside with a warning naming it and the previous one is used,
with the CSVs truncated to *its* lengths; if no checkpoint is readable, resume
refuses with CorruptRunError and changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from .errors import CollapseWarning, CorruptRunError, RunDirError

# Keys every checkpoint holds besides the loop's own state.
_META = ("__generation", "__csv_bytes", "__columns")


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write bytes to path via a temp file (+ fsync when durable) + rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)   # a full disk or a kill leaves no half-written temp file behind
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from None   # name the file that was being written
        raise


def _rows(generation: int, table: np.ndarray) -> str:
    """CSV lines `generation,chain,values...` of one generation's (chains, columns) table
    (one %-format per row: the same text as f"{v:.10g}" per value, at a third of the cost)."""
    fmt = "%d,%d" + ",%.10g" * table.shape[1] + "\n"
    return "".join([fmt % (generation, c, *row) for c, row in enumerate(table.tolist())])


def save_npz(path: Path, arrays: dict[str, np.ndarray], durable: bool = True) -> None:
    """Atomically write arrays as an .npz file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue(), durable)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an .npz written by save_npz (never unpickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _fsync_dir(path: Path) -> None:
    """Make a rename inside path durable (so a previous checkpoint can be deleted safely)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds (Windows): the rename is all we can do
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _checkpoint_generation(path: Path) -> int:
    """G of checkpoint-G.npz (-1 for a name that does not parse, so it sorts last)."""
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoint_paths(run: Path) -> list[Path]:
    """A run's checkpoint files, newest generation first."""
    return sorted(Path(run).glob("checkpoint-*.npz"), key=_checkpoint_generation, reverse=True)


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """Load and check one checkpoint; raises (any exception) if it is unreadable or incomplete."""
    state = load_npz(path)
    missing = [k for k in _META if k not in state]
    if missing:
        raise KeyError(f"missing {', '.join(missing)}")
    int(state["__generation"])
    lengths = json.loads(str(state["__csv_bytes"]))
    if not isinstance(lengths, dict):
        raise ValueError("__csv_bytes is not a mapping")
    json.loads(str(state["__columns"]))
    return state


def _reason(e: BaseException) -> str:
    """A short description of why a checkpoint could not be read."""
    text = str(e).strip() or "empty"
    return f"{type(e).__name__}: {text}"


def find_checkpoint(run: Path) -> tuple[Path, dict[str, np.ndarray], list[tuple[Path, str]]] | None:
    """The newest readable checkpoint as (path, state, [(skipped newer path, reason)]); changes nothing.

    None when the run has no checkpoint at all; CorruptRunError when it has some but none
    can be read, or when a CSV is shorter than the checkpoint to be used records.
    """
    run = Path(run)
    paths = checkpoint_paths(run)
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            state = read_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - truncated, corrupt zip, bad header, missing key: all unreadable
            skipped.append((path, _reason(e)))
            continue
        lengths = json.loads(str(state["__csv_bytes"]))
        for csv in _committed_csvs(run):
            if csv.stat().st_size < lengths.get(csv.stem, 0):
                raise CorruptRunError(
                    f"{csv} is shorter than {path.name} records ({csv.stat().st_size} < {lengths[csv.stem]} "
                    f"bytes); the run directory is damaged and was left as it is: start it again with "
                    f"--overwrite (or into a new --out)")
        return path, state, skipped
    if skipped:
        listed = "; ".join(f"{p.name} ({why})" for p, why in skipped)
        raise CorruptRunError(
            f"no readable checkpoint in {run}: {listed}. Nothing was changed; start the run again with "
            f"--overwrite (or into a new --out), or restore a good checkpoint-*.npz and resume")
    return None


def _committed_csvs(run: Path) -> list[Path]:
    """The CSVs whose committed lengths checkpoints record (timings.csv is informational)."""
    return [p for p in Path(run).glob("*.csv") if p.name != "timings.csv"]


def clear_dir(path: Path) -> None:
    """Delete everything in a directory but its lock file (its holder keeps the directory)."""
    for p in Path(path).iterdir():
        if p.name == ".lock":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.columns: list[str] | None = None
        self.pending: list[tuple[str, int, str, str]] = []  # (table, generation, header, text)
        self.generation = 0  # the generation being computed (for add_table)
        # Trackers told what each checkpoint commits (logging_sinks.py): only committed rows, so a
        # resumed run, which recomputes what came after its checkpoint, never logs a generation twice.
        self.sinks: list = []
        self.committed: dict[str, int] | None = None   # CSV lengths the newest checkpoint written here records

    # -- creation and status ------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config_text: str, overwrite: bool = False) -> "RunStore":
        """Make a new run directory holding the resolved config."""
        path = Path(path)
        if path.exists() and any(p.name != ".lock" for p in path.iterdir()):
            if not overwrite:
                raise RunDirError(f"run directory {path} already exists; pass --resume to continue it "
                                  "or --overwrite to replace it")
            clear_dir(path)   # not the directory itself: a lock held on its .lock must stay valid
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
        """The status document ({} if absent; {"status": "unknown"}, with a warning, if unreadable)."""
        p = self.path / "status.json"
        try:
            doc = json.loads(p.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:   # ValueError: not JSON, not UTF-8
            doc = f"{type(e).__name__}"
        if isinstance(doc, dict) and isinstance(doc.get("status", ""), str):
            return doc
        warnings.warn(f"{p} is unreadable ({doc if isinstance(doc, str) else 'not a status document'}); "
                      "the run is treated as unfinished (`collapse resume` rewrites it)", CollapseWarning,
                      stacklevel=2)
        return {"status": "unknown"}

    # -- metrics and tables ----------------------------------------------------
    def add_rows(self, generation: int, columns: dict[str, np.ndarray], chains: int) -> np.ndarray:
        """Buffer one generation's metric rows (one per chain) until the next checkpoint; returns them
        as a (chains, columns) table."""
        names = list(columns)
        if self.columns is None:
            self.columns = names
        elif names != self.columns:
            raise RuntimeError(f"metric columns changed at generation {generation}: {names} != {self.columns}")
        try:
            table = np.array(list(columns.values()), float).T   # (S,) columns, as most metrics give
        except ValueError:                                      # columns of mixed shapes
            table = None
        if table is None or table.shape != (chains, len(names)):   # scalars or (1,) columns: broadcast
            table = np.empty((chains, len(names)))
            for j, c in enumerate(names):
                table[:, j] = columns[c]
        # Formatted when flushed: W1 records 10,000 cheap generations, and text per row costs more than a fit.
        self.pending.append(("metrics", generation, "generation,chain," + ",".join(names), table))
        return table

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
            path = self.path / f"{name}.csv"
            try:
                with open(path, "ab") as f:
                    for n, g, header, text in ready:
                        if n != name:
                            continue
                        if f.tell() == 0:
                            f.write((header + "\n").encode())
                        f.write((text if isinstance(text, str) else _rows(g, text)).encode())
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                if e.filename:
                    raise
                raise OSError(e.errno, e.strerror, str(path)) from None   # name the file that could not grow
        return {p.stem: p.stat().st_size for p in self.path.glob("*.csv") if p.name != "timings.csv"}

    # -- checkpoints ------------------------------------------------------------
    def checkpoint(self, generation: int, state: dict[str, np.ndarray]) -> None:
        """Commit buffered rows and the loop state after `generation` (atomic)."""
        committed = [p for p in self.pending if p[1] <= generation] if self.sinks else []
        lengths = self._flush(generation)
        arrays = dict(state)
        arrays["__generation"] = np.array(generation)
        arrays["__csv_bytes"] = np.array(json.dumps(lengths))
        arrays["__columns"] = np.array(json.dumps(self.columns or []))
        path = self.path / f"checkpoint-{generation:06d}.npz"
        save_npz(path, arrays)
        _fsync_dir(self.path)  # the new one is durable before an older one goes
        self.committed = lengths
        # Keep this one and the newest older one (the fallback if this one is ever damaged);
        # any with a later generation belongs to an abandoned future and goes too.
        others = [p for p in checkpoint_paths(self.path) if p != path]
        previous = next((p for p in others if _checkpoint_generation(p) < generation), None)
        for old in others:
            if old != previous:
                old.unlink(missing_ok=True)
        for sink in self.sinks:   # (table, generation, header, rows) of everything just committed
            sink.committed(committed)

    def discard_uncommitted(self) -> None:
        """Cut every CSV back to what the newest checkpoint records (what resume would do anyway): after
        a full disk this frees the space that rows past the checkpoint took, so the status can be written."""
        if self.committed is None:
            return
        for csv in _committed_csvs(self.path):
            try:
                with open(csv, "r+b") as f:
                    f.truncate(self.committed.get(csv.stem, 0))
            except OSError:
                pass

    def latest_checkpoint(self) -> dict[str, np.ndarray] | None:
        """The newest readable checkpoint, with the CSVs truncated to the lengths it records.

        An unreadable newer checkpoint is renamed to *.npz.corrupt with a warning naming it.
        None (CSVs emptied: nothing was committed) when there is no checkpoint; CorruptRunError,
        with nothing changed, when there are checkpoints but none can be read.
        """
        found = find_checkpoint(self.path)  # raises before anything is touched
        for tmp in self.path.glob(".checkpoint-*.npz.tmp*"):
            tmp.unlink(missing_ok=True)  # torn writes of killed runs
        if found is None:
            for csv in _committed_csvs(self.path):
                with open(csv, "r+b") as f:  # rows flushed just before a first checkpoint that never landed
                    f.truncate(0)
            self.columns = None
            self.committed = {}
            return None
        path, state, skipped = found
        for bad, why in skipped:
            aside = bad.with_name(bad.name + ".corrupt")
            warnings.warn(f"checkpoint {bad} is unreadable ({why}); resuming from {path.name} instead "
                          f"(the bad file is kept as {aside.name})", CollapseWarning, stacklevel=2)
            os.replace(bad, aside)
        lengths = json.loads(str(state["__csv_bytes"]))
        for csv in _committed_csvs(self.path):
            with open(csv, "r+b") as f:
                f.truncate(lengths.get(csv.stem, 0))
        self.columns = json.loads(str(state["__columns"])) or None
        self.committed = lengths
        return state

    def check_resumable(self) -> None:
        """Raise CorruptRunError (changing nothing) if the run has checkpoints but none is readable."""
        find_checkpoint(self.path)

    def save_snapshot(self, generation: int, state: dict[str, np.ndarray]) -> None:
        """Keep the model state at a chosen generation for figures."""
        (self.path / "snapshots").mkdir(exist_ok=True)
        # Not fsynced: figures only; the next checkpoint's fsync makes it durable in practice.
        save_npz(self.path / "snapshots" / f"gen-{generation:06d}.npz", state, durable=False)

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
    try:
        text = csv.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptRunError(f"{csv} cannot be read ({getattr(e, 'strerror', None) or e}); {_REDO.format(run=csv.parent)}") from None
    status = RunStore(csv.parent).status()
    if status.get("status") != "complete":
        found = find_checkpoint(csv.parent)
        if found is not None:
            lengths = json.loads(str(found[1]["__csv_bytes"]))
            text = text.encode()[: lengths.get(csv.stem, 0)].decode(errors="replace")
        elif status:   # a run the store started, no checkpoint yet: rows flushed before it landed are not committed
            text = ""
    elif text and not text.endswith("\n"):   # every committed row ends in a newline
        raise CorruptRunError(f"{csv} is damaged: its last line (line {text.count(chr(10)) + 1}) is cut short (a file "
                              f"truncated or edited?); {_REDO.format(run=csv.parent)}")
    if not text.strip():
        return [], np.zeros((0, 0))  # nothing committed yet
    header, *lines = text.splitlines()
    cols = header.split(",")
    if not lines:
        return cols, np.zeros((0, len(cols)))
    values = _parse_large(text, len(lines), len(cols)) if len(text) > LARGE_CSV else None
    try:   # one split and one float conversion: ~5x faster than np.loadtxt on 10,000-generation tables
        values = np.array(",".join(lines).split(","), dtype=float) if values is None else values
    except ValueError:
        values = None
    if values is None or values.size != len(lines) * len(cols):
        bad = next((i for i, line in enumerate(lines) if line.count(",") != len(cols) - 1), len(lines) - 1)
        raise CorruptRunError(f"{csv} is damaged: line {bad + 2} does not hold {len(cols)} numbers (a file cut "
                              f"short or edited?); {_REDO.format(run=csv.parent)}")
    return cols, values.reshape(len(lines), len(cols))


# Tables larger than this (bytes) are parsed by pandas' C reader: a 1,000-chain x 2,000-generation
# metrics.csv (148 MB) takes 0.5 s there and 7.6 s through Python's split and float.
LARGE_CSV = 8 << 20


def _parse_large(text: str, rows: int, cols: int) -> np.ndarray | None:
    """A large table's numbers through pandas (round-trip exact, the same floats as float());
    None when any row does not hold `cols` fields (the caller then reports the damaged line)."""
    if text.count(",") != (rows + 1) * (cols - 1):   # header included: every line has cols - 1 commas
        return None
    import pandas as pd
    # pandas >= 3 parses floats exactly by default (and deprecates the option); before 3, ask for it.
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=float, engine="c", keep_default_na=False,
                            na_values=["nan", "-nan"], **exact)
    except (ValueError, pd.errors.ParserError):
        return None
    values = frame.to_numpy(float)
    return values if values.shape == (rows, cols) else None


# What to do about a damaged table of a run (its checkpoints only record committed lengths, not rows).
_REDO = ("restore it from a copy, or run the experiment again: "
         "`collapse run {run}/config.yaml --out {run} --overwrite`")
