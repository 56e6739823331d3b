"""`--log tensorboard` and `--log mlflow`: what a tracker holds, read back, equals what the run committed,
each generation once, across resumes, late attachment and a tracker that fails mid-run."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import model_collapse as mc
from model_collapse.errors import CollapseError, CollapseWarning
from model_collapse.store import read_metrics

ROOT = Path(__file__).resolve().parents[1]
GAUSS = {"name": "gauss-log", "chains": 6, "generations": 3, "source": {"kind": "gaussian"},
         "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 50}, "metrics": ["params", "kl"],
         "checkpoint_seconds": 0}
TINY_VAE = {"chains": 1, "generations": 2, "source": {"kind": "digits"},
            "model": {"kind": "vae", "hidden": [32], "latent": 4, "max_epochs": 2, "min_epochs": 1, "batch": 64,
                      "compile": False, "threads": 1,
                      "classifier": {"kind": "mlp", "hidden": [32], "max_epochs": 1, "compile": False}},
            "regime": {"kind": "replace", "n": 300}, "metrics": ["params", "pixels", "grid"],
            "checkpoint_seconds": 0}


def need(module: str, extra: str):
    """Skip unless the optional extra is installed."""
    return pytest.importorskip(module, reason=f"{module} is not installed: pip install 'model-collapse[{extra}]' "
                                              "(make test installs it through the test extra)")


def config(tmp_path: Path, raw: dict, name: str = "exp.yaml") -> str:
    """Write a raw config; returns its path."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def medians(run: Path, column: str) -> dict[int, float]:
    """Generation -> median over chains of a metrics.csv column."""
    cols, rows = read_metrics(run)
    return {int(g): float(np.median(rows[rows[:, 0] == g, cols.index(column)])) for g in np.unique(rows[:, 0])}


def events(folder: Path):
    """An EventAccumulator holding everything in a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_once_across_resume(tmp_path):
    """Medians, bands and means per generation; a resumed (extended) run adds only new generations."""
    need("tensorboard", "tensorboard")
    out = tmp_path / "run"
    done = mc.run(config(tmp_path, GAUSS), out=out, figures=False, log=["tensorboard"])
    assert done.resume(generations=5, figures=False, log=["tensorboard"]).status == "complete"
    acc = events(out / "tensorboard")
    tags = acc.Tags()["scalars"]
    assert {"var/median", "var/p05", "var/p95", "var/mean", "kl/median"} <= set(tags)
    expected = medians(out, "var")
    for tag in tags:
        assert [e.step for e in acc.Scalars(tag)] == [0, 1, 2, 3, 4], tag   # each generation once, in order
    got = {e.step: e.value for e in acc.Scalars("var/median")}
    assert got == pytest.approx(expected, rel=1e-6)
    cols, rows = read_metrics(out)
    last = rows[rows[:, 0] == 4, cols.index("var")]
    assert acc.Scalars("var/p95")[-1].value == pytest.approx(np.percentile(last, 95), rel=1e-6)
    assert json.loads((out / "tensorboard" / "logged.json").read_text())["generation"] == 4


def test_tensorboard_failure_then_catch_up(tmp_path, monkeypatch):
    """A tracker that fails mid-run warns and stops, the run finishes; resuming the finished run with
    --log logs what was missed (text samples of a language model included), each generation once."""
    need("tensorboard", "tensorboard")
    from model_collapse import logging_sinks
    real_write = logging_sinks.TensorBoardSink.write

    def flaky(self, gens):
        """Each variant's tracker fails on its first write of generation 1."""
        if gens[0].step == 1 and not getattr(self, "failed", False):
            self.failed = True
            raise OSError("disk full")
        real_write(self, gens)

    monkeypatch.setattr(logging_sinks.TensorBoardSink, "write", flaky)
    out = tmp_path / "ngram"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = mc.run(ROOT / "configs" / "tails-ngram.yaml", out=out, figures=False, log=["tensorboard"],
                      generations=4, chains=2, checkpoint_seconds=0)
    assert done.status == "complete"
    said = [str(w.message) for w in caught if issubclass(w.category, CollapseWarning)]
    assert any("--log tensorboard stopped at generation 1" in m and f"collapse resume {out} --log tensorboard" in m
               for m in said), said
    for variant in ("replace", "accumulate"):
        assert json.loads((out / variant / "tensorboard" / "logged.json").read_text())["generation"] == 0
    monkeypatch.setattr(logging_sinks.TensorBoardSink, "write", real_write)
    assert done.resume(figures=False, log=["tensorboard"]).status == "complete"   # complete: catch up only
    for variant in ("replace", "accumulate"):
        acc = events(out / variant / "tensorboard")
        assert [e.step for e in acc.Scalars("vocab_survival/median")] == [0, 1, 2, 3]
        assert acc.Scalars("vocab_survival/median")[-1].value == pytest.approx(
            medians(out / variant, "vocab_survival")[3], rel=1e-6)
        texts = acc.Tensors("sample_texts")
        assert [t.step for t in texts] == [0, 1, 2, 3]
        stored = (out / variant / "text_samples.csv").read_text().splitlines()[1].split(",", 3)[3].strip('"')
        assert stored[:30] in texts[0].tensor_proto.string_val[0].decode()


