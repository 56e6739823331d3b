"""Experiment trackers fed from the run store: TensorBoard event files and MLflow runs.

`collapse run CONFIG --log tensorboard --log mlflow` attaches one sink per tracker to each run's
store; RunStore.checkpoint tells every sink what it has just committed. What a sink logs, with the
generation as the step:

- scalars `<column>/median` over chains for every metric column, plus `/p05`, `/p95` and `/mean`
  when the run has several chains: the band and mean the figures draw. Summaries rather than one
  tag per chain, since 500 chains x 5 metrics would be 2,500 curves nobody reads (metrics.csv keeps
  every chain);
- TensorBoard also: chain 0's fixed-latent sample grid as the image `samples` at every generation
  that stored one (the `grid` metric of image runs), and the kept sample texts (`text_samples`) as
  the text `sample_texts`;
- MLflow also: the flattened resolved config (dotted keys) as params, once, when its run is made.

Where: RUN/tensorboard/ (`tensorboard --logdir` on an experiment shows its variants side by side);
MLflow into `--mlflow-uri`, by default a SQLite store shared by an experiment's variants
(OUT/mlflow.db, artifacts under OUT/mlartifacts; see it with
`mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`). MLflow's telemetry is switched off
unless MLFLOW_DISABLE_TELEMETRY is set.

Resume: only committed rows are logged, and each sink records the last generation it logged
(RUN/tensorboard/logged.json; RUN/mlflow.json, with the MLflow run id, which a resumed run keeps
logging into). When opened, a sink first logs every committed generation after that from
metrics.csv. So a resumed run never logs the generations it recomputes, and a run killed between
a checkpoint and its sink's write, a run resumed with --log for the first time, or a finished run
(`collapse resume RUN --log mlflow`) each end with every generation logged once. (A kill in the
instant between a tracker's write and its marker can log that checkpoint's generations twice, with
identical values.) A tracker that fails mid-run is switched off with a warning; the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import CollapseWarning, ConfigError
from .store import atomic_write, read_metrics

SINKS = ("tensorboard", "mlflow")
INSTALL = {"tensorboard": ("tensorboard", "pip install 'model-collapse[tensorboard]' (or: pip install tensorboard)"),
           "mlflow": ("mlflow", "pip install 'model-collapse[mlflow]' (mlflow-skinny, sqlalchemy, alembic)")}


@dataclass
class Generation:
    """One committed generation: its metric table (chains, columns) and any kept sample texts."""

    step: int
    names: list[str] = field(default_factory=list)
    table: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)


def check_available(kinds) -> None:
    """Refuse, before anything is written, a tracker whose package is not installed."""
    import importlib.util
    for kind in kinds:
        module, how = INSTALL[kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logging to {kind} (--log {kind}) needs the {module} package: {how}")


def scalars(names: list[str], table: np.ndarray) -> dict[str, float]:
    """`<column>/median` (and with several chains /p05, /p95, /mean) over the finite values of each column."""
    t = np.where(np.isfinite(table), table, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column has no summary: skipped below
        q = np.nanpercentile(t, [5, 50, 95], axis=0)
        mean = np.nanmean(t, axis=0)
    stats = {"median": q[1]} if table.shape[0] == 1 else {"median": q[1], "p05": q[0], "p95": q[2], "mean": mean}
    return {f"{c}/{k}": float(v[j]) for j, c in enumerate(names) for k, v in stats.items() if np.isfinite(v[j])}


def _texts(rows: list[dict]) -> dict[int, list[str]]:
    """Sample texts by generation, each headed by its chain and index."""
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(int(r["generation"]), []).append(f"chain {r['chain']}, sample {r['index']}:\n{r['text']}")
    return out


def from_commit(entries) -> list[Generation]:
    """Generations from what RunStore.checkpoint just committed: (table, generation, header, rows)."""
    gens: dict[int, Generation] = {}
    for name, g, header, body in entries:
        if name == "metrics":
            gens.setdefault(g, Generation(g)).names = header.split(",")[2:]
            gens[g].table = body
        elif name == "text_samples":
            for step, texts in _texts(list(csv.DictReader(io.StringIO(header + "\n" + body)))).items():
                gens.setdefault(step, Generation(step)).texts += texts
    return [gens[g] for g in sorted(gens)]


def from_run(run: Path, after: int) -> list[Generation]:
    """The committed generations of a run directory after generation `after` (for catching up)."""
    from .plots.text import committed_rows
    gens: dict[int, Generation] = {}
    if (run / "metrics.csv").exists():
        cols, rows = read_metrics(run)
        if len(rows):
            keep = rows[rows[:, 0] > after]
            for g in np.unique(keep[:, 0]).astype(int):
                gens[g] = Generation(int(g), cols[2:], keep[keep[:, 0] == g][:, 2:])
    for step, texts in _texts(committed_rows(run, "text_samples")).items():
        if step > after:
            gens.setdefault(step, Generation(step)).texts += texts
    return [gens[g] for g in sorted(gens)]


class Sink:
    """A tracker that logs committed generations once each (see the module docstring)."""

    kind = ""

    def __init__(self, run: Path, top: Path, marker: Path):
        """run: its run directory; top: the experiment's (what `collapse resume` takes); marker: its record."""
        self.run, self.top, self.marker, self.done, self.broken = Path(run), Path(top), marker, -1, False

    def _load_marker(self) -> dict:
        """The marker's document ({} when absent or unreadable)."""
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}

    def _save_marker(self, **extra) -> None:
        """Record the last generation logged (after the tracker has it)."""
        atomic_write(self.marker, json.dumps({"generation": self.done, **extra}, indent=1).encode(), durable=False)

    def catch_up(self) -> None:
        """Log every committed generation after the marker (a resumed, killed or finished run)."""
        self._log(from_run(self.run, self.done))

    def committed(self, entries) -> None:
        """Called by RunStore.checkpoint with what it just committed."""
        self._log([g for g in from_commit(entries) if g.step > self.done])

    def _log(self, gens: list[Generation]) -> None:
        """Write generations, then move the marker; a failing tracker is switched off, not the run."""
        if not gens or self.broken:
            return
        try:
            self.write(gens)
            self.done = max(self.done, gens[-1].step)
            self.save()
        except Exception as e:  # noqa: BLE001 - a tracker's trouble must not lose an experiment
            self.broken = True
            warnings.warn(f"--log {self.kind} stopped at generation {gens[0].step} ({type(e).__name__}: {e}); "
                          f"the run goes on and its files keep everything: log the rest later with "
                          f"`collapse resume {self.top} --log {self.kind}`", CollapseWarning, stacklevel=2)

    def save(self) -> None:
        """Record progress (a subclass adds what it needs to find its tracker's run again)."""
        self._save_marker()

    def write(self, gens: list[Generation]) -> None:
        """Send generations to the tracker (each subclass)."""
        raise NotImplementedError

    def close(self, outcome: str) -> None:
        """outcome: complete, interrupted or failed."""


