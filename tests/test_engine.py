"""Declared kinds and capabilities, the filter stage, metric parameters and plugins."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_collapse import contracts
from model_collapse.cli import main
from model_collapse.config import validate
from model_collapse.errors import ConfigError

PLUGIN = Path(__file__).parent / "plugin_demo"
BASE = {"chains": 4, "generations": 5, "source": {"kind": "gaussian"}, "model": {"kind": "gaussian"},
        "regime": {"kind": "replace", "n": 200}}


def errors_of(raw) -> str:
    with pytest.raises(ConfigError) as e:
        validate(raw)
    return str(e.value)


def test_mismatches_name_both_sides():
    """Each mismatch is one message naming the component and the source or model it clashes with."""
    gmm = {**BASE, "source": {"kind": "gmm"}, "model": {"kind": "gmm"}}
    assert "metric kl needs a Gaussian or categorical truth; source gmm is neither" in \
        errors_of({**gmm, "metrics": ["kl"]})
    assert "metric kl needs the model to be the truth's family (gaussian); model kde is not" in \
        errors_of({**BASE, "model": {"kind": "kde"}, "metrics": ["kl"]})
    assert "family vae fits image data; source gaussian yields vector data" in \
        errors_of({**BASE, "model": {"kind": "vae"}})
    msg = errors_of({**BASE, "source": {"kind": "gaussian", "mean": [0, 0, 0]}, "metrics": ["wasserstein", "l2"]})
    assert "metric wasserstein needs 1-D data; source gaussian is 3-D" in msg
    assert "metric l2 needs 1-D or 2-D data; source gaussian is 3-D" in msg
    msg = errors_of({**BASE, "model": {"kind": "gaussian", "summary": True}, "filter": {"kind": "random"}})
    assert "filter random needs a model that can sample items" in msg
    assert "metric latent_std needs image data; source gaussian yields vector data" in \
        errors_of({**BASE, "metrics": ["latent_std"]})
    cat = {**BASE, "source": {"kind": "categorical"}, "model": {"kind": "categorical"}}
    validate({**cat, "metrics": ["params", "kl", "nll"]})   # all apply: no error


def test_metric_parameters_are_validated_and_used(run):
    """A metric entry may be a mapping with parameters; bad ones are refused with their path."""
    assert "metrics.1.k: Input should be greater than 0" in errors_of({**BASE, "metrics": ["params", {"name": "tail", "k": -1}]})
    assert "metrics.0.bogus: Extra inputs are not permitted" in errors_of({**BASE, "metrics": [{"name": "tail", "bogus": 1}]})
    assert "listed twice" in errors_of({**BASE, "metrics": ["tail", {"name": "tail", "k": 2}]})
    wide = run({**BASE, "metrics": [{"name": "tail", "k": 1.0}]})["tail"]
    narrow = run({**BASE, "metrics": [{"name": "tail", "k": 3.0}]})["tail"]
    # Generation 0 fits 200 true N(0, 1) draws: mass beyond 1 sd is near 0.317, beyond 3 sd near 0.0027.
    assert abs(wide[0].mean() - 0.3173) < 0.05 and narrow[0].mean() < 0.01


def test_filter_stage_refills_and_records_acceptance(run):
    """A random filter keeping 30% still gives every chain its n samples; accept_rate ~ 0.3 per chain."""
    out = run({**BASE, "chains": 50, "filter": {"kind": "random", "p": 0.3}, "metrics": ["params"]})
    rate = out["accept_rate"]
    assert rate.shape == (5, 50)
    # Binomial: each chain accepts from >= 200/0.3 draws, sd <= sqrt(0.3*0.7/666) = 0.018; 5 sd bound.
    assert np.all(np.abs(rate - 0.3) < 0.09) and abs(rate.mean() - 0.3) < 0.01
    # The random filter is selection-free: E[var] still follows ((N-1)/N)^(g+1) (4 sd over 50 chains).
    var = out["var"][-1]
    assert abs(var.mean() - (199 / 200) ** 5) < 4 * var.std() / np.sqrt(50) + 1e-9


def test_filter_that_cannot_fill_fails_clearly(tmp_path, capsys):
    """A filter that accepts almost nothing stops the run with one message naming the acceptance rate."""
    cfg = tmp_path / "f.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "filter": {"kind": "random", "p": 1e-6, "max_rounds": 3}}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "acceptance rate" in err and "after 3 rounds" in err
    assert yaml.safe_load((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_plugin_by_reference(monkeypatch, tmp_path, run):
    """`kind: package.module:Class` plugs a family, filter and metric in without registering anything."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    raw = {**BASE, "model": {"kind": "mc_plugin_demo:LaplaceConfig"},
           "filter": {"kind": "mc_plugin_demo:CentralConfig", "width": 3.0},
           "metrics": ["params", "nll", {"name": "mc_plugin_demo:spread", "q": 0.75}]}
    out = run(raw)
    assert {"loc", "scale", "nll", "spread", "accept_rate"} <= set(out)
    assert 0.8 < out["accept_rate"].mean() < 1 and np.all(out["scale"] > 0)
    contracts.check_family({"kind": "mc_plugin_demo:LaplaceConfig"}, {"kind": "gaussian"})
    contracts.check_filter({"kind": "mc_plugin_demo:CentralConfig"})
    msg = errors_of({**BASE, "model": {"kind": "mc_plugin_demo:NotAFamily"}})
    assert "family 'mc_plugin_demo:NotAFamily' is not a family config: it must subclass" in msg
    assert "cannot load 'mc_plugin_demo:Nothing'" in errors_of({**BASE, "model": {"kind": "mc_plugin_demo:Nothing"}})
    assert "unknown family 'nope'" in errors_of({**BASE, "model": {"kind": "nope"}})


