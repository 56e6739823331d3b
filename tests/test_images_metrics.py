"""Tests for the image classifier, the image metrics and the image figures (fast: 8x8 digits)."""

from __future__ import annotations

import io
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from model_collapse.data import UNLABELLED
from model_collapse.datasets.images import load_digits8x8
from model_collapse.metrics import Context
from model_collapse.metrics import images as im
from model_collapse.nn import classifier as cl
from model_collapse.nn.classifier import Classifier, ClassifierConfig, reference_classifier
from model_collapse.plots import images as pim

SHAPE = (8, 8)
# A tiny MLP, 30 epochs on all 1,500 images (the 297 test digits, other writers, are the judge).
FAST = dict(hidden=[64], batch=64, max_epochs=30, val_fraction=0.0, threads=1)


def layout(images: np.ndarray, labels: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """ImageSet arrays -> one data set (N, P + 1) in the project's layout."""
    return np.column_stack([images.reshape(len(images), -1), labels]).astype(dtype)


def npz_round_trip(state: dict) -> dict:
    """What a checkpoint does to a state dict: savez, then load without pickle."""
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def digits():
    return load_digits8x8("train"), load_digits8x8("test")


@pytest.fixture(scope="module")
def mlp(digits):
    train, _ = digits
    clf = Classifier(ClassifierConfig(**FAST), SHAPE, 10)
    clf.fit(train.images.reshape(len(train), -1), train.labels, seed=1)
    return clf


def ctx_for(samples, generation=0, model=None, train=None, source=None, seed=0, store=None):
    return Context(generation, model, samples, train, source, None, np.random.default_rng(seed), store=store)


# -- classifier ------------------------------------------------------------------------
def test_mlp_reaches_90_percent_on_8x8_test_split(mlp, digits):
    _, test = digits
    acc, loss = mlp.evaluate(test.images.reshape(len(test), -1), test.labels)
    assert acc >= 0.9 and 0 < loss < 1
    labels, probs = mlp.predict(test.images)  # (N, H, W) is accepted too
    assert labels.shape == (len(test),) and probs.shape == (len(test), 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (labels == probs.argmax(1)).all()


def test_fit_is_deterministic_given_the_seed(digits):
    train, _ = digits
    x, y = train.images.reshape(len(train), -1), train.labels
    cfg = ClassifierConfig(**{**FAST, "max_epochs": 3})
    states = []
    for seed in (7, 7, 8):
        clf = Classifier(cfg, SHAPE, 10)
        clf.fit(x, y, seed)
        states.append(clf.state_dict())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(np.array_equal(states[0][k], states[2][k]) for k in states[0])


def test_compiled_training_matches_eager(digits):
    train, _ = digits
    x, y = train.images.reshape(len(train), -1), train.labels
    states = []
    for compile in (True, False):     # the MLP compiles by default (compile=None)
        clf = Classifier(ClassifierConfig(**{**FAST, "max_epochs": 3, "compile": compile}), SHAPE, 10)
        clf.fit(x, y, seed=4)
        states.append(clf.state_dict())
    for k, v in states[0].items():
        np.testing.assert_allclose(v, states[1][k], rtol=1e-3, atol=1e-5)
    assert set(states[0]) == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}


def test_state_dict_round_trip_and_unlabelled_items(mlp, digits):
    _, test = digits
    x = test.images.reshape(len(test), -1)
    clone = Classifier(mlp.cfg, SHAPE, 10)
    clone.load_state_dict(npz_round_trip(mlp.state_dict()))
    np.testing.assert_array_equal(clone.predict(x)[1], mlp.predict(x)[1])
    y = test.labels.copy()
    y[::2] = UNLABELLED  # unlabelled items are skipped by evaluate (and by fit)
    acc, _ = mlp.evaluate(x, y)
    assert acc == pytest.approx(mlp.evaluate(x[1::2], test.labels[1::2])[0])
    info = Classifier(ClassifierConfig(**{**FAST, "max_epochs": 2}), SHAPE, 10).fit(x, y, 0)
    assert info["n_train"] + info["n_val"] == len(y) // 2


def test_float16_input_equals_uint8_input(mlp, digits):
    _, test = digits
    x = test.images.reshape(len(test), -1)
    np.testing.assert_allclose(mlp.predict(x.astype(np.float16))[1], mlp.predict(x)[1], atol=1e-6)


# -- metrics ---------------------------------------------------------------------------
def test_pixels_match_a_direct_computation(digits):
    train, _ = digits
    data = layout(train.images, train.labels)
    samples = np.stack([data[:700], data[700:1400]])  # (S=2, n, P + 1)
    cols = im.pixels(ctx_for(samples))
    v = samples[..., :-1] / 255.0
    np.testing.assert_allclose(cols["pix_mean"], v.mean(axis=(1, 2)))
    np.testing.assert_allclose(cols["pix_std"], v.std(axis=(1, 2)))
    hist = np.stack([cols[f"pix_hist_{b}"] for b in range(10)], 1)
    np.testing.assert_allclose(hist.sum(1), 1)
    direct = np.stack([np.histogram(v[s], bins=10, range=(0, 1))[0] / v[s].size for s in range(2)])
    np.testing.assert_allclose(hist, direct, atol=0.02)  # bin edges differ by float rounding only
    half = im.pixels(ctx_for(samples.astype(np.float16)))
    np.testing.assert_allclose(half["pix_mean"], cols["pix_mean"], rtol=1e-6)
    np.testing.assert_allclose(half["pix_std"], cols["pix_std"], rtol=1e-6)


def test_class_histogram_sums_to_one_and_matches_a_direct_count(mlp, digits):
    _, test = digits
    data = layout(test.images, test.labels)
    eights = data[test.labels == 8]
    collapsed = eights[np.arange(len(data)) % len(eights)]  # a chain whose samples are all 8s
    samples = np.stack([data, collapsed])
    source = SimpleNamespace(reference_classifier=lambda: mlp)
    cols = im.classes(ctx_for(samples, source=source))
    hist = np.stack([cols[f"class_{c}"] for c in range(10)], 1)
    np.testing.assert_allclose(hist.sum(1), 1)
    for s in range(2):
        labels, probs = mlp.predict(samples[s, :, :-1])
        np.testing.assert_allclose(hist[s], np.bincount(labels, minlength=10) / len(labels))
        assert cols["ref_confidence"][s] == pytest.approx(probs.max(1).mean(), rel=1e-6)
    # Real digits are nearly balanced: entropy close to log(10); the collapsed chain is all 8s.
    assert abs(cols["class_entropy"][0] - math.log(10)) < 0.05
    assert cols["top_class"][1] == 8 and cols["top_share"][1] > 0.8 and cols["class_entropy"][1] < 0.7


class FakeVAE:
    """A linear 'encoder' per chain: encode_mean(x) = pixels / 255 @ W[s]."""

    def __init__(self, w):
        self.w = w  # (S, P, L)

    def encode_mean(self, x):
        return np.einsum("snp,spl->snl", x[..., :-1] / 255.0, self.w)

    def state_dict(self):
        return {"w": self.w.copy()}

    def load_state_dict(self, state):
        self.w = np.array(state["w"])


def test_latent_std_uses_the_generation0_encoder_and_survives_resume(digits):
    train, _ = digits
    data = layout(train.images, train.labels)
    samples = np.stack([data[:500], data[500:1000]])
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(2, 64, 3))
    model = FakeVAE(w0.copy())
    assert np.isnan(im.LatentStd()(ctx_for(samples, 1, model))["latent_std"]).all()  # gen 0 never seen
    metric = im.LatentStd()
    direct = lambda x: np.einsum("snp,spl->snl", x[..., :-1] / 255.0, w0).std(axis=1).mean(axis=1)
    np.testing.assert_allclose(metric(ctx_for(samples, 0, model))["latent_std"], direct(samples))
    model.w = rng.normal(size=w0.shape)  # the family is refitted: the metric must not follow it
    later = samples[:, :200]
    np.testing.assert_allclose(metric(ctx_for(later, 1, model))["latent_std"], direct(later))
    resumed = im.LatentStd()
    resumed.load_state_dict(npz_round_trip(metric.state_dict()))
    fresh_model = FakeVAE(rng.normal(size=w0.shape))
    np.testing.assert_allclose(resumed(ctx_for(later, 2, fresh_model))["latent_std"], direct(later))