def test_tensorboard_sample_images(tmp_path):
    """An image run logs chain 0's sample grid at every generation that stored one, as a decodable PNG."""
    need("tensorboard", "tensorboard")
    out = tmp_path / "vae"
    assert mc.run(config(tmp_path, TINY_VAE), out=out, figures=False, log=["tensorboard"]).status == "complete"
    acc = events(out / "tensorboard")
    images = acc.Images("samples")
    assert [i.step for i in images] == [0, 1]
    with Image.open(io.BytesIO(images[-1].encoded_image_string)) as im:
        im.load()
        assert im.size == (images[-1].width, images[-1].height) and im.width > 8 * 8
    assert "pix_mean/median" in acc.Tags()["scalars"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # MLflow's own use of SQLAlchemy
def test_mlflow_params_metrics_and_resume(tmp_path):
    """One MLflow run per run directory in a local SQLite store: the flattened config as params, every
    metric per generation as steps, continued (not duplicated) by a resume that extends the run."""
    need("mlflow", "mlflow")
    need("sqlalchemy", "mlflow")
    from mlflow.tracking import MlflowClient
    out = tmp_path / "run"
    raw = {**GAUSS, "variants": {"mle": {"model.ddof": 0}, "unbiased": {"model.ddof": 1}}}
    done = mc.run(config(tmp_path, raw), out=out, figures=False, log=["mlflow"])
    assert done.resume(generations=5, figures=False, log=["mlflow"]).status == "complete"
    assert (out / "mlflow.db").exists() and not (Path.cwd() / "mlruns").exists()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gauss-log")
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == ["run/mle", "run/unbiased"]
    for variant in ("mle", "unbiased"):
        mark = json.loads((out / variant / "mlflow.json").read_text())
        run = client.get_run(mark["run_id"])
        assert run.info.status == "FINISHED" and mark["generation"] == 4
        assert run.data.params["regime.n"] == "50"
        assert run.data.params["model.ddof"] == ("1" if variant == "unbiased" else "0")
        assert run.data.params["model.kind"] == "gaussian"
        history = client.get_metric_history(run.info.run_id, "var/median")
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
        got = {m.step: m.value for m in history}
        assert got == pytest.approx(medians(out / variant, "var"), rel=1e-9)   # metrics.csv keeps 10 digits
        assert "var/p95" in run.data.metrics and "kl/mean" in run.data.metrics
    assert os.environ.get("MLFLOW_DISABLE_TELEMETRY") == "true"


def test_missing_tracker_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """log= a tracker whose package is absent: an error (the CLI's exit 2) with the pip command, no run
    directory."""
    from model_collapse import logging_sinks
    monkeypatch.setitem(logging_sinks.INSTALL, "mlflow",
                        ("no_such_module_here", "pip install 'model-collapse[mlflow]'"))
    out = tmp_path / "run"
    with pytest.raises(CollapseError, match=r"pip install 'model-collapse\[mlflow\]'"):
        mc.run(config(tmp_path, GAUSS), out=out, figures=False, log=["mlflow"])
    assert not out.exists()
