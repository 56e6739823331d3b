"""The fault suite: every fault a user can cause, each one parametrised entry (command, exit status,
message fragments, what must stay unchanged). Every new command adds its cases to CASES.

The promise checked for each: exit 2 for what the user can fix in the command, 1 for a damaged
run or a full disk, 130 when interrupted; one `error:` line (an indented list under it for config
errors), never a traceback; and a refusal changes nothing. Then two processes on one run (the
lock), and a full disk: a real one on a small tmpfs where the test runs as root, and a
fault-injecting writer everywhere.
"""

from __future__ import annotations

import builtins
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from model_collapse import loop, store
from model_collapse.cli import main
from model_collapse.store import RunStore
from model_collapse.sweeps.spec import point_id

SMALL = {"name": "small", "chains": 4, "generations": 12, "checkpoint_seconds": 0, "reference_n": 500,
         "source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}, "regime": {"kind": "replace", "n": 30},
         "metrics": ["params", "kl"], "snapshots": [0, 3, 6]}
# A run that outgrows a 2 MB tmpfs within a second: 50 chains x 2,000 generations of rows.
BIG = ["gaussian-replace", "chains=50", "generations=2000", "checkpoint_seconds=0.05"]
ENOSPC = "No space left on device"
ECHO = re.compile(r"^\S+: \d+ generations x \d+ chains in [\d.]+ s$")   # a finished run's line (not an error)


# -- helpers -----------------------------------------------------------------------------------


def hashes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under root by relative path (directories listed too), leaving out `skip` prefixes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(skip):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def temp_files(root: Path) -> list[Path]:
    """Temporary files anywhere under root (atomic writes' `.NAME.tmpPID`, probes)."""
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-test-")]


def one_error_line(err: str) -> str:
    """Assert stderr holds no traceback and one `error:` line (an indented list may follow); return it."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("warning:") and not ECHO.match(line)]
    assert lines and lines[0].startswith("error: "), err
    assert all(line.startswith("  ") for line in lines[1:]), err
    return lines[0]


def status(run: Path) -> dict:
    """A run's status.json ({} while absent or half-written)."""
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(condition, proc: subprocess.Popen | None = None, deadline: float = 60.0, what: str = ""):
    """Poll (no fixed sleeps) until condition() is truthy; fails if proc exits first or time runs out."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {proc.communicate(timeout=10)}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def write_yaml(path: Path, raw: dict) -> Path:
    """A raw config as a YAML file."""
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished SMALL run (no figures), copied by every case that damages a run."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_yaml(root / "small.yaml", SMALL)
    assert main(["run", str(cfg), "--out", str(root / "run"), "--quiet", "--no-figures"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def big_reference(tmp_path_factory) -> bytes:
    """metrics.csv of an uninterrupted BIG run in an ordinary directory."""
    out = tmp_path_factory.mktemp("big") / "ref"
    assert main(["run", *BIG, "--out", str(out), "--quiet", "--no-figures"]) == 0
    return (out / "metrics.csv").read_bytes()


# -- the list: one entry per fault ---------------------------------------------------------------


def _cut_mid_line(run: Path) -> None:
    """metrics.csv cut in the middle of its last row (a copy that stopped short)."""
    data = (run / "metrics.csv").read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    (run / "metrics.csv").write_bytes(data[: last + (len(data) - last) // 2])


def _corrupt_checkpoints(run: Path) -> None:
    """Both kept checkpoints overwritten with garbage."""
    paths = sorted(run.glob("checkpoint-*.npz"))
    assert [p.name for p in paths] == ["checkpoint-000010.npz", "checkpoint-000011.npz"]
    for p in paths:
        p.write_bytes(b"PK\x03\x04 not a checkpoint")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "csv-cut": _cut_mid_line,
    "status-binary": lambda run: (run / "status.json").write_bytes(b"\x80\x81\xff\x00garbage"),
    "status-bad-json": lambda run: (run / "status.json").write_text('{"status": "comp'),
    "status-list": lambda run: (run / "status.json").write_text("[1, 2, 3]"),
    "config-deleted": lambda run: (run / "config.yaml").unlink(),
    "config-bad-yaml": lambda run: (run / "config.yaml").write_text("chains: [4,\nsource: {kind: gaussian\n"),
    "checkpoints-corrupt": _corrupt_checkpoints,
}


def _resumed_exactly(ctx: dict) -> None:
    """The run is complete again and its metrics.csv is the untouched run's."""
    assert status(ctx["run"])["status"] == "complete"
    assert (ctx["run"] / "metrics.csv").read_bytes() == ctx["reference"]


