"""Sweeps: grids validated up front, one run store per point x seed, resume / skip / retry,
statistics across seeds, figures, compare, and faults (the driver or a worker killed)."""

from __future__ import annotations

import csv
import hashlib
import io
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

import model_collapse as mc
from model_collapse.api import Sweep, sweep
from model_collapse.cli import main
from model_collapse.errors import ConfigError, RunDirError
from model_collapse.store import read_metrics
from model_collapse.sweeps.progress import Progress
from model_collapse.sweeps.spec import load_spec, parse_grid, plan, point_id, split_values
from model_collapse.paths import recipes
from model_collapse.sweeps.stats import bootstrap, nanmedian, resample_indices

TINY = {"name": "tiny", "chains": 3, "generations": 6, "reference_n": 200, "source": {"kind": "gaussian"},
        "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 20}, "metrics": ["params"]}
# Long enough (about a second a run on a quiet machine) to be caught running; checkpoints every 0.1 s.
LONG = {**TINY, "name": "long", "chains": 100, "generations": 500, "checkpoint_seconds": 0.1,
        "regime": {"kind": "replace", "n": 300}}
KILL_GRID = ["--grid", "regime.n=300,301", "--seeds", "2", "--quiet"]


def write(tmp_path: Path, raw: dict, name: str = "exp") -> Path:
    """A raw config as tmp_path/<name>.yaml."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def all_complete(sw: Sweep) -> Sweep:
    """A sweep whose every run finished (the CLI's exit 0)."""
    c = sw.counts
    assert c["complete"] == c["total"] > 0 and not c["failed"] and not c["interrupted"], c
    return sw


def index(out: Path) -> list[dict]:
    """sweep.csv as dicts."""
    with open(out / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def sha(path: Path) -> str:
    """sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(condition, proc: subprocess.Popen | None = None, deadline: float = 120.0, what: str = ""):
    """Poll (no fixed sleeps) until condition() is truthy; fails if proc exits first or time runs out."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def status(run: Path) -> dict:
    """A run's status.json ({} while absent or half-written)."""
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def cli_proc(*args: str, ignore_sigint: bool = False) -> subprocess.Popen:
    """The CLI in a subprocess (its own driver process, to be killed); ignore_sigint starts it as a shell
    starts a background job: with SIGINT ignored, which `collapse` must re-arm."""
    start = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, "-m", "model_collapse.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=start)


# -- grids and validation ----------------------------------------------------------------------


def test_grid_syntax():
    """Top-level commas split values; brackets keep lists whole; keys that move together zip."""
    assert split_values("0, 0.1,[1, 2],{a: 1, b: 2},'x,y'") == ["0", "0.1", "[1, 2]", "{a: 1, b: 2}", "'x,y'"]
    axis = parse_grid("source.std=[1],[2.5]")
    assert axis.keys == ("source.std",) and axis.values == [([1],), ([2.5],)]
    zipped = parse_grid("regime.truth,regime.fitted=[0,1],[0.1,0.9]")
    assert zipped.keys == ("regime.truth", "regime.fitted") and zipped.values == [(0, 1), (0.1, 0.9)]
    for bad, needle in [("regime.n", "key=v1,v2"), ("a,b=[1],[2,3]", "list of 2 entries"),
                        ("seed=1,2", "--seeds")]:
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
            load_spec("gaussian-replace", grid=[bad])
    with pytest.raises(ConfigError, match="given twice"):
        load_spec("gaussian-replace", grid=["regime.n=1", "regime.n=2"])


def test_point_ids_are_readable_and_distinct():
    """Point directories name their values; replaced characters add a hash so ids never collide."""
    assert point_id((("regime.n", 10), ("model.ddof", 1))) == "regime.n=10,model.ddof=1"
    a, b = point_id((("source.std", [1, 2]),)), point_id((("source.std", [12]),))
    assert a != b and "/" not in a and " " not in a


def test_bad_grid_rejected_before_anything_runs(tmp_path):
    """Unknown keys and bad values anywhere in the grid reject the whole sweep (ConfigError: the CLI's
    exit 2), each error once with the points it concerns, and nothing is written."""
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match="every run: bogus: Extra inputs are not permitted") as caught:
        sweep(write(tmp_path, TINY), out, grid=["regime.n=10,-1", "bogus.key=1,2"], seeds=2)
    err = str(caught.value)
    assert err.count("Extra inputs are not permitted") == 1 and err.count("Input should be greater than 0") == 1
    assert "regime.n=-1,bogus.key=1; regime.n=-1,bogus.key=2: regime.n: Input should be greater than 0" in err
    assert not out.exists()


def test_sweep_writes_one_run_store_per_point_and_seed(tmp_path):
    """Each point x seed is a `collapse run` store with the same numbers as `collapse run` gives."""
    cfg, out = write(tmp_path, TINY), tmp_path / "sweep"
    sw = all_complete(sweep(cfg, out, grid={"regime.n": [10, 20]}, seeds=2, workers=2))
    assert sw.counts["total"] == 4 and sw.path == out
    rows = index(out)
    assert [(r["point"], r["regime.n"], r["seed"], r["status"]) for r in rows] == [
        ("regime.n=10", "10", "0", "complete"), ("regime.n=10", "10", "1", "complete"),
        ("regime.n=20", "20", "0", "complete"), ("regime.n=20", "20", "1", "complete")]
    assert list(rows[0]) == ["point", "regime.n", "seed", "status", "run_dir", "message"]
    run = out / rows[3]["run_dir"]
    cfg_run = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg_run["seed"] == 1 and cfg_run["regime"]["n"] == 20 and status(run)["status"] == "complete"
    assert [r.path for r in sw.runs()] == [out / r["run_dir"] for r in rows] and sw.runs()[3].config == cfg_run
    alone = mc.run(cfg, out=tmp_path / "alone", figures=False, seed=1, regime__n=20)
    assert (run / "metrics.csv").read_bytes() == (alone.path / "metrics.csv").read_bytes()
    assert (out / "stats.csv").exists() and (out / "figures" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_complete_and_retries_failed(tmp_path):
    """A failed point does not stop the others and is recorded with its message; rerunning skips
    complete runs (untouched) and tries the failed one once more."""
    cfg, out = write(tmp_path, TINY), tmp_path / "sweep"
    args = {"grid": ["model.temperature=1,1e200"], "seeds": 2}
    first = sweep(cfg, out, **args).counts   # a failed run is counted, not raised (the CLI's exit 1)
    assert (first["failed"], first["complete"], first["skipped"]) == (2, 2, 0), first
    rows = {r["run_dir"]: r for r in index(out)}
    good, bad = "model.temperature=1/seed-0", "model.temperature=1e200/seed-0"
    assert rows[good]["status"] == "complete" and rows[good]["message"] == ""
    assert rows[bad]["status"] == "failed" and "non-finite values in var" in rows[bad]["message"]
    before = {p: (sha(p), p.stat().st_mtime_ns) for p in (out / good).iterdir() if p.is_file()}
    again = sweep(cfg, out, **args).counts
    assert (again["failed"], again["complete"], again["skipped"]) == (2, 2, 2), again
    assert {p: (sha(p), p.stat().st_mtime_ns) for p in (out / good).iterdir() if p.is_file()} == before
    log = [json.loads(line) for line in (out / "sweep.log").read_text().splitlines()]
    attempts = [e["run"] for e in log if e["event"] == "run"]
    assert [e["event"] for e in log].count("end") == 2
    assert attempts.count(bad) == 2 and attempts.count(good) == 1


def test_changed_experiment_refused(tmp_path):
    """Rerunning into a sweep directory with different settings lists the differences (RunDirError:
    the CLI's exit 2); overwrite=True replaces it."""
    cfg, out = write(tmp_path, TINY), tmp_path / "sweep"
    all_complete(sweep(cfg, out, grid=["regime.n=10,20"]))
    before = (out / "sweep.csv").read_bytes()
    with pytest.raises(RunDirError, match="different experiment") as caught:
        sweep(cfg, out, grid=["regime.n=10,20"], overrides={"chains": 4})
    assert "chains: 3 -> 4" in str(caught.value) and "--overwrite" in str(caught.value)
    assert (out / "sweep.csv").read_bytes() == before
    sw = all_complete(sweep(cfg, out, grid=["regime.n=10,20"], overrides={"chains": 4}, overwrite=True))
    assert sw.counts["skipped"] == 0 and all(r.config["chains"] == 4 for r in sw.runs())


def test_variants_run_inside_each_seed(tmp_path):
    """As `collapse run` does: each variant is a sub-run; statistics are kept per variant."""
    raw = {**TINY, "variants": {"mle": {"model.ddof": 0}, "unbiased": {"model.ddof": 1}}}
    out = tmp_path / "sweep"
    sw = all_complete(sweep(write(tmp_path, raw), out, grid={"regime.n": [10, 20]}))
    run = out / "regime.n=10" / "seed-0"
    assert (run / "config.yaml").exists() and status(run / "mle")["status"] == "complete"
    assert sw.runs()[0].path == run and sorted(sw.runs()[0].variants) == ["mle", "unbiased"]
    assert set(sw.stats()["variant"]) == {"mle", "unbiased"}


def test_a_sweep_spec_file_runs_as_a_recipe(tmp_path, monkeypatch):
    """`collapse sweep SPEC.yaml` takes its recipe (relative to the spec), overrides, grid, seeds and
    figures from the file; command-line flags win; the default directory is runs/<name>-sweep."""
    write(tmp_path, TINY, "recipe")
    spec = {"description": "test", "recipe": "recipe.yaml", "overrides": {"chains": 2},
            "grid": {"regime.n": [10, 20, 30]}, "seeds": 3, "figures": ["var@4"]}
    (tmp_path / "specs").mkdir()
    path = tmp_path / "specs" / "mini.yaml"
    path.write_text(yaml.safe_dump({**spec, "recipe": "../recipe.yaml"}))
    monkeypatch.chdir(tmp_path)
    sw = all_complete(sweep(path, grid={"regime.n": [10, 20]}, seeds=1))
    out = tmp_path / "runs" / "mini-sweep"
    assert sw.path.resolve() == out.resolve()
    assert [r["run_dir"] for r in index(out)] == ["regime.n=10/seed-0", "regime.n=20/seed-0"]
    assert yaml.safe_load((out / "regime.n=20" / "seed-0" / "config.yaml").read_text())["chains"] == 2
    stored = yaml.safe_load((out / "sweep.yaml").read_text())
    assert stored["figures"] == ["var@4"] and stored["grid"] == {"regime.n": [10, 20]} and stored["seeds"] == 1
    assert (out / "figures" / "sweep.png").exists()


def test_sweep_spec_files_plan(tmp_path):
    """Every spec in configs/sweeps/ names a recipe, a grid and seeds that validate at every point."""
    specs = recipes("sweep")
    assert {p.stem for p in specs} >= {"bertrand-real-share", "gaussian-n-sweep", "gerstgrasser-seeds"}
    for path in specs:
        spec = load_spec(str(path))
        tasks = plan(spec, tmp_path / path.stem)
        assert len(tasks) == spec.seeds * int(np.prod([len(a.values) for a in spec.axes])) > 1
        assert spec.description and spec.figures


# -- statistics ------------------------------------------------------------------------------------


def test_bootstrap_matches_a_hand_computation():
    """The intervals are percentiles of the statistic over the documented resamples."""
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])
    res = bootstrap(x, resamples=200, seed=7)
    idx = resample_indices(len(x), 200, 7)
    means = sorted(x[i].mean() for i in idx)
    medians = sorted(float(np.median(x[i])) for i in idx)
    assert res["mean"][0] == pytest.approx(x.mean()) and res["median"][0] == 3.5
    assert res["mean_lo"][0] == pytest.approx(means[4]) and res["mean_hi"][0] == pytest.approx(means[194])
    assert res["median_lo"][0] == medians[4] and res["median_hi"][0] == medians[194]
    assert nanmedian(np.array([[1.0, np.nan, 3.0, np.inf]]), 1)[0] == 3.0


def test_bootstrap_interval_covers_the_true_mean_at_the_nominal_rate():
    """2,000 samples of 30 draws from a skewed distribution of known mean: the 95% intervals cover
    the mean (and the median) about 95% of the time."""
    rng = np.random.default_rng(1)
    draws = rng.gamma(4.0, 1.0, size=(30, 2000))   # mean 4, median ~3.67
    res = bootstrap(draws)
    cover_mean = np.mean((res["mean_lo"] <= 4.0) & (4.0 <= res["mean_hi"]))
    true_median = 3.672060748850897
    cover_median = np.mean((res["median_lo"] <= true_median) & (true_median <= res["median_hi"]))
    assert 0.92 <= cover_mean <= 0.97, cover_mean
    assert 0.92 <= cover_median <= 0.985, cover_median
    assert np.array_equal(res["n"], np.full(2000, 30))


def test_stats_csv_is_the_mean_over_seeds_of_chain_means(tmp_path):
    """stats.csv at a generation: the mean over seeds of each run's mean over chains."""
    out = tmp_path / "sweep"
    sw = all_complete(sweep(write(tmp_path, TINY), out, grid={"regime.n": [10, 20]}, seeds=3))
    stats = list(csv.DictReader(open(out / "stats.csv")))
    row = next(r for r in stats if r["point"] == "regime.n=20" and r["metric"] == "var" and r["generation"] == "4")
    per_seed = []
    for s in range(3):
        cols, rows = read_metrics(out / "regime.n=20" / f"seed-{s}")
        at = rows[rows[:, 0] == 4]
        per_seed.append(at[:, cols.index("var")].mean())
    assert float(row["mean"]) == pytest.approx(np.mean(per_seed), rel=1e-9)
    assert float(row["median"]) == pytest.approx(np.median(per_seed), rel=1e-9)
    assert float(row["mean_lo"]) <= float(row["mean"]) <= float(row["mean_hi"]) and row["n"] == "3"
    # Workers cache each run's chain means; a damaged or missing cache is recomputed, same numbers.
    caches = sorted((out / ".cache").glob("*.npz"))
    assert [p.name for p in caches][:2] == ["regime.n=10--seed-0.npz", "regime.n=10--seed-1.npz"]
    before = (out / "stats.csv").read_bytes()
    caches[0].write_bytes(b"junk")
    caches[1].unlink()
    assert out / "stats.csv" in sw.plot()
    assert (out / "stats.csv").read_bytes() == before


def test_plot_a_sweep_and_compare(tmp_path, capsys):
    """Sweep.plot(figures) redraws the sweep figure (a metric at a generation and a collapse time);
    `collapse compare` (no API function) overlays runs and sweep points; mistakes are one message."""
    cfg, out = write(tmp_path, TINY), tmp_path / "sweep"
    sw = all_complete(sweep(cfg, out, grid=["regime.n=5,40"], seeds=2))
    fig = out / "figures" / "sweep.png"
    fig.unlink()
    assert fig in sw.plot(["var@3", "var<0.8"])
    assert fig.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="no metric nope"):   # the CLI's exit 2
        sw.plot(["nope@3"])
    run = mc.run(cfg, out=tmp_path / "run").path
    png = tmp_path / "cmp" / "compare.png"
    assert main(["compare", str(run), str(out), "--metric", "var", "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(run), "--metric", "bogus", "-o", str(png)]) == 2
    assert "choose from mean, var" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "-o", str(png)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_progress_line_only_on_a_terminal():
    """The live line counts done / running / failed with an ETA; nothing when not a TTY."""
    buf = io.StringIO()
    bar = Progress("s", total=10, skipped=2, workers=2, stream=buf, enabled=True)
    bar.running, bar.done, bar.failed = 2, 3, 1
    bar.update(force=True)
    line = buf.getvalue()
    assert line.startswith("\r") and "6/10 done (2 already complete), 2 running, 1 failed" in line and "ETA" in line
    quiet = io.StringIO()
    Progress("s", 10, 0, 2, stream=quiet).update(force=True)   # StringIO is not a TTY
    assert quiet.getvalue() == ""


# -- faults ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference for the kill tests: LONG's grid swept without interruption."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg, ref = write(tmp, LONG), tmp / "ref"
    assert main(["sweep", str(cfg), *KILL_GRID, "--out", str(ref)]) == 0
    return ref


@pytest.mark.parametrize("sig,ignored", [(signal.SIGKILL, False), (signal.SIGINT, False), (signal.SIGINT, True),
                                         (signal.SIGTERM, False)],
                         ids=["SIGKILL", "SIGINT", "SIGINT-inherited-ignored", "SIGTERM"])
def test_driver_killed_then_rerun_equals_an_uninterrupted_sweep(tmp_path, sig, ignored, uninterrupted):
    """kill -9 (or kill -INT / -TERM, also when the sweep was started with SIGINT ignored, as a script's
    background job is) of the driver mid-way, then the same command again: no finished run is redone,
    and sweep.csv and every metrics.csv equal an uninterrupted sweep's, byte for byte."""
    cfg, ref, cut = write(tmp_path, LONG), uninterrupted, tmp_path / "cut"
    proc = cli_proc("sweep", str(cfg), *KILL_GRID, "--workers", "1", "--out", str(cut), ignore_sigint=ignored)
    first, second = cut / "regime.n=300" / "seed-0", cut / "regime.n=300" / "seed-1"
    # Killed with one run complete and the next part-way (a checkpoint written, not finished).
    wait_for(lambda: status(first).get("status") == "complete"
             and status(second).get("last_complete_generation", -1) >= 0, proc, what="a run part-way")
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), proc.stderr.read()
    assert status(second).get("status") != "complete"
    kept = {p.name: (sha(p), p.stat().st_mtime_ns) for p in first.iterdir() if p.is_file()}
    assert main(["sweep", str(cfg), *KILL_GRID, "--out", str(cut)]) == 0
    assert {p.name: (sha(p), p.stat().st_mtime_ns) for p in first.iterdir() if p.is_file()} == kept
    assert (cut / "sweep.csv").read_bytes() == (ref / "sweep.csv").read_bytes()
    for row in index(ref):
        assert (cut / row["run_dir"] / "metrics.csv").read_bytes() == \
            (ref / row["run_dir"] / "metrics.csv").read_bytes(), row["run_dir"]
    assert (cut / "stats.csv").read_bytes() == (ref / "stats.csv").read_bytes()


def test_worker_killed_is_reported_and_the_others_finish(tmp_path):
    """A run whose process dies (SIGKILL) is marked failed with the signal named, in sweep.csv and its
    status.json; the other runs finish; a rerun resumes it to the numbers of an uninterrupted run."""
    cfg, out = write(tmp_path, LONG), tmp_path / "sweep"
    args = ["--grid", "generations=4,500", "--seeds", "2", "--workers", "2", "--out", str(out), "--quiet"]
    proc = cli_proc("sweep", str(cfg), *args)
    victim = out / "generations=500" / "seed-0"
    lock = out / ".locks" / "generations=500--seed-0.lock"

    def running_pid():
        text = lock.read_text().strip() if lock.exists() else ""
        return int(text) if text and status(victim).get("status") == "running" else None

    pid = wait_for(running_pid, proc, what="the long run to start")
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    rows = {r["run_dir"]: r for r in index(out)}
    assert rows["generations=500/seed-0"]["status"] == "failed"
    assert "worker killed by SIGKILL" in rows["generations=500/seed-0"]["message"]
    assert [r["status"] for k, r in rows.items() if k != "generations=500/seed-0"] == ["complete"] * 3
    assert status(victim)["status"] == "failed" and "SIGKILL" in status(victim)["message"]
    assert main(["sweep", str(cfg), *args]) == 0
    alone = tmp_path / "alone"
    assert main(["run", str(cfg), "generations=500", "--out", str(alone), "--quiet"]) == 0
    assert (victim / "metrics.csv").read_bytes() == (alone / "metrics.csv").read_bytes()