class TensorBoardSink(Sink):
    """Event files in RUN/tensorboard, written with the tensorboard package alone (no TensorFlow, no torch)."""

    kind = "tensorboard"

    def __init__(self, run: Path, top: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        folder = Path(run) / "tensorboard"
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(run, top, folder / "logged.json")
        self.done = int(self._load_marker().get("generation", -1))
        self.writer = EventFileWriter(str(folder))

    def _grid_png(self, step: int) -> tuple[bytes, int, int] | None:
        """Chain 0's sample grid at a generation as PNG bytes, height, width (None if not stored)."""
        path = self.run / "arrays" / f"grid-gen-{step:06d}.npz"
        if not path.exists():
            return None
        from PIL import Image

        from .plots.images import tile
        from .store import load_npz
        cells = load_npz(path)["array"][0]
        side = int(round(np.sqrt(cells.shape[-1])))
        if side * side != cells.shape[-1]:
            return None   # not square images: nothing to tile
        grid = tile(cells.reshape(len(cells), side, side), ncol=8)
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        return buf.getvalue(), grid.shape[0], grid.shape[1]

    def write(self, gens: list[Generation]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        Value = summary_pb2.Summary.Value
        Metadata = summary_pb2.SummaryMetadata
        text_plugin = Metadata(plugin_data=Metadata.PluginData(plugin_name="text"))
        now = time.time()
        for g in gens:
            values = []
            if g.table is not None:
                values += [Value(tag=k, simple_value=v) for k, v in scalars(g.names, g.table).items()]
            png = self._grid_png(g.step)
            if png is not None:
                image = summary_pb2.Summary.Image(encoded_image_string=png[0], height=png[1], width=png[2],
                                                  colorspace=1)   # greyscale
                values.append(Value(tag="samples", image=image))
            if g.texts:
                text = "\n\n".join(g.texts)   # one string tensor, as TensorBoard's text plugin reads them
                tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                                tensor_shape=tensor_shape_pb2.TensorShapeProto())
                values.append(Value(tag="sample_texts", metadata=text_plugin, tensor=tensor))
            if values:
                self.writer.add_event(event_pb2.Event(wall_time=now, step=g.step,
                                                      summary=summary_pb2.Summary(value=values)))
        self.writer.flush()   # on disk before the marker says so

    def close(self, outcome: str) -> None:
        self.writer.close()


class MlflowSink(Sink):
    """An MLflow run per run directory, in a local SQLite store by default."""

    kind = "mlflow"
    STATUS = {"complete": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}

    def __init__(self, run: Path, top: Path, uri: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # no usage reports from a lab machine
        os.environ.setdefault("DO_NOT_TRACK", "true")
        import logging
        for name in ("mlflow", "alembic"):   # their INFO lines about creating tables are noise here
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient
        run, top = Path(run), Path(top)
        default = uri is None
        self.uri = uri or f"sqlite:///{(top / 'mlflow.db').resolve()}"
        super().__init__(run, top, run / "mlflow.json")
        self.client = MlflowClient(tracking_uri=self.uri)
        mark = self._load_marker()
        self.run_id = None
        if mark.get("tracking_uri") == self.uri and mark.get("run_id"):
            try:
                self.client.get_run(mark["run_id"])
                self.run_id, self.done = mark["run_id"], int(mark.get("generation", -1))
                self.client.update_run(self.run_id, status="RUNNING")
            except Exception:  # noqa: BLE001 - deleted or from another store: start a new MLflow run
                warnings.warn(f"MLflow run {mark['run_id']} named in {self.marker} is not in {self.uri}; "
                              "logging this run again into a new MLflow run", CollapseWarning, stacklevel=2)
        if self.run_id is None:
            self._create(run, top, default)

    def _create(self, run: Path, top: Path, default: bool) -> None:
        """A new MLflow run (experiment: the config's name), with the resolved config as params."""
        from mlflow.entities import Param

        from .config import flat
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        name = str(cfg.get("name") or top.name).split("/")[0] or top.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            exp_id = found.experiment_id
        else:
            where = (top / "mlartifacts").resolve().as_uri() if default else None
            exp_id = self.client.create_experiment(name, artifact_location=where)
        run_name = top.name if run.resolve() == top.resolve() else f"{top.name}/{run.relative_to(top)}"
        made = self.client.create_run(exp_id, run_name=run_name, tags={"model_collapse.run_dir": str(run.resolve())})
        self.run_id, self.done = made.info.run_id, -1
        params = [Param(_key(k), _value(v)) for k, v in flat(cfg).items()]
        for i in range(0, len(params), 100):   # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.save()

    def save(self) -> None:
        self._save_marker(tracking_uri=self.uri, run_id=self.run_id)

    def write(self, gens: list[Generation]) -> None:
        from mlflow.entities import Metric
        ms = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, ms, g.step) for g in gens if g.table is not None
                   for k, v in scalars(g.names, g.table).items()]
        for i in range(0, len(metrics), 1000):   # and at most 1,000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, outcome: str) -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS.get(outcome, "FINISHED"))