def _chains_after_option(ctx: dict) -> None:
    """The override that followed --out was applied."""
    assert yaml.safe_load((ctx["out"] / "config.yaml").read_text())["chains"] == 3


def _allocated_nothing(ctx: dict) -> None:
    """Refused before allocating: the process's peak memory grew by less than 256 MiB."""
    assert ctx["peak_growth"] < 256 * 2**20, ctx["peak_growth"]


def peak_memory() -> int:
    """This process's peak resident memory in bytes (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _report_shows_damage(ctx: dict) -> None:
    """The report was written and its run section names the damaged file."""
    html = (ctx["tmp"] / "r.html").read_text()
    assert "metrics.csv is damaged" in html


@dataclass(frozen=True)
class Case:
    """One fault: the command (`{cfg}`, `{run}`, `{out}`, `{tmp}`, `{txt}` filled in), its exit status,
    fragments its message must hold, and what must stay unchanged:
    "tmp" - nothing anywhere under the test's directory (so `{out}` is never made);
    "run" - every file of the run; "results" - the run but its figures (a reader may draw them);
    "none" - nothing promised (the command succeeds and writes)."""

    id: str
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]
    damage: str | None = None
    keep: str = "tmp"
    check: Callable[[dict], None] | None = None


CASES = [
    # -- what the user can fix in the command: exit 2, nothing written
    Case("override-broken-yaml", ("run", "{cfg}", "source.std=[1,", "--out", "{out}"), 2,
         ("override 'source.std=[1,'", "not valid YAML")),
    Case("config-is-a-directory", ("run", "{tmp}/adir", "--out", "{out}"), 2, ("is a directory",)),
    Case("config-bad-yaml-file", ("run", "{tmp}/bad.yaml", "--out", "{out}"), 2, ("bad.yaml: not valid YAML at line",)),
    Case("chains-beyond-memory", ("run", "{cfg}", "chains=1000000000", "--out", "{out}"), 2,
         ("chains: 1,000,000,000 chains", "GiB of memory", "use fewer chains"), check=_allocated_nothing),
    Case("std-nan", ("run", "{cfg}", "source.std=[nan]", "--out", "{out}"), 2,
         ("source.std.0: Input should be a finite number",)),
    Case("mean-inf", ("run", "{cfg}", "source.mean=[inf]", "--out", "{out}"), 2,
         ("source.mean.0: Input should be a finite number",)),
    Case("unknown-kind-with-other-errors", ("run", "{cfg}", "model.kind=bogus", "chains=0", "regime.n=-1",
                                            "--out", "{out}"), 2,
         ("model.kind: unknown family 'bogus'; choose from gaussian", "chains: Input should be greater than 0",
          "regime.n: Input should be greater than 0")),
    Case("regime-n-beyond-text", ("run", "{txt}", "--out", "{out}", "--quiet"), 2,
         ("asks for 5000 real blocks", "lower regime.n")),
    Case("plot-nonexistent", ("plot", "/nonexistent"), 2, ("/nonexistent is not a directory",)),
    Case("report-o-directory", ("report", "{run}", "-o", "{tmp}/adir"), 2, ("adir is a directory",)),
    Case("report-o-unwritable", ("report", "{run}", "-o", "{tmp}/afile/x.html"), 2,
         ("cannot write", "afile is not a writable directory")),
    Case("resume-refuses-a-changed-config", ("resume", "{run}", "regime.n=31", "--quiet"), 2,
         ("regime.n: 30 -> 31",), keep="run"),
    # -- overrides may follow options
    Case("override-after-option", ("run", "{cfg}", "--out", "{out}", "chains=3", "--quiet", "--no-figures"), 0, (),
         keep="none", check=_chains_after_option),
    # -- a finished run with damaged files: exit 1 naming the file, nothing changed
    Case("csv-cut-resume", ("resume", "{run}", "--quiet"), 1,
         ("metrics.csv is shorter than checkpoint-000011.npz records", "--overwrite"), "csv-cut", "run"),
    Case("csv-cut-plot", ("plot", "{run}"), 1, ("metrics.csv is damaged: its last line", "--overwrite"),
         "csv-cut", "run"),
    Case("csv-cut-report", ("report", "{run}", "-o", "{tmp}/r.html"), 0, ("metrics.csv is damaged",), "csv-cut",
         "run", _report_shows_damage),
    Case("checkpoints-corrupt-resume", ("resume", "{run}", "--quiet"), 1,
         ("no readable checkpoint", "checkpoint-000010.npz", "checkpoint-000011.npz", "Nothing was changed"),
         "checkpoints-corrupt", "run"),
    Case("config-deleted-plot", ("plot", "{run}"), 1, ("config.yaml is missing", "restore it"), "config-deleted", "run"),
    Case("config-deleted-resume", ("resume", "{run}"), 1, ("config.yaml is missing", "restore it"), "config-deleted", "run"),
    Case("config-bad-yaml-resume", ("resume", "{run}", "--quiet"), 1, ("config.yaml is not valid YAML (line",),
         "config-bad-yaml", "run"),
    Case("config-bad-yaml-plot", ("plot", "{run}"), 1, ("config.yaml is not valid YAML (line",),
         "config-bad-yaml", "run"),
    # -- the other commands
    Case("list-works", ("list",), 0, ()),
    Case("explain-unknown-kind", ("explain", "bogus"), 2, ("no component named 'bogus'",), keep="tmp"),
    Case("sweep-bad-grid", ("sweep", "{cfg}", "--grid", "regime.n=10,-1", "--out", "{out}", "--quiet"), 2,
         ("invalid sweep, nothing was run", "regime.n=-1: regime.n: Input should be greater than 0")),
    Case("sweep-broken-yaml-override", ("sweep", "{cfg}", "source.std=[1,", "--out", "{out}", "--quiet"), 2,
         ("not valid YAML",)),
    Case("compare-nonexistent", ("compare", "{tmp}/nonexistent", "-o", "{tmp}/c.png"), 2,
         ("is neither a run directory",)),
    Case("compare-o-unwritable", ("compare", "{run}", "-o", "{tmp}/afile/c.png"), 2,
         ("afile is not a writable directory",)),
    Case("demo-out-unwritable", ("demo", "--out", "{tmp}/afile/demo", "--quick"), 2, ("cannot write",)),
    # -- a garbage status.json: readers warn and work, resume rewrites it from the checkpoint
    *[c for kind in ("status-binary", "status-bad-json", "status-list") for c in (
        Case(f"{kind}-plot", ("plot", "{run}"), 0, ("status.json is unreadable",), kind, "results"),
        Case(f"{kind}-report", ("report", "{run}", "-o", "{tmp}/r.html"), 0, (), kind, "run"),
        Case(f"{kind}-resume", ("resume", "{run}", "--quiet", "--no-figures"), 0, ("status.json is unreadable",),
             kind, "none", _resumed_exactly))],
]


def _case(entry) -> Case:
    """The Case of a CASES entry (some are wrapped in pytest.param to carry a mark)."""
    return entry if isinstance(entry, Case) else entry.values[0]


@pytest.mark.parametrize("case", CASES, ids=[_case(c).id for c in CASES])
def test_fault(case, finished, tmp_path, capsys, recwarn):
    """Each fault: its exit status, one line naming the problem (never a traceback), nothing changed."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if case.damage:
        DAMAGE[case.damage](run)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("a regular file")
    (tmp_path / "bad.yaml").write_text("chains: [1,\n")
    (tmp_path / "a.txt").write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 40))
    txt = write_yaml(tmp_path / "txt.yaml", {"source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 32},
                                             "model": {"kind": "ngram", "order": 2}, "generations": 2,
                                             "regime": {"kind": "replace", "n": 5000}, "metrics": ["params"]})
    names = {"cfg": str(write_yaml(tmp_path / "small.yaml", SMALL)), "run": str(run), "out": str(tmp_path / "out"),
             "tmp": str(tmp_path), "txt": str(txt)}
    keep = {"tmp": (tmp_path, ()), "run": (run, ()), "results": (run, ("figures",))}.get(case.keep)
    before = hashes(*keep) if keep else None
    capsys.readouterr()
    peak = peak_memory()
    code = main([a.format(**names) for a in case.argv])
    peak_growth = peak_memory() - peak
    err = capsys.readouterr().err
    said = err + "".join(f"warning: {w.message}\n" for w in recwarn)
    assert code == case.code, said
    if case.code:
        one_error_line(err)
    else:
        assert "Traceback" not in said and "error:" not in said, said
    for fragment in case.says:
        assert fragment.format(**names) in said, (fragment, said)
    if keep:
        assert hashes(*keep) == before
    assert not temp_files(tmp_path)
    if case.check:
        case.check({**names, "run": run, "out": tmp_path / "out", "tmp": tmp_path,
                    "reference": (finished / "metrics.csv").read_bytes(), "peak_growth": peak_growth})


