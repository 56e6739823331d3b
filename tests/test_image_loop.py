"""The image loop end to end on scikit-learn's 8x8 digits: collapse direction, figures, determinism."""

import numpy as np
import pytest
from PIL import Image

import model_collapse as mc

TINY = {"chains": 1, "generations": 4, "source": {"kind": "digits"},
        "model": {"kind": "vae", "hidden": [64], "latent": 4, "max_epochs": 25, "min_epochs": 3, "batch": 64,
                  "compile": False, "classifier": {"kind": "mlp", "hidden": [64], "max_epochs": 20}},
        "regime": {"kind": "replace", "n": 1500},
        "metrics": ["params", "pixels", "classes", "latent_std", "classifier_matrix", "grid"],
        "checkpoint_seconds": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One classifier cache for the module (the reference CNN trains once)."""
    return tmp_path_factory.mktemp("cache")


def run(tmp_path, monkeypatch, cache, name, **change):
    """Run TINY (with changes) through the Python API; returns the run dir and its metric columns."""
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(cache))
    done = mc.run({**TINY, "name": name, **change}, out=tmp_path / name)
    assert done.status == "complete"
    df = done.metrics()
    return done.path, {c: df[c].to_numpy(dtype=float) for c in df.columns}


def test_replace_collapses_accumulate_does_not(tmp_path, monkeypatch, cache):
    """Class entropy falls under replace (towards one class) and stays near log 10 under accumulate.

    Tolerance: over 4 generations replace loses > 0.15 nats of class entropy
    (measured ~0.5), accumulate loses < 0.15 (its pool stays mostly real digits).
    """
    _, rep = run(tmp_path, monkeypatch, cache, "replace")
    _, acc = run(tmp_path, monkeypatch, cache, "accumulate", regime={"kind": "accumulate", "n": 1500})
    assert rep["class_entropy"][0] > 2.0  # generation 0 is trained on real digits
    assert rep["class_entropy"][0] - rep["class_entropy"][-1] > 0.15
    assert acc["class_entropy"][0] - acc["class_entropy"][-1] < 0.15
    assert acc["class_entropy"][-1] > rep["class_entropy"][-1]


def test_histograms_figures_and_determinism(tmp_path, monkeypatch, cache):
    """Class histograms sum to 1, the GIF has one frame per generation, same seed -> same metrics."""
    out, a = run(tmp_path, monkeypatch, cache, "a", generations=3)
    _, b = run(tmp_path, monkeypatch, cache, "b", generations=3)
    hist = np.stack([a[f"class_{k}"] for k in range(10)], axis=1)
    assert np.allclose(hist.sum(axis=1), 1.0)
    with Image.open(out / "figures" / "samples.gif") as gif:
        assert gif.n_frames == 3
    for f in ("classifier_accuracy.png", "class_histogram.png", "metrics.png"):
        assert (out / "figures" / f).exists(), f
    for c in ("loss", "pix_mean", "class_entropy", "latent_std"):
        assert np.array_equal(a[c], b[c]), c


def test_wrong_shape_custom_data_is_refused():
    """A data set that is not (S, N, H*W + 1) gets a clear error."""
    from model_collapse.families.labelled import LabelledVAE, LabelledVAEConfig
    from model_collapse.sources import SOURCES
    src = SOURCES["digits"](kind="digits").build(1)
    model = LabelledVAE(LabelledVAEConfig(hidden=[8], latent=2, max_epochs=1, compile=False), src, 1)
    with pytest.raises(Exception, match="pixel|shape|65|64"):
        model.fit(np.zeros((1, 10, 30), np.uint8), np.random.default_rng(0))
