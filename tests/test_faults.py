"""Safe against faults: damaged checkpoints, unusable run directories, failures, changed configs, kill -9.

Every test compares metrics.csv byte for byte with an uninterrupted run of the same
config: a fault may cost time, never change a number.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_collapse import loop
from model_collapse.cli import main
from model_collapse.config import dump, load_raw, validate
from model_collapse.errors import CollapseWarning
from model_collapse.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

SMALL = {"name": "small", "chains": 4, "generations": 12, "checkpoint_seconds": 0, "reference_n": 500,
         "source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 30},
         "metrics": ["params", "kl"]}


def write(tmp_path: Path, raw: dict, name: str = "exp") -> Path:
    """Write a raw config to tmp_path/<name>.yaml."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def straight(tmp_path: Path, raw: dict, name: str) -> bytes:
    """metrics.csv of an uninterrupted run of raw (store + loop, no CLI, no figures)."""
    exp = validate(raw)
    store = RunStore.create(tmp_path / name, dump(exp))
    loop.run_generations(exp, store, progress=False)
    return (tmp_path / name / "metrics.csv").read_bytes()


def hashes(run: Path) -> dict[str, str]:
    """sha256 of every file under a run directory, by relative path."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess to completion (stdout and stderr captured as text)."""
    return subprocess.run([sys.executable, "-m", "model_collapse.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def interrupted_run(tmp_path: Path, raw: dict = SMALL, name: str = "cut") -> Path:
    """A run as a kill leaves it between generations: every checkpoint written, status still 'running'."""
    out = tmp_path / name
    assert main(["run", str(write(tmp_path, raw, name)), "--out", str(out), "--quiet"]) == 0
    store = RunStore(out)
    store.set_status("running", store.status()["last_complete_generation"])
    return out


def checkpoints(run: Path) -> list[Path]:
    """The run's checkpoint files, oldest first."""
    return sorted(run.glob("checkpoint-*.npz"))


# -- (a) a damaged newest checkpoint ----------------------------------------------------------


def test_truncated_newest_checkpoint_falls_back_with_warning(tmp_path):
    """The two newest checkpoints are kept; a truncated newest one resumes from the previous one
    with a warning naming it, and the finished metrics.csv equals an uninterrupted run's."""
    ref = straight(tmp_path, SMALL, "ref")
    out = interrupted_run(tmp_path)
    kept = checkpoints(out)
    assert [p.name for p in kept] == ["checkpoint-000010.npz", "checkpoint-000011.npz"]
    data = kept[-1].read_bytes()
    kept[-1].write_bytes(data[: len(data) // 2])
    done = cli("resume", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "checkpoint-000011.npz" in warning[0] and "checkpoint-000010.npz" in warning[0]
    assert "Traceback" not in done.stderr
    assert (out / "metrics.csv").read_bytes() == ref
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    assert (out / "checkpoint-000011.npz.corrupt").exists()  # kept for inspection, never read again


@pytest.mark.parametrize("damage", ["flipped byte", "empty", "not a zip", "missing key"])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, damage):
    """Any unreadable newest checkpoint (bad CRC, empty, garbage, a key missing) falls back the same way."""
    ref = straight(tmp_path, SMALL, "ref")
    out = interrupted_run(tmp_path)
    newest = checkpoints(out)[-1]
    if damage == "flipped byte":
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
    elif damage == "empty":
        newest.write_bytes(b"")
    elif damage == "not a zip":
        newest.write_bytes(b"\x93NUMPY garbage" * 100)
    else:
        with np.load(newest) as z:
            arrays = {k: z[k] for k in z.files if k != "__csv_bytes"}
        with open(newest, "wb") as f:
            np.savez(f, **arrays)
    with pytest.warns(CollapseWarning, match="checkpoint-000011.npz"):
        assert main(["resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.csv").read_bytes() == ref


def test_rows_without_a_checkpoint_are_discarded(tmp_path):
    """Killed after rows were appended but before the first checkpoint landed: the run starts over
    cleanly (no duplicated rows), leaving only a torn temp file behind."""
    ref = straight(tmp_path, SMALL, "ref")
    out = interrupted_run(tmp_path)
    for p in checkpoints(out):
        p.unlink()
    (out / ".checkpoint-000000.npz.tmp999").write_bytes(b"torn")
    assert main(["resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.csv").read_bytes() == ref
    assert not list(out.glob(".checkpoint-*"))


# -- (b) no readable checkpoint ---------------------------------------------------------------


def test_no_readable_checkpoint_refuses_and_changes_nothing(tmp_path, capsys):
    """Checkpoints exist but none can be read: one message naming them, exit 1, every byte unchanged."""
    out = interrupted_run(tmp_path)
    old, new = checkpoints(out)
    new.write_bytes(new.read_bytes()[:100])
    old.write_bytes(b"not a checkpoint")
    with open(out / "metrics.csv", "ab") as f:
        f.write(b"12,0,half a row")  # uncommitted rows must survive the refusal too
    before = hashes(out)
    capsys.readouterr()
    assert main(["resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert old.name in err and new.name in err and "--overwrite" in err
    assert hashes(out) == before


# -- (c) an unusable --out --------------------------------------------------------------------


def _refused_out(tmp_path, capsys, out: Path) -> str:
    """Run SMALL into out; assert exit 2 with one line and return it."""
    cfg = write(tmp_path, SMALL)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write run directory {out}: "), err
    return err


def test_out_under_a_regular_file(tmp_path, capsys):
    """--out through a regular file (fails even as root), or a file itself: one line, exit 2, nothing made."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused_out(tmp_path, capsys, blocker / "run")
    _refused_out(tmp_path, capsys, blocker)
    assert blocker.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "file"]


def test_out_not_half_created(tmp_path, capsys):
    """When a deep --out fails after its parents were made, the parents go again."""
    _refused_out(tmp_path, capsys, tmp_path / "a" / "b" / ("x" * 300))  # name too long for the file system
    assert not (tmp_path / "a").exists()


def test_out_subprocess_has_no_traceback(tmp_path):
    """The same through the real command: exactly one line on stderr."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = cli("run", str(write(tmp_path, SMALL)), "--out", str(blocker / "run"), "--quiet")
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot write run directory") and done.stderr.count("\n") == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_out_under_read_only_dir(tmp_path, capsys):
    """--out under a directory without write permission: one line, exit 2, nothing made."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused_out(tmp_path, capsys, ro / "a" / "run")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# -- (d) any exception marks the run failed ---------------------------------------------------


def test_exception_in_fit_marks_failed_then_resumes(tmp_path, monkeypatch, capsys):
    """A fit that raises at generation 2: one line (exit 1, no traceback), status.json 'failed' with the
    message; resume finishes exactly."""
    ref = straight(tmp_path, SMALL, "ref")
    built = loop.build

    def build(exp):
        source, model, regime, filt = built(exp)
        fit, calls = model.fit, []

        def failing(train, rng):
            if len(calls) == 2:
                raise RuntimeError("injected failure at generation 2")
            calls.append(1)
            return fit(train, rng)

        model.fit = failing
        return source, model, regime, filt

    monkeypatch.setattr(loop, "build", build)
    out = tmp_path / "cut"
    capsys.readouterr()
    assert main(["run", str(write(tmp_path, SMALL)), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "injected failure at generation 2" in err and "Traceback" not in err and len(err.splitlines()) == 1
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed"
    assert "injected failure at generation 2" in status["message"]
    assert status["last_complete_generation"] == 1
    monkeypatch.setattr(loop, "build", built)
    assert main(["resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.csv").read_bytes() == ref


# -- (e) resuming with a different config -----------------------------------------------------


def test_changed_config_refused_with_every_difference(tmp_path, capsys):
    """Changed metrics and regime.n: exit 2, each listed as `key: stored -> new`, nothing altered."""
    out = interrupted_run(tmp_path)
    before = hashes(out)
    capsys.readouterr()
    assert main(["resume", str(out), "metrics=[params]", "regime.n=60", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "metrics: [params, kl] -> [params]" in err
    assert "regime.n: 30 -> 60" in err
    assert hashes(out) == before
    # the same through `run --resume` with an edited config file
    changed = write(tmp_path, {**SMALL, "regime": {"kind": "replace", "n": 60}}, "changed")
    assert main(["run", str(changed), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "regime.n: 30 -> 60" in err and "metrics" not in err.split("\n", 1)[1]
    assert hashes(out) == before


def test_generations_may_grow_not_shrink(tmp_path, capsys):
    """A complete run extended with more generations equals a straight run of the larger count;
    unchanged it stays complete and untouched; fewer generations are refused."""
    ref = straight(tmp_path, {**SMALL, "generations": 12}, "ref")
    out = tmp_path / "cut"
    assert main(["run", str(write(tmp_path, {**SMALL, "generations": 7})), "--out", str(out), "--quiet"]) == 0
    results = {k: v for k, v in hashes(out).items() if not k.startswith("figures")}
    assert main(["resume", str(out), "--quiet"]) == 0  # complete and unchanged: skipped
    assert {k: v for k, v in hashes(out).items() if not k.startswith("figures")} == results
    capsys.readouterr()
    assert main(["resume", str(out), "generations=5", "--quiet"]) == 2
    assert "generations: 7 -> 5" in capsys.readouterr().err
    assert main(["resume", str(out), "generations=12", "--quiet"]) == 0
    assert (out / "metrics.csv").read_bytes() == ref
    assert yaml.safe_load((out / "config.yaml").read_text())["generations"] == 12
    assert json.loads((out / "status.json").read_text())["last_complete_generation"] == 11


def test_variants_extend_and_refuse(tmp_path, capsys):
    """An experiment with variants: a changed key is refused; a grown `generations` extends every variant."""
    raw = {**SMALL, "generations": 4, "variants": {"mle": {"model.ddof": 0}, "unbiased": {"model.ddof": 1}}}
    out = tmp_path / "cut"
    assert main(["run", str(write(tmp_path, raw)), "--out", str(out), "--quiet"]) == 0
    before = hashes(out)
    capsys.readouterr()
    assert main(["resume", str(out), "regime.n=31", "--quiet"]) == 2
    assert "regime.n: 30 -> 31" in capsys.readouterr().err
    edited = write(tmp_path, {**raw, "variants": {"mle": {"model.ddof": 0}, "unbiased": {"model.ddof": 0}}}, "edited")
    assert main(["run", str(edited), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "variants.unbiased.model.ddof: 1 -> 0" in err and "name:" not in err
    assert hashes(out) == before
    assert main(["resume", str(out), "generations=6", "--quiet"]) == 0
    ref = tmp_path / "ref"
    assert main(["run", str(write(tmp_path, {**raw, "generations": 6}, "ref")), "--out", str(ref), "--quiet"]) == 0
    for v in ("mle", "unbiased"):
        assert (out / v / "metrics.csv").read_bytes() == (ref / v / "metrics.csv").read_bytes(), v


# -- (f) kill -9 at random moments ------------------------------------------------------------

# Four small runs, each killed at random moments (while starting, fitting, or writing a
# checkpoint), resumed, killed again, ... and finally finished. checkpoint_seconds=0 makes
# every generation a checkpoint, so a kill can land inside any of the store's writes.
KILL_RUNS = {
    "gaussian": (CONFIGS / "gaussian-replace.yaml",
                 ["chains=20", "generations=150", "reference_n=1000", "checkpoint_seconds=0"]),
    "gmm": (CONFIGS / "gmm-blog.yaml",  # record_every 5: rows only every fifth generation
            ["chains=3", "generations=60", "regime.n=300", "reference_n=500", "checkpoint_seconds=0"]),
    "categorical": (CONFIGS / "categorical-zipf.yaml",
                    ["chains=20", "generations=100", "regime.n=500", "source.k=200", "checkpoint_seconds=0"]),
    "vae": (None, []),
}
TINY_VAE = {"name": "tiny-vae", "chains": 1, "generations": 40, "checkpoint_seconds": 0,
            "source": {"kind": "digits"},
            "model": {"kind": "vae", "hidden": [32], "latent": 4, "epochs": 2, "batch": 64, "compile": False,
                      "labels": "none", "threads": 1},
            "regime": {"kind": "replace", "n": 300}, "metrics": ["params", "pixels"]}
KILLS = {"gaussian": 5, "gmm": 5, "categorical": 5, "vae": 5}   # 20 in all


def _newest(run: Path) -> int:
    """Generation of the newest checkpoint file (-1: none)."""
    gens = [int(p.stem.split("-")[1]) for p in run.glob("checkpoint-*.npz")]
    return max(gens, default=-1)


def _kill_at_random(proc: subprocess.Popen, run: Path, rng: np.random.Generator, extra: float) -> bool:
    """SIGKILL proc at a random moment; False if it finished first.

    One kill in four comes a random 0-1.5 s after launch (often before any checkpoint: start-up,
    generation 0, the first write); the others once the run has written a checkpoint past the one
    it started from, plus a random 0-`extra` s, so that every resume makes progress.
    """
    start, first = time.monotonic(), _newest(run)
    early = rng.random() < 0.25
    delay = rng.uniform(0, 1.5) if early else rng.uniform(0, extra)
    progressed = None if not early else start
    deadline = start + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        now = time.monotonic()
        if progressed is None and _newest(run) > first:
            progressed = now
        if progressed is not None and now - progressed >= delay:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"{run}: no progress within 120 s")


@pytest.mark.parametrize("kind", list(KILL_RUNS))
def test_kill_minus_nine_at_random_moments(tmp_path, kind):
    """SIGKILL at random moments (5 per family, 20 in all), resume, kill again, ...: the finished
    metrics.csv is byte-identical to an uninterrupted run's."""
    rng = np.random.default_rng([20240607, list(KILL_RUNS).index(kind)])
    recipe, overrides = KILL_RUNS[kind]
    if recipe is None:
        cfg, raw = write(tmp_path, TINY_VAE, "tiny-vae"), dict(TINY_VAE)
    else:
        cfg, raw = recipe, load_raw(recipe, overrides)
        raw.setdefault("name", recipe.stem)
    t0 = time.monotonic()
    ref = straight(tmp_path, raw, "ref")
    extra = max(0.05, 3 * (time.monotonic() - t0) / validate(raw).generations)  # within a few generations
    attempt, kills = 0, 0
    out = tmp_path / f"cut-{attempt}"
    while kills < KILLS[kind]:
        proc = subprocess.Popen([sys.executable, "-m", "model_collapse.cli", "run", str(cfg), *overrides,
                                 "--out", str(out), "--resume", "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if _kill_at_random(proc, out, rng, extra):
            kills += 1
            proc.stderr.close()
            continue
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode == 0, err
        # it finished before its kill: it must be exact too; the remaining kills go to a fresh run
        assert (out / "metrics.csv").read_bytes() == ref, out
        attempt += 1
        out = tmp_path / f"cut-{attempt}"
    done = cli("run", str(cfg), *overrides, "--out", str(out), "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "metrics.csv").read_bytes() == ref, f"metrics.csv differs after {kills} kills"
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    assert sum(KILLS.values()) == 20
