"""The diffusion family on images: the chain-batched U-Net, class-conditional sampling with classifier-free
guidance, the k-means self-correction of digits (Gillman et al. 2024), and the faults a user can cause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import model_collapse as mc
from model_collapse.config import validate
from model_collapse.errors import ConfigError
from model_collapse.loop import build

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
DIGITS = {"kind": "digits", "classifier": "mlp"}
TINY = {"kind": "diffusion", "channels": [8, 16], "groups": 4, "conditional": True, "guidance": 1.0, "epochs": 2,
        "batch": 64, "steps": 5, "threads": 1}


def experiment(model: dict, n: int = 300, chains: int = 2, **extra):
    return validate({"chains": chains, "source": DIGITS, "model": model, "regime": {"kind": "replace", "n": n},
                     **extra})


def test_unet_chains_are_independent_and_take_their_own_gradient():
    """Chain 0's output and gradient do not change when chain 1's weights and inputs do."""
    from model_collapse.nn.unet import UNet
    net = UNet(2, (8, 8), (8, 16), 16, classes=10, groups=4)
    net.reset_parameters(torch.Generator().manual_seed(0))
    x, t = torch.randn(2, 5, 64), torch.rand(2, 5)
    y = torch.randint(0, 10, (2, 5))

    def chain0(net, x):
        net.zero_grad()
        out = net(x, t, y)
        out[0].square().sum().backward()
        return out[0].detach().clone(), [p.grad[0].clone() for p in net.parameters()]

    out_a, grad_a = chain0(net, x)
    with torch.no_grad():
        for p in net.parameters():
            p[1].add_(torch.randn(p[1].shape))
    x2 = x.clone()
    x2[1] = torch.randn(5, 64)
    out_b, grad_b = chain0(net, x2)
    torch.testing.assert_close(out_a, out_b)
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(a, b)
    assert all(float(p.grad[1].abs().sum()) == 0 for p in net.parameters())


def test_conditional_generation_zero_draws_the_classes_it_is_asked_for():
    """On 1,000 real 8x8 digits (10 epochs), the classes of 500 samples follow the training set's class
    frequencies (within 4 binomial sd), the reference classifier agrees with a sample's label on at least 70%
    (chance: 10%) without guidance, and classifier-free guidance (w = 2) raises the agreement to 90% or more."""
    exp = experiment({**TINY, "channels": [16, 32], "groups": 8, "epochs": 10, "batch": 128, "lr": 2e-3,
                      "steps": 20, "guidance": 0.0}, n=1000, chains=1)
    src, fam, _, _ = build(exp)
    real = src.real(1000, np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    clf = src.reference_classifier()
    freq = np.bincount(real[0, :, -1], minlength=10) / 1000
    agree = {}
    for w in (0.0, 2.0):
        fam.cfg = fam.cfg.model_copy(update={"guidance": w})
        x = fam.sample(500, np.random.default_rng(2))
        assert x.dtype == np.uint8 and x.shape == (1, 500, 65)
        got = np.bincount(x[0, :, -1], minlength=10) / 500
        assert np.all(np.abs(got - freq) < 4 * np.sqrt(freq * (1 - freq) / 500)), (got, freq)
        agree[w] = float((clf.predict(x[0, :, :-1])[0] == x[0, :, -1]).mean())
    assert agree[0.0] >= 0.7 and agree[2.0] >= max(0.9, agree[0.0]), agree


def test_image_size_the_unet_cannot_take_is_one_message(tmp_path):
    """Five resolutions halve an image four times: 8x8 digits cannot, and the run stops before generation 0
    with one message that names the size, the rule and a fix (the CLI prints a ConfigError as that message,
    exit status 2: tests/test_cli.py)."""
    with pytest.raises(ConfigError) as e:
        mc.run({"chains": 1, "source": DIGITS, "model": {**TINY, "channels": [8, 8, 8, 8, 8]},
                "regime": {"kind": "replace", "n": 300}}, out=tmp_path / "r", figures=False)
    msg = str(e.value)
    assert "8x8" in msg and "divisible by 16" in msg and "channels" in msg, msg
    assert not list((tmp_path / "r").glob("checkpoint-*"))


def test_conditional_model_without_labels_is_one_message():
    """A conditional model on a source of vectors is refused at validation; on images whose labels are
    missing (255) the fit stops with one message saying what to do, before training anything."""
    with pytest.raises(ConfigError, match="conditional"):
        validate({"source": {"kind": "toy", "shape": "ring"}, "model": {"kind": "diffusion", "conditional": True},
                  "regime": {"kind": "replace", "n": 100}})
    with pytest.raises(ConfigError, match="denoiser"):
        validate({"source": {"kind": "toy", "shape": "ring"}, "model": {"kind": "diffusion", "denoiser": "unet"},
                  "regime": {"kind": "replace", "n": 100}})
    with pytest.raises(ConfigError, match="only the U-Net takes a label"):
        experiment({**TINY, "denoiser": "mlp"})
    for bad in ({"conditional": False}, {"label_dropout": 0.0}):   # guidance without its unconditional half
        with pytest.raises(ConfigError, match="model.guidance"):
            experiment({**TINY, **bad})
    src, fam, _, _ = build(experiment(TINY))
    data = np.array(src.real(300, np.random.default_rng(0)))
    data[:, 10:20, -1] = 255
    with pytest.raises(ConfigError) as e:
        fam.fit(data, np.random.default_rng(1))
    assert "20 of the 600" in str(e.value) and "conditional: false" in str(e.value), str(e.value)
    assert fam.model is None


def test_kmeans_correction_moves_samples_toward_their_class_centres():
    """gamma 1 maps every sample onto a centre of its own class, gamma 0.5 halfway (its distance to that centre
    halves), gamma 0 leaves it; the columns report the share and the distance moved."""
    from model_collapse.filters.correct import KMeansCorrectFilterConfig
    src, _, _, _ = build(experiment(TINY))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 40, 65)).astype(np.uint8)
    noise[..., -1] = rng.integers(0, 10, (2, 40))
    corr = {g: KMeansCorrectFilterConfig(gamma=g, k=3).build(src) for g in (0.0, 0.5, 1.0)}
    one = corr[1.0].transform(noise, None, rng)
    assert np.array_equal(one[..., -1], noise[..., -1])
    centres, owner = corr[1.0].centres, corr[1.0].owner
    d = np.abs(one[..., None, :-1].astype(float) - centres[None, None]).max(-1)      # (S, n, M)
    nearest = d.argmin(-1)
    assert np.all(d.min(-1) <= 0.501) and np.array_equal(owner[nearest], noise[..., -1])
    half = corr[0.5].transform(noise, None, rng).astype(float)
    target = centres[nearest]
    np.testing.assert_allclose(np.abs(half[..., :-1] - target), np.abs(noise[..., :-1] - target) / 2, atol=0.51)
    assert np.array_equal(corr[0.0].transform(noise, None, rng), noise)
    # unlabelled samples (255) and a class the real data lacks (kept only 0-4 here) go to the nearest centre
    few = KMeansCorrectFilterConfig(gamma=1.0, k=3).build(src)
    keep = few.owner < 5
    few.centres, few.owner = few.centres[keep], few.owner[keep]
    odd = noise.copy()
    odd[0, :20, -1], odd[0, 20:, -1] = 255, 7
    moved = few.transform(odd, None, rng)[0, :, :-1].astype(float)
    nearest_any = few.centres[((odd[0, :, None, :-1] - few.centres[None]) ** 2).sum(-1).argmin(1)]
    assert np.abs(moved - nearest_any).max() <= 0.501
    cols = corr[0.5].columns()
    assert np.all(cols["correct_share"] == 1) and np.all(cols["correct_distance"] > 0)
    assert np.all(corr[0.0].columns()["correct_distance"] == 0)


def test_loop_same_seed_same_metrics_and_kill_minus_nine_resumes_identically(tmp_path):
    """A conditional image loop with the k-means correction: a second run of the same seed, killed with SIGKILL
    once it has written a checkpoint and resumed, writes the first run's metrics.csv byte for byte (if it
    finished before the kill, it must equal it too)."""
    raw = {"name": "dd", "seed": 3, "chains": 2, "generations": 3, "source": DIGITS, "model": TINY,
           "regime": {"kind": "mix", "n": 300, "real": 0.5, "fitted": 0.5}, "checkpoint_seconds": 0,
           "filter": {"kind": "correct-kmeans", "gamma": 0.5, "k": 2}, "metrics": ["params", "pixels", "grid"]}
    mc.run(raw, out=tmp_path / "a", figures=True)
    assert (tmp_path / "a" / "figures" / "samples.gif").stat().st_size > 0
    ref = (tmp_path / "a" / "metrics.csv").read_bytes()
    cfg = tmp_path / "dd.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "model_collapse.cli", "run", str(cfg), "--out", str(out), "--resume", "--quiet",
           "--no-figures"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not list(out.glob("checkpoint-*.npz")):
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.csv").read_bytes() == ref
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
