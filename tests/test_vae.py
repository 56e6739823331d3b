"""The VAE family on scikit-learn's 8x8 digits with tiny networks (eager; a few compiled-step checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from model_collapse.datasets import load_digits8x8
from model_collapse.errors import ConfigError, DivergenceError
from model_collapse.families.vae import VAEConfig, VAEFamily
from model_collapse.nn.trainer import Trainer

SHAPE, P = (8, 8), 64
TINY = dict(hidden=[32], latent=4, batch=64, compile=False, threads=1)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The 1,500 training digits in the project layout: (1, 1500, 65) uint8, labels last."""
    d = load_digits8x8()
    x = np.concatenate([d.images.reshape(len(d), P), d.labels[:, None].astype(np.uint8)], axis=1)
    return x[None]


def chains(x: np.ndarray, s: int, n: int = 600) -> np.ndarray:
    """The first n items repeated on s chains: (s, n, 65)."""
    return np.repeat(x[:, :n], s, axis=0)


def flat(fam: VAEFamily) -> torch.Tensor:
    """All weights of the family's module as one vector (CPU)."""
    return torch.cat([v.detach().reshape(-1).cpu() for v in fam.model.state_dict().values()])


def fitted(x, seed=0, s=1, **kw) -> VAEFamily:
    """A family fitted once on x (s chains) with rng seed `seed`."""
    fam = VAEFamily(VAEConfig(**{**TINY, **kw}), SHAPE, s)
    fam.fit(chains(x, s), np.random.default_rng(seed))
    return fam


def test_heldout_elbo_improves_with_training(digits):
    one = fitted(digits, epochs=1)
    many = fitted(digits, epochs=25)
    assert np.all(np.isfinite(many.last_loss))
    assert many.last_loss[0] < 0.8 * one.last_loss[0]
    # the loss is recon + KL, both per image
    np.testing.assert_allclose(many.last_loss, many.last_recon + many.last_kl, rtol=1e-5)
    assert many.last_kl[0] > 0


def test_sample_shape_dtype_and_label_column(digits):
    fam = fitted(digits, s=2, epochs=3)
    out = fam.sample(7, np.random.default_rng(1))
    assert out.shape == (2, 7, P + 1) and out.dtype == np.uint8
    assert np.all(out[..., -1] == 255)
    assert out[..., :P].max() > 0                     # not a blank image
    # float16 training data -> un-quantised float16 samples on 0..255
    x16 = chains(digits, 2).astype(np.float16)
    fam.fit(x16, np.random.default_rng(2))
    out16 = fam.sample(7, np.random.default_rng(1))
    assert out16.dtype == np.float16 and np.all(out16[..., -1] == 255)
    px = out16[..., :P].astype(np.float32)
    assert px.min() >= 0 and px.max() <= 255 and np.any(px != np.rint(px))


def test_early_stopping_stops_before_cap_and_records_epochs(digits):
    cap = 200
    fam = fitted(digits, s=2, max_epochs=cap, min_epochs=3, patience=2, min_rel_improvement=0.02)
    assert np.all(fam.last_epochs >= 3) and np.all(fam.last_epochs < cap)
    assert len(fam.last_history) == fam.last_epochs.max()
    np.testing.assert_array_equal(fam.params()["epochs"], fam.last_epochs)
    # each chain keeps its best epoch's weights: the recorded loss is the minimum of its history
    hist = np.array(fam.last_history)
    for c in range(2):
        np.testing.assert_allclose(fam.last_loss[c], hist[:fam.last_epochs[c], c].min(), rtol=1e-6)
    # with no improvement required to continue, the cap is what stops it
    capped = fitted(digits, max_epochs=4, min_epochs=1, patience=50, min_rel_improvement=0.0)
    assert capped.last_epochs[0] == 4


def test_same_seed_same_weights_and_samples(digits):
    a, b = fitted(digits, seed=5, s=2, epochs=2), fitted(digits, seed=5, s=2, epochs=2)
    assert torch.equal(flat(a), flat(b))
    np.testing.assert_array_equal(a.sample(20, np.random.default_rng(9)), b.sample(20, np.random.default_rng(9)))
    c = fitted(digits, seed=6, s=2, epochs=2)
    assert not torch.equal(flat(a), flat(c))


