"""Shared helpers: run an experiment from a dict into a temp run directory."""

from __future__ import annotations

import os
import tempfile

import pytest

import model_collapse

# Tests never reach a model hub: Hugging Face libraries look only in a cache of this session's own
# (tests that exercise a download serve it from a local HTTP server).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="collapse-hf-home-")


def run_experiment(path, raw: dict):
    """Run raw into path through the Python API (no figures); returns {column: (G, S) float array}."""
    run = model_collapse.run(raw, out=path, figures=False)
    df = run.metrics()
    g = df["generation"].nunique()   # fewer than `generations` when record_every > 1
    return {c: df[c].to_numpy(dtype=float).reshape(g, run.config["chains"]) for c in df.columns}


@pytest.fixture
def run(tmp_path):
    """Fixture form of run_experiment with a fresh directory per call."""
    counter = iter(range(1000))
    return lambda raw: run_experiment(tmp_path / f"run{next(counter)}", raw)