def _failing_fit(monkeypatch, at: int, error: BaseException) -> None:
    """Make the model's fit raise `error` on its `at`-th call (generation at-1) of the next run."""
    built = loop.build

    def build(exp):
        source, model, regime, filt = built(exp)
        fit, calls = model.fit, []

        def failing(train, rng):
            calls.append(1)
            if len(calls) == at:
                raise error
            return fit(train, rng)

        model.fit = failing
        return source, model, regime, filt

    monkeypatch.setattr(loop, "build", build)


def test_interrupt_names_the_real_directory(finished, tmp_path, capsys, monkeypatch):
    """Ctrl-C mid-run: exit 130, the message names this run's directory to resume (not a placeholder);
    resuming it gives the uninterrupted numbers."""
    out = tmp_path / "deep" / "cut"
    _failing_fit(monkeypatch, 5, KeyboardInterrupt())
    capsys.readouterr()
    assert main(["run", str(write_yaml(tmp_path / "small.yaml", SMALL)), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"interrupted; continue with `collapse resume {out}`"
    assert status(out)["status"] == "interrupted"
    monkeypatch.undo()
    assert main(["resume", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "metrics.csv").read_bytes() == (finished / "metrics.csv").read_bytes()


# -- one writer per run: the lock ----------------------------------------------------------------

# The CLI in a subprocess whose fit waits, at its `at`-th call, for a go-ahead file: the run holds its
# lock and says "running" for as long as the test needs, with no race against its finishing first.
GATED = """
import sys, time
from pathlib import Path
from model_collapse import loop
from model_collapse.cli import main
gate, paused, at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
built = loop.build
def build(exp):
    source, model, regime, filt = built(exp)
    fit, calls = model.fit, []
    def gated(train, rng):
        calls.append(1)
        if len(calls) == at:
            paused.touch()
            while not gate.exists():
                time.sleep(0.005)
        return fit(train, rng)
    model.fit = gated
    return source, model, regime, filt
loop.build = build
sys.exit(main(sys.argv[4:]))
"""

# Holds the lock of the run directory argv[1] (made if absent) until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from model_collapse.locks import run_lock
run = Path(sys.argv[1])
run.mkdir(parents=True, exist_ok=True)
with run_lock(run):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_writer_refused_readers_work(finished, tmp_path, capsys, recwarn):
    """While `collapse run` writes D: resume, run --resume and run --overwrite of D are refused (exit 2,
    naming its pid) and change nothing; plot and report read it; the run then finishes with the
    numbers of an uninterrupted run."""
    cfg = str(write_yaml(tmp_path / "small.yaml", SMALL))
    out, gate, paused = tmp_path / "D", tmp_path / "go", tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", GATED, str(gate), str(paused), "6",
                             "run", cfg, "--out", str(out), "--quiet", "--no-figures"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(paused.exists, proc, what="the run reached generation 5")
        doc = status(out)
        assert doc["status"] == "running" and doc["last_complete_generation"] == 4, doc
        before = hashes(out)
        for argv in (["resume", str(out), "--quiet"],
                     ["run", cfg, "--out", str(out), "--resume", "--quiet"],
                     ["run", cfg, "--out", str(out), "--overwrite", "--quiet"]):
            capsys.readouterr()
            assert main(argv) == 2, argv
            line = one_error_line(capsys.readouterr().err)
            assert f"in use by process {proc.pid}" in line, line
            assert hashes(out) == before, argv
        assert main(["plot", str(out)]) == 0                      # readers never wait for the lock
        assert (out / "figures" / "metrics.png").exists()
        assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
        assert "generation 4" in (tmp_path / "r.html").read_text()   # the committed rows so far
        assert hashes(out, ("figures",)) == {k: v for k, v in before.items() if not k.startswith("figures")}
        assert proc.poll() is None   # still paused, holding its lock, through all of the above
        gate.touch()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert (out / "metrics.csv").read_bytes() == (finished / "metrics.csv").read_bytes()
    assert status(out)["status"] == "complete"


def test_lock_held_on_a_sweep_run_fails_that_run_only(tmp_path, capsys):
    """Another process holding one sweep run's lock: that run fails with the holder's pid in sweep.csv,
    the other runs complete, and the held run is untouched."""
    cfg = write_yaml(tmp_path / "tiny.yaml", {**SMALL, "generations": 4, "snapshots": []})
    sweep = tmp_path / "sweep"
    args = ["sweep", str(cfg), "--grid", "regime.n=20,21", "--seeds", "1", "--out", str(sweep), "--quiet"]
    assert main(args) == 0
    held, free = (sweep / point_id((("regime.n", n),)) / "seed-0" for n in (20, 21))
    for run in (held, free):   # as a Ctrl-C leaves them: both to be resumed by the next sweep
        RunStore(run).set_status("interrupted", 3, message="interrupted")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = hashes(held)   # its .lock now names the holder
        capsys.readouterr()
        assert main(args) == 1
        with open(sweep / "sweep.csv", newline="") as f:
            rows = {Path(r["run_dir"]).parent.name: r for r in csv.DictReader(f)}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert rows[held.parent.name]["status"] == "failed"
    assert f"in use by process {holder.pid}" in rows[held.parent.name]["message"]
    assert rows[free.parent.name]["status"] == "complete" and status(free)["status"] == "complete"
    assert hashes(held) == before


# -- a full disk -------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    """Mount a tmpfs of `size` on where, or skip (not root, no mount, a container without the right)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(where: Path) -> None:
    """Unmount a tmpfs mounted by _mount_tmpfs (lazily if something still holds it)."""
    if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def test_run_that_fills_a_tmpfs_fails_then_resumes_exactly(tmp_path, capsys, big_reference):
    """A run outgrowing a 2 MB tmpfs: one line naming the file (exit 1), status "failed" with the reason,
    no temp files; after the tmpfs grows (contents kept), resume equals an uninterrupted run."""
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "2m")
    try:
        out = mnt / "run"
        capsys.readouterr()
        assert main(["run", *BIG, "--out", str(out), "--quiet"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert ENOSPC in line and f"while writing {out}/" in line and f"collapse resume {out}" in line, line
        doc = status(out)
        if f"{out}/status.json:" in line:   # the disk filled on status.json itself: it keeps its last state
            assert doc["status"] == "running", doc
        else:   # where it filled depends on when checkpoints fell: rows, a checkpoint, a snapshot
            assert doc["status"] == "failed" and ENOSPC in doc["message"], doc
        assert doc["last_complete_generation"] >= 0
        assert not temp_files(mnt)
        done = subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert main(["resume", str(out), "--quiet"]) == 0
        assert (out / "metrics.csv").read_bytes() == big_reference
        assert status(out)["status"] == "complete" and (out / "figures" / "metrics.png").exists()
    finally:
        _unmount(mnt)


@pytest.mark.parametrize("how", ["tiny", "filled"])
def test_disk_full_at_start_leaves_nothing(tmp_path, capsys, how):
    """A tmpfs too small for even the first files (a few KB, or one already filled): exit 1, one line,
    nothing left behind."""
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "8k" if how == "tiny" else "256k")
    try:
        if how == "filled":
            fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC
            finally:
                os.close(fd)
        before = hashes(mnt)
        capsys.readouterr()
        assert main(["run", *BIG, "--out", str(mnt / "a" / "run"), "--quiet"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert ENOSPC in line and "nothing was kept" in line, line
        assert hashes(mnt) == before
    finally:
        _unmount(mnt)


class DiskFills:
    """store's file writes as a disk that fills: from the k-th open for writing of a file that `target`
    matches on, each write puts half its bytes down and raises ENOSPC (the disk stays full)."""

    def __init__(self, target: Callable[[str], bool], k: int):
        self.target, self.k, self.opens = target, k, 0

    def open(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        if ("w" in mode or "a" in mode) and self.target(Path(file).name):
            self.opens += 1
            if self.opens >= self.k:
                return _Filling(f)
        return f


class _Filling:
    """A file on a full disk: writes stop half way with ENOSPC."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


# (target file, k-th write that fails, the file the message names, last generation kept or None: nothing is kept)
FILLS = {
    "row-flush": (lambda n: n == "metrics.csv", 5, "metrics.csv", 3),
    "checkpoint": (lambda n: n.startswith(".checkpoint-"), 5, "checkpoint-000004.npz", 3),
    "snapshot": (lambda n: n.startswith(".gen-000003.npz"), 1, "snapshots/gen-000003.npz", 2),
    "status": (lambda n: n.startswith(".status.json"), 4, "status.json", 2),
    "start-config": (lambda n: n.startswith(".config.yaml"), 1, "config.yaml", None),
    "start-status": (lambda n: n.startswith(".status.json"), 1, "status.json", None),
}


@pytest.mark.parametrize("where", list(FILLS))
def test_disk_fills_while_writing(where, finished, tmp_path, capsys, monkeypatch):
    """A full disk while writing a row, a checkpoint, a snapshot, the status or the first files: one line
    (exit 1) naming the file, status "failed" where it can be written, no temp files, the last good
    checkpoint kept (or nothing at all from a start); once space is free, resume (or a new run) is exact."""
    target, k, name, kept = FILLS[where]
    cfg = str(write_yaml(tmp_path / "small.yaml", SMALL))
    out = tmp_path / "run"
    monkeypatch.setattr(store, "open", DiskFills(target, k).open, raising=False)
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), "--quiet", "--no-figures"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert ENOSPC in line and f"while writing {out / name}:" in line, line
    assert not temp_files(tmp_path)
    monkeypatch.undo()   # space is free again
    if kept is None:
        assert "nothing was kept" in line and not out.exists()
        assert main(["run", cfg, "--out", str(out), "--quiet", "--no-figures"]) == 0
    else:
        assert f"last checkpoint: generation {kept}" in line and f"collapse resume {out}" in line, line
        doc = status(out)
        if where == "status":   # no room for status.json: it still holds the last one written
            assert doc["status"] == "running" and doc["last_complete_generation"] == kept - 1
        else:
            assert doc["status"] == "failed" and ENOSPC in doc["message"] and doc["last_complete_generation"] == kept
        assert max(int(p.stem.split("-")[1]) for p in out.glob("checkpoint-*.npz")) == kept
        assert main(["resume", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "metrics.csv").read_bytes() == (finished / "metrics.csv").read_bytes()
    assert status(out)["status"] == "complete"


def test_disk_fills_while_drawing_figures(finished, tmp_path, capsys, monkeypatch):
    """A full disk while the figures are drawn: one line (exit 1) saying to run `collapse plot`; the run
    stays complete, no half-written figure or temp file is left; `collapse plot` then draws them."""
    from matplotlib.figure import Figure

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")   # what a write cut short leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    out = tmp_path / "run"
    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert main(["run", str(write_yaml(tmp_path / "small.yaml", SMALL)), "--out", str(out), "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert ENOSPC in line and f"`collapse plot {out}`" in line and "complete" in line, line
    assert status(out)["status"] == "complete"
    assert not temp_files(tmp_path) and not list((out / "figures").glob("*.png"))
    assert (out / "metrics.csv").read_bytes() == (finished / "metrics.csv").read_bytes()
    monkeypatch.undo()
    assert main(["plot", str(out)]) == 0
    assert (out / "figures" / "metrics.png").read_bytes().startswith(b"\x89PNG\r\n")


def test_fault_suite_covers_every_command():
    """Every `collapse` command has at least one case here: a new command must add its faults."""
    from model_collapse.cli import parser
    commands = set(re.search(r"\{([\w,-]+)\}", parser().format_usage()).group(1).split(","))
    assert {"run", "resume", "plot", "report", "sweep"} <= commands
    covered = {_case(c).argv[0] for c in CASES}
    assert commands <= covered, f"commands without a fault case: {sorted(commands - covered)}"
