"""Shared helpers: run an experiment from a dict into a temp run directory."""

from __future__ import annotations

import numpy as np
import pytest

from model_collapse.config import dump, validate
from model_collapse.loop import run_generations
from model_collapse.store import RunStore, read_metrics


def run_experiment(path, raw: dict):
    """Validate and run raw into path; returns {column: (G, S) array}."""
    exp = validate(raw)
    store = RunStore.create(path, dump(exp), overwrite=True)
    run_generations(exp, store, progress=False)
    cols, rows = read_metrics(path)
    g = exp.generations if exp.record_every == 1 else len(np.unique(rows[:, 0]))
    return {c: rows[:, i].reshape(g, exp.chains) for i, c in enumerate(cols)}


@pytest.fixture
def run(tmp_path):
    """Fixture form of run_experiment with a fresh directory per call."""
    counter = iter(range(1000))
    return lambda raw: run_experiment(tmp_path / f"run{next(counter)}", raw)