class FakeStore:
    def __init__(self):
        self.tables: dict[str, list[dict]] = {}

    def add_table(self, name, rows):
        self.tables.setdefault(name, []).extend(rows)


def test_classifier_fixed_epochs_ignore_early_stopping(digits):
    """`epochs` (the shared training config's fixed-epoch protocol) trains exactly that many epochs even where
    held-out accuracy would have stopped it: patience 1 and a target every fit reaches at once."""
    train, _ = digits
    x, y = train.images.reshape(len(train), -1), train.labels
    stopped = Classifier(ClassifierConfig(**{**FAST, "val_fraction": 0.2, "patience": 1, "target_accuracy": 0.01}),
                         SHAPE, 10).fit(x, y, 0)
    fixed = Classifier(ClassifierConfig(**{**FAST, "val_fraction": 0.2, "patience": 1, "target_accuracy": 0.01,
                                           "epochs": 4}), SHAPE, 10).fit(x, y, 0)
    assert stopped["epochs"] == 1 and fixed["epochs"] == 4


def fake_generations(digits, chains=2):
    """Three generations of (train, classifiers): real digits, then noisier ones labelled by
    the previous generation's classifier, as the MNIST protocol labels generated digits."""
    train, _ = digits
    rng = np.random.default_rng(3)
    cfg = ClassifierConfig(**{**FAST, "val_fraction": 0.2, "patience": 5})
    gens, data = [], layout(train.images, train.labels)[None]  # gen 0: shared real data (1, N, P + 1)
    for g in range(3):
        clfs = []
        for s in range(chains):
            d = data[min(s, len(data) - 1)]
            clf = Classifier(cfg, SHAPE, 10)
            clf.fit(d[:, :-1], d[:, -1], seed=10 * g + s)
            clfs.append(clf)
        gens.append((data, clfs))
        noisy = []
        for s in range(chains):
            x = train.images.reshape(len(train), -1) + rng.normal(0, 30 * (g + 1), (len(train), 64))
            x = np.clip(x, 0, 255).astype(np.float16)
            noisy.append(np.column_stack([x, clfs[s].predict(x)[0]]).astype(np.float16))
        data = np.stack(noisy)
    return gens