def test_plugin_package_through_entry_points(tmp_path):
    """A plugin package installed into a separate directory is found through its entry points by the CLI."""
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                            "--no-build-isolation", "--target", str(target), str(PLUGIN)],
                           capture_output=True, text=True, cwd=tmp_path)
    if build.returncode != 0 and "setuptools" in build.stderr.lower():
        pytest.skip(f"no setuptools to build the plugin package here: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "model": {"kind": "laplace"}, "filter": {"kind": "central"},
                                   "metrics": ["params", "spread"]}))
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-m", "model_collapse.cli", "run", str(cfg), "--out",
                           str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header == "generation,chain,accept_rate,loc,scale,spread"
    # Without the plugin on the path the same config is refused with the list of known families.
    env.pop("PYTHONPATH")
    done = subprocess.run([sys.executable, "-m", "model_collapse.cli", "run", str(cfg), "--out",
                           str(tmp_path / "run2"), "--quiet"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "unknown family 'laplace'" in done.stderr
    assert not (tmp_path / "run2").exists()


def test_fast_streams_equal_numpy_seed_sequences():
    """Seeds.rng derives exactly Generator(PCG64(SeedSequence(seed, spawn_key=(role, g)))), in any order."""
    from model_collapse.rng import ROLES, Seeds
    rs = np.random.default_rng(1)
    for seed in (0, 1, 12345, 2**32 - 1, 2**32 + 7, 2**63 + 5):
        seeds = Seeds(seed)
        for g in [*rs.integers(0, 5000, 20).tolist(), 0, 255, 256, 257, 2**31 + 3]:
            for role, r in ROLES.items():
                want = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(r, g))))
                assert np.array_equal(seeds.rng(role, g).random(3), want.random(3)), (seed, g, role)


@pytest.mark.parametrize("metrics", [["params"], ["kl"]])
def test_non_finite_fit_stops_at_last_good_generation(tmp_path, monkeypatch, capsys, metrics):
    """A fit that turns NaN at generation 3 stops the run (exit 1) with generations 0-2 recorded, and the
    run resumes (once the fault is gone) to the numbers of an uninterrupted run."""
    from model_collapse.families.gaussian import GaussianFamily
    from model_collapse.store import read_metrics
    raw = {**BASE, "generations": 6, "metrics": metrics, "checkpoint_seconds": 0}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    real_fit = GaussianFamily.fit

    def fit(self, data, rng):
        real_fit(self, data, rng)
        if self.calls == 3:
            self.mean = self.mean * np.nan
        self.calls += 1
    monkeypatch.setattr(GaussianFamily, "calls", 0, raising=False)
    monkeypatch.setattr(GaussianFamily, "fit", fit)
    assert main(["run", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "generation 3: the fit produced non-finite values" in capsys.readouterr().err
    status = yaml.safe_load((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and status["last_complete_generation"] == 2
    assert sorted(set(read_metrics(tmp_path / "r")[1][:, 0])) == [0, 1, 2]
    monkeypatch.setattr(GaussianFamily, "fit", real_fit)
    assert main(["resume", str(tmp_path / "r"), "--quiet"]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "straight"), "--quiet"]) == 0
    assert (tmp_path / "r" / "metrics.csv").read_bytes() == (tmp_path / "straight" / "metrics.csv").read_bytes()
