"""The executor registry and the optional executors: Ray (a real local cluster) and Slurm through
submitit (its local executor). Every executor writes the same run stores, with the same numbers."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import yaml

from model_collapse.api import sweep
from model_collapse.errors import ConfigError
from model_collapse.sweeps.executors import EXECUTORS, get_executor
from model_collapse.sweeps.slurm_exec import gigabytes, minutes

TINY = {"name": "tiny", "chains": 3, "generations": 6, "reference_n": 200, "source": {"kind": "gaussian"},
        "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 20}, "metrics": ["params"]}
GRID = {"grid": {"regime.n": [10, 20]}, "seeds": 2}


def write(tmp_path: Path, raw: dict) -> Path:
    """A raw config as tmp_path/exp.yaml."""
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def rows(out: Path) -> list[dict]:
    """sweep.csv as dicts."""
    with open(out / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_runs(a: Path, b: Path) -> None:
    """Two sweeps hold the same index and byte-identical metrics.csv files."""
    assert (a / "sweep.csv").read_bytes() == (b / "sweep.csv").read_bytes()
    for r in rows(a):
        assert r["status"] == "complete", r
        assert (a / r["run_dir"] / "metrics.csv").read_bytes() == (b / r["run_dir"] / "metrics.csv").read_bytes()


def swept(cfg: Path, out: Path, **options) -> None:
    """The grid through the Python API's sweep; every run completes (the CLI's exit 0)."""
    counts = sweep(cfg, out=out, **GRID, **options).counts
    assert counts["complete"] == counts["total"] == 4 and not counts["failed"] and not counts["interrupted"], counts
    assert counts["out"] == out


@pytest.fixture
def local_sweep(tmp_path):
    """The reference: the grid through the local executor."""
    cfg, out = write(tmp_path, TINY), tmp_path / "local"
    swept(cfg, out)
    return cfg, out


def test_registry_is_explicit_and_errors_say_what_to_do(monkeypatch):
    """local, ray and slurm are registered by name; an unknown name or a missing extra is one message."""
    assert list(EXECUTORS) == ["local", "ray", "slurm"]
    assert get_executor("local", workers=3).workers == 3
    with pytest.raises(ConfigError, match="choose from local, ray, slurm"):
        get_executor("dask")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)   # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'model-collapse\[ray\]'"):
        get_executor("ray")


def test_slurm_options_parse():
    """--time in Slurm's formats (rounded up to minutes) and --mem with units."""
    assert [minutes(t) for t in ("90", "1:30", "2:00:00", "1-12", "0-0:30:01")] == [90, 2, 120, 2160, 31]
    assert gigabytes("4G") == 4 and gigabytes("512M") == 0.5 and gigabytes("2048") == 2
    with pytest.raises(ConfigError, match="--time"):
        minutes("soon")
    with pytest.raises(ConfigError, match="--mem"):
        gigabytes("lots")


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit is not installed (pip install 'model-collapse[slurm]')")
def test_slurm_executor_through_submitit_local(tmp_path, local_sweep):
    """The slurm path (submitit jobs, polled) run by submitit's local executor gives the same runs;
    without a Slurm cluster the plain slurm executor says what to do instead."""
    cfg, ref = local_sweep
    out = tmp_path / "slurm"
    swept(cfg, out, executor="slurm", cluster="local", workers=2, time="10", mem="1G")
    same_runs(out, ref)
    assert list((out / ".submitit").glob("*/*_result.pkl"))   # the jobs really went through submitit
    import submitit
    if submitit.SlurmExecutor.affinity() <= 0:
        with pytest.raises(ConfigError, match="no Slurm cluster found"):   # the CLI's exit 2
            sweep(cfg, out=tmp_path / "x", **GRID, executor="slurm")
        assert not (tmp_path / "x").exists()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install 'model-collapse[ray]')")
def test_ray_executor_on_a_real_local_cluster(tmp_path, local_sweep):
    """Ray tasks on a real local cluster (2 CPUs) write the same run stores as the local executor."""
    cfg, ref = local_sweep
    out = tmp_path / "ray"
    swept(cfg, out, executor="ray", workers=2)
    same_runs(out, ref)
    import ray
    assert not ray.is_initialized()   # the cluster started for the sweep was shut down


def test_gpus_per_run_reaches_slurm_and_ray_and_is_refused_where_it_cannot_be_met(tmp_path, monkeypatch):
    """--gpus-per-run: Slurm jobs ask for --gpus-per-task (whole GPUs only); the local executor refuses it; a Ray
    cluster without enough GPUs is one message instead of tasks that would wait for ever."""
    submitit = pytest.importorskip("submitit")
    from model_collapse.sweeps.slurm_exec import SlurmExecutor
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))   # as on a Slurm login node
    seen = {}
    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", lambda self, **kw: seen.update(kw))
    SlurmExecutor(gpus_per_run=2, partition="gpu", folder=str(tmp_path / "s"))._executor()
    assert seen["slurm_gpus_per_task"] == 2 and seen["slurm_partition"] == "gpu"
    with pytest.raises(ConfigError, match="whole GPUs"):
        SlurmExecutor(gpus_per_run=0.5)
    with pytest.raises(ConfigError, match="--gpus-per-run is for --executor ray or slurm"):
        get_executor("local", gpus_per_run=1)
    if importlib.util.find_spec("ray") is None:
        return
    import torch
    if torch.cuda.is_available():
        return                                   # the refusal needs a machine without GPUs
    with pytest.raises(ConfigError, match="the Ray cluster has 0 GPUs"):
        sweep(write(tmp_path, TINY), out=tmp_path / "ray", **GRID, executor="ray", workers=1, gpus_per_run=1)
    import ray
    assert not ray.is_initialized()
