"""The diffusion family (DDPM and flow matching of vectors), the 2-D toy truths, mode metrics and the
self-correcting filter (Gillman et al. 2024)."""

from __future__ import annotations

import numpy as np
import pytest

import model_collapse as mc
from model_collapse.config import validate
from model_collapse.errors import ConfigError
from model_collapse.loop import build
from model_collapse.metrics.distribution import Context
from model_collapse.metrics.modes import mmd, modes, sliced_wasserstein

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
RING = {"kind": "toy", "shape": "ring", "std": 0.15}


def fitted(source, model, n, seed=0):
    exp = validate({"chains": 2, "source": source, "model": {"kind": "diffusion", "threads": 1, **model},
                    "regime": {"kind": "replace", "n": n}})
    src, fam, _, _ = build(exp)
    x = src.real(n, np.random.default_rng(seed))
    fam.fit(x, np.random.default_rng(seed + 1))
    return exp, src, fam


@pytest.mark.parametrize("objective, sampler, tol", [("flow", "euler", 0.1), ("flow", "heun", 0.1),
                                                     ("ddpm", "ancestral", 0.1), ("ddpm", "ddim", 0.25)])
def test_generation_zero_learns_a_gaussians_mean_and_variance(objective, sampler, tol):
    """On N(2, 0.5^2) (3,000 points, 600 steps), 4,000 samples of each chain have their mean within 0.1 (0.2 sd)
    and their sd within 10%; DDIM's 30 deterministic steps, which amplify the error of the barely trained noisiest
    levels, within 0.25 and 25%."""
    _, _, fam = fitted({"kind": "gaussian", "mean": [2.0], "std": [0.5]},
                       {"objective": objective, "sampler": sampler, "hidden": [32, 32], "epochs": 100, "batch": 512,
                        "steps": 30, "timesteps": 100}, 3000)
    y = fam.sample(4000, np.random.default_rng(5))[..., 0]
    assert np.all(np.abs(y.mean(1) - 2.0) < tol), y.mean(1)
    assert np.all(np.abs(y.std(1) / 0.5 - 1) < tol), y.std(1)


@pytest.mark.parametrize("objective, tol", [("flow", 0.02), ("ddpm", 0.08)])
def test_ode_density_integrates_to_one_and_scores_held_out_data_as_the_truth_does(objective, tol):
    """log_prob of a model of N(2, 0.5^2) (the probability-flow ODE's, 50 steps): its density sums to 1 on a fine
    grid (within 1e-3: an invertible map of the noise, every step's log-determinant exact), and the model's
    mean NLL of 4,000 held-out points is the truth's own on the same points within 0.02 nats for flow matching
    (measured 0.001-0.003) and 0.08 for the DDPM, whose probability-flow ODE lies further from its samples
    (measured 0.03-0.04; Song et al. 2021 report the same gap between the ODE's and the SDE's likelihoods)."""
    _, src, fam = fitted({"kind": "gaussian", "mean": [2.0], "std": [0.5]},
                         {"objective": objective, "hidden": [32, 32], "epochs": 100, "batch": 512, "timesteps": 100},
                         3000)
    grid = np.linspace(-2, 6, 2001)
    mass = np.exp(fam.log_prob(grid[:, None])).sum(1) * (grid[1] - grid[0])
    assert np.all(np.abs(mass - 1) < 1e-3), mass
    ref = src.reference(4000, np.random.default_rng(9))
    gap = -fam.log_prob(ref).mean(1) + src.truth.log_prob(ref)[0].mean()
    assert np.all(gap > -tol) and np.all(gap < tol), gap


@pytest.fixture(scope="module")
def ring_fit():
    return fitted(RING, {"hidden": [64, 64], "epochs": 60, "batch": 256, "steps": 20}, 4000)


def test_ode_density_agrees_with_a_kde_of_the_models_samples(ring_fit):
    """On the ring, the ODE's NLL of 2,000 held-out points is what scipy's gaussian_kde of 10,000 of the model's
    own samples (50 Euler steps) gives them, within 0.05 nats (measured 0.002 and 0.015): the density is the
    samples' density, not only a normalised one."""
    from scipy.stats import gaussian_kde
    exp, src, fam = ring_fit
    ref = src.reference(2000, np.random.default_rng(3))
    ode = -fam.log_prob(ref).mean(1)
    fam.cfg = fam.cfg.model_copy(update={"steps": 50})
    try:
        y = fam.sample(10000, np.random.default_rng(7))
    finally:
        fam.cfg = fam.cfg.model_copy(update={"steps": 20})
    kde = np.array([-np.log(gaussian_kde(y[c].T, bw_method=0.05)(ref.T)).mean() for c in range(2)])
    assert np.all(np.abs(ode - kde) < 0.05), (ode, kde)