def run_matrix(metric, gens, start, store, chains=2):
    out = []
    for g in range(start, len(gens)):
        data, clfs = gens[g]
        samples = np.zeros((chains, 1, 65), np.uint8)  # the matrix looks at train, not samples
        ctx = ctx_for(samples, g, SimpleNamespace(classifier=clfs), data, seed=100 + g, store=store)
        out.append(metric(ctx))
    return out


def test_classifier_matrix_fills_incrementally_and_resumes(digits):
    gens = fake_generations(digits)
    store = FakeStore()
    metric = im.ClassifierMatrix(subset=200)
    cols = run_matrix(metric, gens[:2], 0, store)
    state = npz_round_trip(metric.state_dict())
    cols += run_matrix(metric, gens, 2, store)
    g, acc, loss = metric.matrices()
    assert list(g) == [0, 1, 2] and acc.shape == loss.shape == (2, 3, 3)
    assert np.isfinite(acc).all() and np.isfinite(loss).all()  # the full matrix, not only i <= j
    assert (np.diagonal(acc, axis1=1, axis2=2) >= 0.8).all()
    assert np.isnan(cols[0]["acc_prev"]).all() and np.isfinite(cols[2]["acc_prev"]).all()
    np.testing.assert_array_equal(cols[0]["acc_self"], cols[0]["acc_first"])
    np.testing.assert_array_equal(cols[2]["acc_self"], acc[:, 2, 2])
    np.testing.assert_array_equal(cols[2]["acc_prev"], acc[:, 1, 2])
    rows = store.tables["classifier_matrix"]
    keys = {(r["chain"], r["classifier"], r["generation"]) for r in rows}
    assert len(rows) == len(keys) == 2 * 3 * 3  # every entry written exactly once
    assert all(acc[r["chain"], r["classifier"], r["generation"]] == r["accuracy"] for r in rows)
    # The evaluation subset comes from the items the classifier held out.
    data0, clfs0 = gens[0]
    held = {row.tobytes() for row in data0[0][clfs0[0].val_index]}
    assert all(row.tobytes() in held for row in metric.data[0][0])
    # Resume after generation 1: the same generation 2, bit for bit.
    resumed = im.ClassifierMatrix(subset=200)
    resumed.load_state_dict(state)
    again = run_matrix(resumed, gens, 2, FakeStore())
    for k in cols[2]:
        np.testing.assert_array_equal(again[0][k], cols[2][k])
    np.testing.assert_array_equal(resumed.matrices()[1], acc)


# -- reference classifier cache -------------------------------------------------------------
def test_default_reference_cnn_on_8x8_digits(digits, tmp_path):
    train, test = digits
    clf, acc = reference_classifier("digits", SHAPE, train, test, tmp_path)
    assert clf.cfg == cl.REFERENCE_CONFIG and acc >= 0.9