def test_state_dict_round_trip_resumes_exactly(digits):
    a = fitted(digits, seed=1, epochs=2)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert all(v.dtype == np.float32 for k, v in state.items() if k.startswith("w/"))
    b = VAEFamily(a.cfg, SHAPE, 1)
    b.load_state_dict({k: v.copy() for k, v in state.items()})
    np.testing.assert_array_equal(a.sample(30, np.random.default_rng(3)), b.sample(30, np.random.default_rng(3)))
    np.testing.assert_array_equal(a.params()["loss"], b.params()["loss"])
    # the next generation from the restored state matches the uninterrupted one bit for bit
    nxt = a.sample(600, np.random.default_rng(4))
    a.fit(nxt, np.random.default_rng(5))
    b.fit(nxt, np.random.default_rng(5))
    assert torch.equal(flat(a), flat(b))


def test_warm_continues_fresh_reinitialises(digits):
    x = chains(digits, 1)
    warm = fitted(digits, seed=0, epochs=15, init="warm")
    fresh = fitted(digits, seed=0, epochs=15, init="fresh")
    assert torch.equal(flat(warm), flat(fresh))            # generation 0 is the same either way
    for fam in (warm, fresh):
        fam.cfg = fam.cfg.model_copy(update={"epochs": 1})
        fam.fit(x, np.random.default_rng(1))
    new = VAEFamily(VAEConfig(**{**TINY, "epochs": 1}), SHAPE, 1)
    new.fit(x, np.random.default_rng(1))
    assert torch.equal(flat(fresh), flat(new))              # fresh = a brand-new VAE with that rng
    assert not torch.equal(flat(warm), flat(new))
    assert warm.last_loss[0] < 0.9 * fresh.last_loss[0]   # warm keeps what 15 epochs learnt


def test_divergence_raises_and_keeps_last_good_weights(digits):
    fam = fitted(digits, epochs=1)
    good = flat(fam).clone()
    fam.cfg = fam.cfg.model_copy(update={"lr": 1e9})
    with pytest.raises(DivergenceError, match="lower model.lr"):
        fam.fit(chains(digits, 1), np.random.default_rng(1))
    assert torch.equal(flat(fam), good)
    fresh = fitted(digits, epochs=1, init="fresh")
    good = flat(fresh).clone()
    fresh.cfg = fresh.cfg.model_copy(update={"lr": 1e9})
    with pytest.raises(DivergenceError):
        fresh.fit(chains(digits, 1), np.random.default_rng(1))
    assert torch.equal(flat(fresh), good)                  # not the failed fit's new initialisation
    # an injected NaN in the data (float16 storage) is caught too
    bad = chains(digits, 1).astype(np.float16)
    bad[0, 5, 10] = np.nan
    with pytest.raises(DivergenceError, match="non-finite"):
        fitted(bad, epochs=1)