def test_generation_zero_covers_all_eight_modes_of_the_ring(ring_fit):
    """8 Gaussians on a ring: every mode holds its share of high-quality samples, most samples are near one."""
    exp, src, fam = ring_fit
    y = fam.sample(4000, np.random.default_rng(2))
    ctx = Context(0, fam, y, None, src, src.reference(2000, np.random.default_rng(3)), np.random.default_rng(4),
                  None, exp)
    cols = modes(ctx)
    assert (cols["modes_covered"] == 8).all() and (cols["quality"] > 0.4).all(), cols
    assert (sliced_wasserstein(ctx)["sliced_w1"] < 0.15).all() and (np.abs(mmd(ctx)["mmd2"]) < 0.01).all()


def test_mode_metrics_on_exact_truth_samples():
    """Samples of the truth itself: all modes covered, ~99.7% within 3 sd (chi2(2) puts 98.9% within 3 sd in
    2-D), sliced W1 and MMD near 0; a sample set missing half the modes covers half."""
    exp = validate({"chains": 3, "source": {"kind": "toy", "shape": "grid"}, "model": {"kind": "gmm"},
                    "regime": {"kind": "replace", "n": 10}})
    src = build(exp)[0]
    y = src.real(5000, np.random.default_rng(0))
    ctx = Context(0, None, y, None, src, src.reference(3000, np.random.default_rng(1)), None, None, exp)
    cols = modes(ctx)
    assert (cols["mode_coverage"] == 1).all() and np.allclose(cols["quality"], 1 - np.exp(-4.5), atol=0.005)
    assert (sliced_wasserstein(ctx)["sliced_w1"] < 0.05).all() and (np.abs(mmd(ctx)["mmd2"]) < 2e-3).all()
    left = np.take_along_axis(y, np.argsort(y[:, :, 0], axis=1)[:, :2000, None], axis=1)   # 2 of 5 columns
    assert np.allclose(modes(Context(0, None, left, None, src, None, None, None, exp))["mode_coverage"], 0.4)


def test_correction_moves_outliers_into_the_balls_and_reports_it():
    """gamma 1 puts every sample within k sd of a mode; gamma 0.5 halves the way; inside ones never move."""
    exp = validate({"chains": 2, "source": RING, "model": {"kind": "gaussian"},
                    "filter": {"kind": "correct", "gamma": 1.0}, "regime": {"kind": "replace", "n": 10}})
    src, _, _, corr = build(exp)
    x = np.random.default_rng(0).normal(0, 2, (2, 3000, 2))
    y = corr.transform(x, None, None)
    ctx = Context(0, None, y, None, src, None, None, None, exp)
    assert (modes(ctx)["quality"] > 0.999).all()
    cols = corr.columns()
    inside = np.linalg.norm(y - x, axis=-1) == 0
    assert np.allclose(cols["correct_share"], 1 - inside.mean(1)) and (cols["correct_distance"] > 0).all()
    half = build(validate({**exp.model_dump(), "filter": {"kind": "correct", "gamma": 0.5}}))[3]
    z = half.transform(x, None, None)
    assert np.allclose(z - x, 0.5 * (y - x))


def test_loop_replace_drifts_accumulate_holds_correction_holds(tmp_path):
    """Small data (200 points a generation, 4 generations, 3 chains): the sliced distance to the truth grows
    under replace, stays near generation 0's when accumulating, and the correction with gamma 1 keeps every
    mode covered; the filter's columns land in metrics.csv."""
    base = {"seed": 0, "chains": 3, "generations": 5, "source": RING, "reference_n": 1000,
            "model": {"kind": "diffusion", "hidden": [64, 64], "epochs": 40, "batch": 100, "threads": 1, "steps": 10},
            "metrics": ["modes", "sliced_wasserstein"]}
    out = {}
    for name, extra in [("replace", {"regime": {"kind": "replace", "n": 200}}),
                        ("accumulate", {"regime": {"kind": "accumulate", "n": 200}}),
                        ("correct", {"regime": {"kind": "replace", "n": 200},
                                     "filter": {"kind": "correct", "gamma": 1.0}})]:
        df = mc.run({**base, **extra}, out=tmp_path / name, figures=False).metrics()
        out[name] = df.groupby("generation").mean(numeric_only=True)
    sw = {k: v["sliced_w1"].to_numpy() for k, v in out.items()}
    assert sw["replace"][-1] - sw["replace"][0] > 2 * abs(sw["accumulate"][-1] - sw["accumulate"][0]), sw
    assert (out["correct"]["mode_coverage"] > 0.9).all() and "correct_share" in out["correct"]