def test_reference_classifier_is_cached_and_a_corrupt_cache_retrains(digits, tmp_path):
    train, test = digits
    cfg = ClassifierConfig(kind="cnn", channels=[8], hidden=[32], max_epochs=5, val_fraction=0, threads=1)
    ref = lambda: reference_classifier("digits", SHAPE, train, test, tmp_path, cfg=cfg)
    before = cl.reference_trainings
    clf, acc = ref()
    assert cl.reference_trainings == before + 1 and 0.5 < acc <= 1
    (path,) = tmp_path.glob("reference-digits-*.pt")
    mtime = path.stat().st_mtime_ns
    clf2, acc2 = ref()
    assert cl.reference_trainings == before + 1 and path.stat().st_mtime_ns == mtime  # loaded, not trained
    assert acc2 == acc
    assert all(np.array_equal(v, clf2.state_dict()[k]) for k, v in clf.state_dict().items())
    for damage in (b"not a torch file", path.read_bytes()[: path.stat().st_size // 2]):
        path.write_bytes(damage)
        clf3, acc3 = ref()
        assert acc3 == acc  # retrained deterministically from the same seed
    assert cl.reference_trainings == before + 3
    assert ref()[1] == acc and cl.reference_trainings == before + 3
    # Other training data (or config) is another cache entry, not a stale hit.
    fewer = type(train)(train.images[:1000], train.labels[:1000], train.classes, train.name)
    reference_classifier("digits", SHAPE, fewer, test, tmp_path, cfg=cfg)
    assert cl.reference_trainings == before + 4 and len(list(tmp_path.glob("reference-digits-*.pt"))) == 2


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MODEL_COLLAPSE_SLOW") != "1", reason="set MODEL_COLLAPSE_SLOW=1")
def test_reference_cnn_reaches_99_percent_on_mnist(tmp_path):
    from model_collapse.datasets import DataError
    from model_collapse.datasets.images import load_mnist
    try:
        train, test = load_mnist("train"), load_mnist("test")
    except DataError as exc:
        pytest.skip(f"MNIST unavailable: {exc}")
    t0 = time.perf_counter()
    clf, acc = reference_classifier("mnist", (28, 28), train, test, tmp_path)
    print(f"reference CNN: test accuracy {acc:.4f} in {time.perf_counter() - t0:.1f} s")
    assert acc >= 0.99


# -- figures ---------------------------------------------------------------------------
def test_gif_has_exactly_one_frame_per_generation(digits, tmp_path):
    train, _ = digits
    same = train.images[:20]
    # Identical grids in a row (a collapsed run) must still give one frame each.
    pngs = [pim.sample_grid(same, tmp_path / f"g{g}.png", ncol=5) for g in range(4)]
    assert Image.open(pngs[0]).size == (5 * 18 + 2, 4 * 18 + 2)
    gif = pim.grids_to_gif(pngs + [train.images[20:40].astype(np.float32)], tmp_path / "s.gif", fps=5,
                           generations=[0, 1, 2, 3, 10], ncol=5)
    with Image.open(gif) as img:
        assert img.n_frames == 5


def test_heatmap_histogram_and_run_figures(tmp_path):
    m = np.array([[0.9, 0.5, np.nan], [0.8, 0.95, 0.6], [np.nan, 0.7, 0.9]])
    assert Image.open(pim.heatmap(m, tmp_path / "h.png", "acc")).format == "PNG"
    hist = np.random.default_rng(0).dirichlet(np.ones(47), size=6)
    assert Image.open(pim.class_histogram_evolution(hist, tmp_path / "c47.png")).format == "PNG"
    run = tmp_path / "run"
    run.mkdir()
    hist10 = np.random.default_rng(1).dirichlet(np.ones(10), size=3)
    lines = ["generation,chain," + ",".join(f"class_{c}" for c in range(10)) + ",class_entropy"]
    lines += [f"{g},0," + ",".join(f"{v:.6f}" for v in hist10[g]) + ",2.0" for g in range(3)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    rows = ["chain,classifier,generation,accuracy,loss"]
    rows += [f"0,{i},{j},{0.9 - 0.1 * abs(i - j):.3f},{0.1 + abs(i - j):.3f}" for i in range(3) for j in range(3)]
    (run / "classifier_matrix.csv").write_text("\n".join(rows) + "\n")
    for g in range(3):
        pim.save_generation_grid(run, g, np.full((4, 8, 8), 60 * g, np.uint8), ncol=2)
    files = pim.plot_image_run(run)
    assert {p.name for p in files} == {"samples.gif", "class_histogram.png", "classifier_accuracy.png",
                                       "classifier_loss.png"}
    with Image.open(run / "figures" / "samples.gif") as img:
        assert img.n_frames == 3
