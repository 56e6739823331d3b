"""A wheel installed where the source tree is not importable runs recipes by name from another directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site dir holding only the wheel's files, environment that imports from there) for a built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed: {build.stderr[-2000:]}")
    wheel = next((tmp / "dist").glob("model_collapse-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "model_collapse/recipes/gaussian-replace.yaml" in names
    assert "model_collapse/recipes/sweeps/gaussian-n-sweep.yaml" in names
    assert "model_collapse/families/gmm/kernel.c" in names
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # -S: no site module, so no .pth file runs and the editable install of this checkout stays invisible;
    # the dependencies come from this environment's site-packages, after the wheel's own directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
           "MPLBACKEND": "Agg"}
    return site, env


def collapse(env, cwd, *args, timeout=300):
    """`python -S -m model_collapse ARGS` in cwd; returns the completed process."""
    return subprocess.run([sys.executable, "-S", "-m", "model_collapse", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_runs_recipes_by_name_from_anywhere(installed, tmp_path):
    """list, run, sweep, report, --version from a directory with no configs/ and no source tree."""
    site, env = installed
    where = subprocess.run([sys.executable, "-S", "-c", "import model_collapse; print(model_collapse.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where
    assert not (tmp_path / "configs").exists()
    listed = collapse(env, tmp_path, "list")
    assert listed.returncode == 0 and "gaussian-replace" in listed.stdout and "gaussian-n-sweep" in listed.stdout
    run = collapse(env, tmp_path, "run", "gaussian-replace", "--out", "r", "generations=3", "chains=5", "--quiet")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "r" / "figures" / "metrics.png").exists()
    sweep = collapse(env, tmp_path, "sweep", "gaussian-n-sweep", "--seeds", "1", "--workers", "1", "--out", "s",
                     "generations=4", "chains=10", "--quiet")
    assert sweep.returncode == 0, sweep.stderr
    assert (tmp_path / "s" / "stats.csv").exists() and (tmp_path / "s" / "figures" / "sweep.png").exists()
    report = collapse(env, tmp_path, "report", "r", "s", "-o", "page.html")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "page.html").stat().st_size > 10_000
    version = collapse(env, tmp_path, "--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "complete"


def test_wheel_declares_the_collapse_command(installed):
    """The console script `collapse` is in the wheel's entry points."""
    site, _ = installed
    entry = next(site.glob("model_collapse-*.dist-info")) / "entry_points.txt"
    assert "collapse = model_collapse.cli:main" in entry.read_text()


def test_recipe_names_and_paths(tmp_path, monkeypatch):
    """A recipe by name, by a checkout path, by any file path; a directory or a missing name: ConfigError."""
    from model_collapse.errors import ConfigError
    from model_collapse.paths import recipe_path, recipes
    assert recipe_path("gaussian-replace").name == "gaussian-replace.yaml"
    assert recipe_path("configs/gaussian-replace.yaml").name == "gaussian-replace.yaml"
    monkeypatch.chdir(tmp_path)   # no configs/ here: the checkout path still resolves to the shipped one
    assert recipe_path("configs/gaussian-replace.yaml") == recipe_path("gaussian-replace")
    mine = tmp_path / "mine.yaml"
    mine.write_text("chains: 1\n")
    assert recipe_path(str(mine)) == mine
    assert recipe_path("gaussian-n-sweep", "sweep").parent.name == "sweeps"
    assert len(recipes()) >= 20 and len(recipes("sweep")) >= 3
    with pytest.raises(ConfigError, match="is a directory"):
        recipe_path(tmp_path)
    with pytest.raises(ConfigError, match="collapse list"):
        recipe_path("no-such-recipe")