def _key(name: str) -> str:
    """An MLflow-safe key (letters, digits, _ - . space : / only)."""
    return re.sub(r"[^\w\-. :/]", "_", name)[:250]


def _value(value) -> str:
    """A config leaf as an MLflow param value (lists in JSON; long ones cut to MLflow's limit)."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 6000 else text[:5990] + " [...]"


def open_sinks(kinds, run: Path, top: Path, mlflow_uri: str | None = None) -> list[Sink]:
    """One sink per tracker named, each caught up with what the run had already committed."""
    sinks: list[Sink] = []
    for kind in dict.fromkeys(kinds):
        sink = TensorBoardSink(run, top) if kind == "tensorboard" else MlflowSink(run, top, mlflow_uri)
        sink.catch_up()
        sinks.append(sink)
    return sinks


@contextlib.contextmanager
def attach(store, kinds, top: Path, mlflow_uri: str | None = None):
    """Log a run's commits to the named trackers while the block runs (nothing when kinds is empty)."""
    if not kinds:
        yield []
        return
    sinks = open_sinks(kinds, store.path, top, mlflow_uri)
    store.sinks = sinks
    outcome = "failed"
    try:
        yield sinks
        outcome = "complete"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        store.sinks = []
        for sink in sinks:
            try:
                sink.close(outcome)
            except Exception as e:  # noqa: BLE001 - closing a tracker must not hide the run's own error
                warnings.warn(f"--log {sink.kind}: could not close ({type(e).__name__}: {e})", CollapseWarning)