def test_same_seed_same_metrics_and_resume_continues_exactly(tmp_path):
    raw = {"seed": 2, "chains": 2, "generations": 4, "source": RING, "reference_n": 500,
           "model": {"kind": "diffusion", "hidden": [16], "epochs": 5, "batch": 64, "threads": 1, "steps": 5,
                     "init": "warm"},
           "regime": {"kind": "mix", "n": 200, "real": 0.5, "fitted": 0.5}, "metrics": ["params", "modes"],
           "checkpoint_seconds": 0}
    a = mc.run(raw, out=tmp_path / "a", figures=True)     # the ODE's density of chain 0 against the truth's
    assert (tmp_path / "a" / "figures" / "density.png").stat().st_size > 0
    mc.run(raw, out=tmp_path / "b", figures=False)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    mc.run({**raw, "generations": 2}, out=tmp_path / "c", figures=False)
    mc.open_run(tmp_path / "c").resume(generations=4, figures=False)
    assert (tmp_path / "c" / "metrics.csv").read_bytes() == (tmp_path / "a" / "metrics.csv").read_bytes()
    assert a.status == "complete"


def test_bad_sampler_is_one_message():
    with pytest.raises(ConfigError, match="sampler heun is not a ddpm sampler; choose from auto, ancestral, ddim"):
        validate({"source": RING, "model": {"kind": "diffusion", "objective": "ddpm", "sampler": "heun"},
                  "regime": {"kind": "replace", "n": 10}})
    with pytest.raises(ConfigError, match="filter correct needs a source with known mode locations"):
        validate({"source": {"kind": "toy", "shape": "moons"}, "model": {"kind": "diffusion"},
                  "filter": {"kind": "correct"}, "regime": {"kind": "replace", "n": 10}})


def test_truth_nll_of_exact_samples_is_the_truths_entropy():
    """Exact samples of the 5 x 5 grid score the mixture's entropy, log 25 + log(2 pi e sd^2) for separated
    modes (within 4 standard errors of 5,000 draws); exact checkerboard samples score log 13 (uniform on 13
    unit squares) with none outside, and points off the board are counted out."""
    from model_collapse.metrics.modes import truth_nll
    exp = validate({"chains": 2, "source": {"kind": "toy", "shape": "grid"}, "model": {"kind": "gmm"},
                    "regime": {"kind": "replace", "n": 10}})
    src = build(exp)[0]
    y = src.real(5000, np.random.default_rng(0))
    h = np.log(25) + np.log(2 * np.pi * np.e * 0.05 ** 2)
    got = truth_nll(Context(0, None, y, None, src, None, None, None, exp))
    assert np.all(np.abs(got["truth_nll"] - h) < 4 / np.sqrt(5000)) and (got["truth_outside"] == 0).all()
    exp = validate({"chains": 2, "source": {"kind": "toy", "shape": "checkerboard"}, "model": {"kind": "gmm"},
                    "regime": {"kind": "replace", "n": 10}})
    src = build(exp)[0]
    y = src.real(1000, np.random.default_rng(0))
    y[:, :100] = 10.0                                       # 10% far off the board
    got = truth_nll(Context(0, None, y, None, src, None, None, None, exp))
    assert np.allclose(got["truth_nll"], np.log(13)) and np.allclose(got["truth_outside"], 0.1)


@pytest.mark.parametrize("shape", ["checkerboard", "moons"])
def test_density_figure_of_a_truth_without_moments_or_density(tmp_path, shape):
    """The checkerboard's truth has a density but no moments (the grid is the box of its draws); the moons have
    no density at all (the figure shows samples): both draw density.png."""
    raw = {"seed": 0, "chains": 1, "generations": 1, "source": {"kind": "toy", "shape": shape}, "reference_n": 200,
           "model": {"kind": "diffusion", "hidden": [8], "epochs": 1, "batch": 64, "threads": 1, "steps": 2,
                     "likelihood_steps": 2},
           "regime": {"kind": "replace", "n": 100}, "metrics": ["params"]}
    mc.run(raw, out=tmp_path / shape, figures=True)
    assert (tmp_path / shape / "figures" / "density.png").stat().st_size > 0
