"""Configuration errors, the CLI's contract, and runs that are killed or interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_collapse.cli import main
from model_collapse.config import load_raw, validate
from model_collapse.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def write(tmp_path, raw) -> Path:
    """Write a raw config to a YAML file."""
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


BASE = {"chains": 3, "generations": 5, "source": {"kind": "gaussian"},
        "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 50}}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_validates(path):
    """Each recipe in configs/ is a valid experiment with a description."""
    exp = validate(load_raw(path))
    assert exp.description


def test_every_error_listed_with_dotted_path():
    """Unknown keys, bad values and cross-field problems are all reported at once."""
    raw = {**BASE, "bogus": 1, "model": {"kind": "gaussian", "ddof": 3, "foo": 2},
           "regime": {"kind": "replace", "n": -5}}
    with pytest.raises(ConfigError) as e:
        validate(raw)
    msg = str(e.value)
    for part in ("bogus", "model.ddof", "model.foo", "regime.n"):
        assert part in msg, part


@pytest.mark.parametrize("change, needle", [
    ({"regime": {"kind": "mix", "n": 10, "truth": 0.5, "fitted": 0.4}}, "sum to 1"),
    ({"source": {"kind": "gaussian", "mean": [0, 0], "cov": [[1, 2], [2, 1]]}}, "positive definite"),
    ({"model": {"kind": "nope"}}, "model"),
    ({"regime": {"kind": "sometimes"}}, "regime"),
    ({"metrics": ["params", "telepathy"]}, "unknown metric 'telepathy'"),
    ({"chains": 0}, "chains"),
    ({"source": {"kind": "gmm", "weights": [0.5, 0.5], "means": [0, 1]},
      "model": {"kind": "gmm", "components": 5}, "regime": {"kind": "replace", "n": 3}}, "components"),
    ({"source": {"kind": "categorical", "k": 4}}, "family gaussian fits vector data; source categorical yields category data"),
])
def test_bad_input_one_clear_message(tmp_path, capsys, change, needle):
    """Bad configs exit 2 with a message naming the problem, and write nothing."""
    out = tmp_path / "run"
    code = main(["run", str(write(tmp_path, {**BASE, **change})), "--out", str(out), "--quiet"])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_override_and_resolved_config(tmp_path, capsys):
    """Dotted overrides apply; the run dir holds the resolved config and prints last."""
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, BASE)), "chains=4", "regime.n=20", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["chains"] == 4 and cfg["regime"]["n"] == 20 and cfg["model"]["ddof"] == 0
    rows = np.loadtxt(out / "metrics.csv", delimiter=",", skiprows=1)
    assert rows.shape[0] == 4 * 5
    assert (out / "figures" / "metrics.png").exists()


def test_existing_run_dir_refused(tmp_path, capsys):
    """A second run into the same directory needs --resume or --overwrite."""
    out = tmp_path / "run"
    cfg = str(write(tmp_path, BASE))
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 0
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["run", cfg, "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_variants_side_by_side(tmp_path):
    """variants run as sub-runs and get a comparison figure."""
    out = tmp_path / "run"
    raw = {**BASE, "variants": {"mle": {"model.ddof": 0}, "unbiased": {"model.ddof": 1}}}
    assert main(["run", str(write(tmp_path, raw)), "--out", str(out), "--quiet"]) == 0
    a = np.loadtxt(out / "mle" / "metrics.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(out / "unbiased" / "metrics.csv", delimiter=",", skiprows=1)
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert (out / "figures" / "compare.png").exists()


LONG = {**BASE, "chains": 50, "generations": 400, "checkpoint_seconds": 0,
        "source": {"kind": "gaussian", "mean": [0, 0]}, "regime": {"kind": "mix", "n": 200, "previous": 0.5,
                                                              "fitted": 0.3, "truth": 0.2},
        "metrics": ["params", "kl", "nll", "tail"]}


def _collapse(*args) -> subprocess.Popen:
    """Start the CLI in a subprocess."""
    return subprocess.Popen([sys.executable, "-m", "model_collapse.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, minimum: int) -> None:
    """Poll (no fixed sleep) until a checkpoint past `minimum` exists."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        gens = [int(p.stem.split("-")[1]) for p in out.glob("checkpoint-*.npz")]
        if gens and max(gens) >= minimum:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_numbers(tmp_path, sig):
    """kill -9 (or Ctrl-C) mid-run, then resume: metrics.csv equals an uninterrupted run's, byte for byte."""
    cfg = str(write(tmp_path, LONG))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(["run", cfg, "--out", str(ref), "--quiet"]) == 0
    proc = _collapse("run", cfg, "--out", str(cut), "--quiet")
    _wait_for_checkpoint(cut, proc, 5)
    os.kill(proc.pid, sig)
    proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "resume" in proc.stderr.read().decode()
    assert main(["resume", str(cut), "--quiet"]) == 0
    assert (ref / "metrics.csv").read_bytes() == (cut / "metrics.csv").read_bytes()


def test_list_shows_recipes(capsys):
    """collapse list prints every recipe with its description."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for p in CONFIGS:
        assert p.stem in out


def test_demo_report_quick(tmp_path):
    """collapse demo writes a report with each recipe's figures and a first/last-generation table."""
    from model_collapse.demo import demo
    report = demo(tmp_path / "demo", quick=True, recipes=["gaussian-85-20"])
    text = report.read_text()
    assert "## gaussian-85-20" in text and "| var |" in text
    for line in text.splitlines():
        if line.startswith("!["):
            assert (report.parent / line.split("(")[1].rstrip(")")).exists(), line