def test_chains_are_independent_models(digits):
    fam = fitted(digits, s=2, epochs=3)
    out = fam.sample(50, np.random.default_rng(0))
    assert not np.array_equal(out[0], out[1])
    assert fam.last_loss[0] != fam.last_loss[1]
    # chain 0's fit does not depend on what chain 1 trains on
    a, b = chains(digits, 2), chains(digits, 2)
    b[1, :, :P] = 255 - b[1, :, :P]
    fa, fb = (VAEFamily(VAEConfig(**{**TINY, "epochs": 2}), SHAPE, 2) for _ in range(2))
    fa.fit(a, np.random.default_rng(7))
    fb.fit(b, np.random.default_rng(7))
    za = fa.encode_mean(digits[:, :50])
    zb = fb.encode_mean(digits[:, :50])
    np.testing.assert_allclose(za[0], zb[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(za[1], zb[1], atol=1e-3)


def test_encode_mean_and_decode(digits):
    fam = fitted(digits, s=3, epochs=2)
    z = fam.encode_mean(digits[:, :40])                   # one shared set for every chain
    assert z.shape == (3, 40, 4) and z.dtype == np.float32
    img = fam.decode(np.zeros((3, 5, 4), np.float32))
    assert img.shape == (3, 5, P) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 255
    with pytest.raises(NotImplementedError):
        fam.log_prob(digits[0, :3])


def test_preset_conv_and_bernoulli_variants(digits):
    deep = fitted(digits, epochs=2, hidden=[48, 16, 12], latent=6)
    assert deep.encode_mean(digits[:, :3]).shape == (1, 3, 6)
    conv = fitted(digits, s=2, epochs=3, arch="conv", channels=[4, 8])
    assert conv.sample(4, np.random.default_rng(0)).shape == (2, 4, P + 1)
    bern = fitted(digits, epochs=3, decoder="bernoulli")
    assert np.isfinite(bern.last_loss).all() and bern.last_recon[0] > 0
    # the same images, a different likelihood: BCE on [0, 1] is far below sum of squares on the normalised scale
    assert bern.last_loss[0] != fitted(digits, epochs=3).last_loss[0]


def test_config_validation():
    with pytest.raises(ValidationError, match="held-out"):
        VAEConfig(val_fraction=0)
    assert VAEConfig(val_fraction=0, epochs=3).epochs == 3
    with pytest.raises(ValidationError):
        VAEConfig(unknown=1)


def test_fixed_epochs_without_holdout_reports_training_loss(digits):
    fam = fitted(digits, val_fraction=0, epochs=2)
    assert fam.last_epochs[0] == 2 and np.isfinite(fam.last_loss[0])
    assert fam.last_history == []


def test_compiled_step_matches_eager(digits):
    eager = fitted(digits, seed=3, s=2, epochs=2, batch=100)
    comp = fitted(digits, seed=3, s=2, epochs=2, batch=100, compile=True)
    torch.testing.assert_close(flat(comp), flat(eager), rtol=1e-3, atol=1e-4)
    assert not torch.equal(flat(comp), flat(fitted(digits, seed=4, s=2, epochs=2, batch=100)))


def test_compile_failure_falls_back_to_eager(digits, monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(Trainer, "_failed", set())
    with pytest.warns(UserWarning, match="training the VAE eagerly"):
        fam = fitted(digits, seed=3, epochs=2, hidden=[24], compile=True)
    eager = fitted(digits, seed=3, epochs=2, hidden=[24], compile=False)
    assert torch.equal(flat(fam), flat(eager))              # the fallback is exactly the eager path


def test_state_dict_of_another_architecture_is_refused(digits):
    state = fitted(digits, epochs=1).state_dict()
    assert any(k.startswith("w/enc.0.") for k in state)            # the module's own state_dict keys
    other = VAEFamily(VAEConfig(**{**TINY, "hidden": [16]}), SHAPE, 1)
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(state)


def test_bf16_precision_trains(digits):
    fp32, bf16 = fitted(digits, epochs=4), fitted(digits, epochs=4, precision="bf16")
    assert np.isfinite(bf16.last_loss).all() and bf16.last_loss[0] < 0.8 * fitted(digits, epochs=1).last_loss[0]
    assert abs(bf16.last_loss[0] - fp32.last_loss[0]) < 0.05 * fp32.last_loss[0]
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="device: cuda"):
        VAEFamily(VAEConfig(**TINY, device="cuda"), SHAPE, 1)
    assert VAEFamily(VAEConfig(**TINY), SHAPE, 1).device.type == "cpu"    # auto


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_and_returns_numpy(digits):
    cpu, gpu = fitted(digits, seed=2, s=2, epochs=2, device="cpu"), fitted(digits, seed=2, s=2, epochs=2, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    np.testing.assert_allclose(gpu.last_loss, cpu.last_loss, rtol=1e-3)
    out = gpu.sample(5, np.random.default_rng(0))
    assert isinstance(out, np.ndarray) and out.shape == (2, 5, P + 1)
    assert all(isinstance(v, np.ndarray) for v in gpu.state_dict().values())
