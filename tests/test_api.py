"""The Python API: docs/api.md's examples run as written, and Run / Sweep agree with the store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import model_collapse as mc
from model_collapse.errors import ConfigError, RunDirError
from model_collapse.store import read_metrics

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_docs_api_examples_run(tmp_path):
    """Every ```python block of docs/api.md, in order, in a fresh directory: the blocks as one script,
    except a block guarded by `if __name__ == "__main__":` (a sweep: its workers import the main
    module, as they would a user's script), which runs as a script of its own after the others."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    guarded = [b for b in blocks if '__name__ == "__main__"' in b]
    scripts = ["\n".join(b for b in blocks if b not in guarded), *guarded]
    out = ""
    for i, text in enumerate(scripts):
        script = tmp_path / f"example{i}.py"
        script.write_text("import model_collapse as mc\nfrom pathlib import Path\n" + text)
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out += proc.stdout
    assert guarded and "Run('runs/g', status='complete')" in out
    assert "4 runs" in out
    for d in ("runs/g", "runs/file", "runs/dict", "runs/v", "runs/s"):
        assert (tmp_path / d).is_dir(), d
    assert (tmp_path / "g.html").stat().st_size > 10_000


def test_run_metrics_equal_the_store(tmp_path):
    """Run.metrics() holds exactly read_metrics' rows, generation and chain as integers."""
    run = mc.run("gaussian-replace", out=tmp_path / "r", chains=7, generations=4, regime__n=15, figures=False)
    cols, rows = read_metrics(run.path)
    df = run.metrics()
    assert list(df.columns) == cols and df.shape == rows.shape
    np.testing.assert_array_equal(df.to_numpy(float), rows)
    assert df["generation"].dtype.kind == "i" and df["chain"].max() == 6
    assert run.status == "complete" and run.status_info["last_complete_generation"] == 3
    assert run.figures == []   # figures=False drew none
    assert run.plot() and run.figures


def test_overrides_three_ways_are_the_same_run(tmp_path):
    """A dict, a list of key=value strings and `__` keywords give byte-identical metrics."""
    a = mc.run("gaussian-replace", tmp_path / "a", {"regime.n": 12, "chains": 3}, generations=3, figures=False)
    b = mc.run("gaussian-replace", tmp_path / "b", ["regime.n=12", "chains=3"], generations=3, figures=False)
    c = mc.run("gaussian-replace", tmp_path / "c", regime__n=12, chains=3, generations=3, figures=False)
    texts = {(r.path / "metrics.csv").read_bytes() for r in (a, b, c)}
    assert len(texts) == 1


def test_resume_extends_to_the_uninterrupted_numbers(tmp_path):
    """run(5 generations) then .resume(generations=9) equals a 9-generation run, byte for byte."""
    ref = mc.run("gaussian-replace", tmp_path / "ref", chains=4, generations=9, figures=False)
    cut = mc.run("gaussian-replace", tmp_path / "cut", chains=4, generations=5, figures=False)
    cut.resume(generations=9, figures=False)
    assert (cut.path / "metrics.csv").read_bytes() == (ref.path / "metrics.csv").read_bytes()
    with pytest.raises(RunDirError, match="regime.n"):
        cut.resume(regime__n=7)


def test_open_run_refuses_what_is_not_a_run(tmp_path):
    """open_run of a missing path or a folder without config.yaml: RunDirError saying what to do."""
    with pytest.raises(RunDirError, match="not a directory"):
        mc.open_run(tmp_path / "missing")
    with pytest.raises(RunDirError, match="no config.yaml"):
        mc.open_run(tmp_path)
    with pytest.raises(RunDirError, match="no sweep.csv"):
        mc.open_sweep(tmp_path)


def test_bad_recipe_types_and_names(tmp_path):
    """A recipe that is neither a name, a path nor a dict, or an unknown name: ConfigError, nothing written."""
    with pytest.raises(ConfigError, match="a recipe is"):
        mc.run(42, out=tmp_path / "x")
    with pytest.raises(ConfigError):
        mc.run("no-such-recipe", out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_importing_the_api_stays_light():
    """`import model_collapse` loads neither pandas, torch nor matplotlib (start-up stays fast)."""
    code = "import sys, model_collapse; print(sorted(m for m in ('pandas', 'torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "[]"


def test_no_module_imports_the_cli():
    """The CLI is a layer on top: no module of the package imports cli.py."""
    src = Path(mc.__file__).parent
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py") if p.name not in ("cli.py", "__main__.py")
                 and re.search(r"from \.+cli import|import model_collapse\.cli|from model_collapse\.cli", p.read_text())]
    assert offenders == []
