"""W1 as a user gets it: the `collapse` CLI, whole process, against the scikit-learn loop.

bench_gmm.py times the fit + sample kernel in process. A user runs the CLI, which also imports
the package, validates the config, drives the generation loop (regime, metrics, run store,
checkpoints) and draws the figures. In one run this script measures:

1. W1 through the CLI, whole process (a subprocess of the venv's `collapse`):
   `collapse run configs/gmm-blog.yaml chains=1 metrics=[params] record_every=1 generations=G
   --out DIR --quiet` for G = 1, 1001, 2001, repeats interleaved; per generation =
   (median t(G) - median t(1)) / (G - 1). Beside it, the same runs in process (PROBE) split by
   phase (imports, validation, the generation loop, the figures), also per generation.
2. The plain scikit-learn loop (GaussianMixture(2).fit(x); x = gm.sample(10000)) per generation,
   held to 1 thread (threadpoolctl) and with default threads: bench_gmm.sklearn_chain.
3. The kernel alone: our GMMFamily fit + sample per generation in process: bench_gmm.ours.
4. Loop overhead = CLI per generation - kernel per generation, and its share of the kernel; and,
   in process, the generation loop against fit + sample replaying the loop's own chain (the same
   generators), which isolates the loop's bookkeeping from where a chain has drifted.
5. `collapse run configs/gaussian-replace.yaml generations=1` whole process (median), the share
   of such a run spent importing (every import it makes, under -X importtime; and the time of
   `python -c "import model_collapse.cli"`), and whether torch is imported during it.

Prints a markdown table and writes benchmarks/results/cli.json (--quick: short sizes, written to
a temporary file unless --json is given). Wall-clock on a shared machine; CPU seconds of the
child processes are reported next to the CLI walls.

    .venv/bin/python benchmarks/bench_cli.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_gmm import N, ours, sklearn_chain  # noqa: E402  (the same baseline and kernel loop)

BIN = Path(sys.executable).parent
COLLAPSE = str(BIN / "collapse")
W1 = ["run", "configs/gmm-blog.yaml", "chains=1", "metrics=[params]", "record_every=1"]
GAUSS = ["run", "configs/gaussian-replace.yaml", "generations=1"]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(args: list[str]) -> dict:
    """One `collapse ... --out TMP --quiet` subprocess: wall s and the children's CPU s."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        c0, t0 = _child_cpu(), time.perf_counter()
        p = subprocess.run([COLLAPSE, *args, "--out", str(tmp / "run"), "--quiet"], cwd=ROOT,
                           capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"`collapse {' '.join(args)}` failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {"wall": wall, "cpu": cpu}


def python(code: str, *flags: str) -> tuple[float, str, str]:
    """Wall s, stdout and stderr of `python [flags] -c code` in the venv's interpreter."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, *flags, "-c", code], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"python -c failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p.stdout, p.stderr


# One CLI run in a fresh interpreter, timed by phase: importing the CLI, importing the engine modules
# it calls (config, loop, plots), then main() split into validation, the generation loop, the
# figures (each timed by wrapping the module attribute the CLI looks up at call time), and the rest.
PROBE = """
import contextlib, io, json, os, shutil, sys, tempfile, time
T = {}
t0 = time.perf_counter()
from model_collapse.cli import main
T["import_cli"] = time.perf_counter() - t0
t0 = time.perf_counter()
import model_collapse.config as config, model_collapse.loop as loop, model_collapse.plots as plots
T["import_engine"] = time.perf_counter() - t0
inside = []
def wrap(mod, name, key):
    f = getattr(mod, name, None)
    if f is None:
        return
    def timed(*a, **k):
        t = time.perf_counter()
        inside.append(key)
        try:
            return f(*a, **k)
        finally:
            inside.pop()
            kk = key if not inside else inside[-1] + "_" + key
            T[kk] = T.get(kk, 0.0) + time.perf_counter() - t
    setattr(mod, name, timed)
wrap(config, "validate", "validate")
wrap(loop, "run_generations", "loop")
wrap(plots, "plot_run", "plot")
d = tempfile.mkdtemp(prefix="bench-cli-")
t0 = time.perf_counter()
try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(ARGS + ["--out", os.path.join(d, "run"), "--quiet"])
finally:
    T["main"] = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
T["other"] = T["main"] - sum(T.get(k, 0.0) for k in ("validate", "loop", "plot"))
print(json.dumps({"rc": rc, "s": T, "torch": "torch" in sys.modules, "sklearn": "sklearn" in sys.modules,
                  "scipy": "scipy" in sys.modules, "matplotlib": "matplotlib" in sys.modules,
                  "modules": len(sys.modules)}))
"""


def probe(args: list[str], *flags: str) -> tuple[dict, float, str]:
    """PROBE on one CLI command line: (its JSON, whole-process wall s, stderr)."""
    wall, out, err = python(PROBE.replace("ARGS", repr(args)), *flags)
    return json.loads(out.strip().splitlines()[-1]), wall, err


def _phase_medians(probes: list[dict]) -> dict:
    keys = sorted({k for p in probes for k in p["s"]})
    return {k: med([p["s"].get(k, 0.0) for p in probes]) for k in keys}


def med(xs):
    return statistics.median(xs)


def cli_w1(gens: list[int], repeats: int) -> dict:
    """Interleaved repeats of the W1 CLI run at each G (order reversed on odd repeats), then the
    phase breakdown of each G in process."""
    runs = {g: [] for g in gens}
    for r in range(repeats):
        for g in (gens if r % 2 == 0 else gens[::-1]):
            runs[g].append(cli(W1 + [f"generations={g}"]))
            print(f"  cli W1 G={g} repeat {r + 1}/{repeats}: {runs[g][-1]['wall']:.2f} s", flush=True)
    probes = {g: [] for g in gens}
    for r in range(max(1, repeats // 2)):
        for g in gens:
            probes[g].append(probe(W1 + [f"generations={g}"])[0])
    out = {"command": "collapse " + " ".join(W1) + " generations=G --out DIR --quiet", "repeats": repeats,
           "by_G": {str(g): {"wall_s": [x["wall"] for x in v], "cpu_s": [x["cpu"] for x in v],
                              "median_wall_s": med([x["wall"] for x in v]),
                              "median_cpu_s": med([x["cpu"] for x in v]),
                              "phases_s": _phase_medians(probes[g]),
                              "torch_imported": any(p["torch"] for p in probes[g])}
                     for g, v in runs.items()}}
    g0, g1 = gens[0], gens[1]
    a, b = out["by_G"][str(g0)], out["by_G"][str(g1)]
    d = g1 - g0
    out["per_gen_from"] = f"G={g1} minus G={g0}"
    out["ms_per_gen"] = 1e3 * (b["median_wall_s"] - a["median_wall_s"]) / d
    out["cpu_ms_per_gen"] = 1e3 * (b["median_cpu_s"] - a["median_cpu_s"]) / d
    out["ms_per_gen_paired_median"] = 1e3 * med([(y["wall"] - x["wall"]) / d for x, y in zip(runs[g0], runs[g1])])
    out["phase_ms_per_gen"] = {k: 1e3 * (b["phases_s"].get(k, 0.0) - a["phases_s"].get(k, 0.0)) / d
                               for k in b["phases_s"]}
    out["fixed_s"] = a["median_wall_s"]
    if len(gens) > 2:   # linearity check: the slope between the two largest G
        c, g2 = out["by_G"][str(gens[2])], gens[2]
        out["ms_per_gen_upper"] = 1e3 * (c["median_wall_s"] - b["median_wall_s"]) / (g2 - g1)
    return out


def same_chain(gens: int, repeats: int) -> dict:
    """The generation loop against fit + sample on the very same chain, in process.

    bench_gmm.ours runs its own chain; EM's cost depends on where a chain has drifted, so the
    loop is also timed against the kernel replaying the loop's own chain: the same experiment,
    the same generators (derived before the clock starts), fit(x); x = sample(n). Per generation
    by difference of `gens` and 1 generations; medians of interleaved repeats."""
    from model_collapse.config import dump, load_raw, validate
    from model_collapse.loop import build, run_generations
    from model_collapse.rng import Seeds
    from model_collapse.store import RunStore
    raw = load_raw(ROOT / "configs" / "gmm-blog.yaml", W1[2:])

    def loop(g: int) -> float:
        exp = validate({**raw, "generations": g})
        tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
        try:
            store = RunStore.create(tmp / "run", dump(exp), overwrite=True)
            t0 = time.perf_counter()
            run_generations(exp, store, progress=False)
            return time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def kernel(g: int) -> float:
        exp = validate({**raw, "generations": g})
        seeds = Seeds(exp.seed)
        source, model, regime, _ = build(exp)
        x, n = source.real(regime.size(0), seeds.rng("real")), regime.samples_needed(0)
        fit, sample = [seeds.rng("fit", i) for i in range(g)], [seeds.rng("sample", i) for i in range(g)]
        t0 = time.perf_counter()
        for i in range(g):
            model.fit(x, fit[i])
            x = model.sample(n, sample[i])
        return time.perf_counter() - t0

    per = {"loop": [], "kernel": []}
    for r in range(repeats):
        for name, f in (("loop", loop), ("kernel", kernel))[::1 if r % 2 == 0 else -1]:
            per[name].append((f(gens) - f(1)) / (gens - 1))
    lo, ke = med(per["loop"]), med(per["kernel"])
    return {"generations": gens, "repeats": repeats, "loop_ms_per_gen": 1e3 * lo, "kernel_ms_per_gen": 1e3 * ke,
            "overhead_ms_per_gen": 1e3 * (lo - ke), "overhead_share": (lo - ke) / ke, "target_share": 0.25}


def gaussian_startup(repeats: int) -> dict:
    """`collapse run gaussian-replace generations=1` whole process; import share; torch or not."""
    walls = []
    for r in range(repeats):
        walls.append(cli(GAUSS)["wall"])
        print(f"  cli gaussian-replace generations=1 repeat {r + 1}/{repeats}: {walls[-1]:.2f} s", flush=True)
    bare = med([python("pass")[0] for _ in range(repeats)])
    imp = med([python("import model_collapse.cli")[0] for _ in range(repeats)])
    probes = [probe(GAUSS)[0] for _ in range(max(1, repeats // 2))]
    torch_on_import = python("import sys, model_collapse.cli; print('torch' in sys.modules)")[1].strip() == "True"
    # Every import the run makes, under -X importtime: the top-level entries' cumulative times add
    # up to the time spent importing (with importtime's own small overhead).
    _, it_wall, err = probe(GAUSS, "-X", "importtime")
    top = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if m and len(m.group(3)) == 1:
            top.append((int(m.group(2)), m.group(4)))
    imports_s = sum(us for us, _ in top) / 1e6
    wall = med(walls)
    return {"command": "collapse " + " ".join(GAUSS) + " --out DIR --quiet", "repeats": repeats,
            "wall_s": walls, "median_wall_s": wall, "python_startup_s": bare,
            "import_cli_process_s": imp,
            "imports_during_run_s": imports_s, "importtime_run_wall_s": it_wall,
            "import_share": imports_s / it_wall,
            "phases_s": _phase_medians(probes),
            "torch_imported_by_cli_import": torch_on_import,
            "torch_imported_during_run": any(p["torch"] for p in probes),
            "sklearn_imported_during_run": any(p["sklearn"] for p in probes),
            "modules_after_run": med([p["modules"] for p in probes]),
            "top_imports_ms": [{"module": m, "cumulative_ms": us / 1e3} for us, m in sorted(top, reverse=True)[:10]]}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine()}
    for pkg in ("model-collapse", "numpy", "scikit-learn", "scipy", "matplotlib", "threadpoolctl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip() != ""
        out["git"] = rev + ("-dirty" if dirty else "")
    except OSError:
        out["git"] = None
    return out


def main() -> None:
    """Run everything, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gens", type=int, nargs="+", default=[1, 1001, 2001], help="CLI generation counts")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each CLI run")
    ap.add_argument("--baseline-gens", type=int, default=200, help="generations of the scikit-learn loop")
    ap.add_argument("--kernel-gens", type=int, default=2000, help="generations of the in-process kernel")
    ap.add_argument("--json", type=Path, default=None, help="results file (default results/cli.json)")
    ap.add_argument("--quick", action="store_true", help="short sizes, for a smoke run (< 1 min)")
    a = ap.parse_args()
    if a.quick:
        a.gens, a.repeats, a.baseline_gens, a.kernel_gens = [1, 201], 2, 20, 200
    path = a.json or (Path(tempfile.gettempdir()) / "cli-quick.json" if a.quick else HERE / "results" / "cli.json")
    gens = sorted(set(a.gens))
    if len(gens) < 2:
        ap.error("--gens needs at least two generation counts")

    out = {"workload": "W1 through the CLI", "N": N, "quick": a.quick, "cpus": os.cpu_count(),
           "cpus_usable": len(os.sched_getaffinity(0)), "loadavg_at_start": os.getloadavg(),
           "versions": versions()}
    from model_collapse.families.gmm import load_kernel
    load_kernel()   # compile (or load the cached build) before timing anything
    cli(W1 + ["generations=1"])   # warm the file cache and any first-use builds; not timed

    print("1. W1 through the CLI", flush=True)
    out["cli_w1"] = cli_w1(gens, a.repeats)

    print("2. scikit-learn loop", flush=True)
    for key, threads in (("sklearn_1thread", 1), ("sklearn", 0)):
        _, wall, cpu = sklearn_chain((1, a.baseline_gens, threads))
        out[key] = {"generations": a.baseline_gens, "threads": threads or "default",
                    "ms_per_gen": 1e3 * wall / a.baseline_gens, "cpu_ms_per_gen": 1e3 * cpu / a.baseline_gens}
        print(f"  {key}: {out[key]['ms_per_gen']:.2f} ms/gen", flush=True)

    print("3. kernel alone (fit + sample in process)", flush=True)
    _, wall, cpu = ours(1, a.kernel_gens)
    out["kernel"] = {"generations": a.kernel_gens, "ms_per_gen": 1e3 * wall / a.kernel_gens,
                     "cpu_ms_per_gen": 1e3 * cpu / a.kernel_gens}
    print(f"  kernel: {out['kernel']['ms_per_gen']:.3f} ms/gen", flush=True)

    print("4. the loop against the kernel on its own chain (in process)", flush=True)
    out["same_chain"] = same_chain(max(gens), a.repeats)
    print(f"  loop {out['same_chain']['loop_ms_per_gen']:.3f} ms/gen, kernel "
          f"{out['same_chain']['kernel_ms_per_gen']:.3f} ms/gen", flush=True)

    c, k = out["cli_w1"]["ms_per_gen"], out["kernel"]["ms_per_gen"]
    loop_ms = out["cli_w1"]["phase_ms_per_gen"].get("loop", float("nan"))
    out["overhead"] = {"ms_per_gen": c - k, "share_of_kernel": (c - k) / k, "target_share": 0.25,
                       "in_loop_ms_per_gen": loop_ms - k, "in_loop_share_of_kernel": (loop_ms - k) / k}
    out["ratios"] = {"sklearn_1thread_over_cli": out["sklearn_1thread"]["ms_per_gen"] / c,
                     "sklearn_default_over_cli": out["sklearn"]["ms_per_gen"] / c,
                     "sklearn_1thread_over_kernel": out["sklearn_1thread"]["ms_per_gen"] / k,
                     "sklearn_default_over_kernel": out["sklearn"]["ms_per_gen"] / k,
                     "target_sklearn_over_cli": 50}

    print("5. start-up: gaussian-replace, 1 generation", flush=True)
    out["startup"] = gaussian_startup(a.repeats)
    out["startup"]["target_wall_s"] = 1.0
    out["loadavg_at_end"] = os.getloadavg()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    print(f"\nwrote {path}")


def table(o: dict) -> str:
    """The markdown summary."""
    w, s, r, ov = o["cli_w1"], o["startup"], o["ratios"], o["overhead"]
    walls = ", ".join(f"G={g}: {v['median_wall_s']:.2f} s" for g, v in w["by_G"].items())
    ph = w["phase_ms_per_gen"]
    phases = "; ".join(f"{k} {v:.3f}" for k, v in ph.items() if k in ("loop", "plot", "plot_validate", "validate", "other"))
    rows = ["| measure | value |", "|---|---|",
            f"| CLI W1 whole process, median of {w['repeats']} ({walls}) | "
            f"**{w['ms_per_gen']:.3f} ms/gen** ({w['per_gen_from']}; paired {w['ms_per_gen_paired_median']:.3f}; "
            f"CPU {w['cpu_ms_per_gen']:.3f}) |"]
    if "ms_per_gen_upper" in w:
        rows.append(f"| CLI W1, slope between the two largest G | {w['ms_per_gen_upper']:.3f} ms/gen |")
    rows += [f"| CLI W1 per generation by phase, in process (ms/gen) | {phases} |",
             f"| scikit-learn loop, 1 thread ({o['sklearn_1thread']['generations']} gens) | "
             f"{o['sklearn_1thread']['ms_per_gen']:.2f} ms/gen |",
             f"| scikit-learn loop, default threads | {o['sklearn']['ms_per_gen']:.2f} ms/gen |",
             f"| kernel alone: fit + sample in process ({o['kernel']['generations']} gens) | "
             f"{o['kernel']['ms_per_gen']:.3f} ms/gen |",
             f"| overhead, CLI - kernel | {ov['ms_per_gen']:.3f} ms/gen = **{100 * ov['share_of_kernel']:.0f}%** "
             f"of the kernel (target <= 25%); inside the loop alone {ov['in_loop_ms_per_gen']:.3f} ms/gen "
             f"({100 * ov['in_loop_share_of_kernel']:.0f}%) |",
             f"| the loop vs fit + sample on the loop's own chain, in process ({o['same_chain']['generations']} "
             f"gens) | {o['same_chain']['loop_ms_per_gen']:.3f} vs {o['same_chain']['kernel_ms_per_gen']:.3f} ms/gen: "
             f"overhead {o['same_chain']['overhead_ms_per_gen']:.3f} ms/gen = "
             f"**{100 * o['same_chain']['overhead_share']:.0f}%** (target <= 25%) |",
             f"| sklearn / CLI (1 thread; default threads) | **x{r['sklearn_1thread_over_cli']:.1f}**; "
             f"x{r['sklearn_default_over_cli']:.1f} (target >= 50) |",
             f"| sklearn / kernel (1 thread; default threads) | x{r['sklearn_1thread_over_kernel']:.0f}; "
             f"x{r['sklearn_default_over_kernel']:.0f} |",
             f"| `collapse run gaussian-replace generations=1`, whole process | **{s['median_wall_s']:.2f} s** "
             f"(target <= 1.0) |",
             f"| of which importing (every import of the run, -X importtime) | {s['imports_during_run_s']:.2f} s "
             f"of {s['importtime_run_wall_s']:.2f} s ({100 * s['import_share']:.0f}%); heaviest: "
             + ", ".join(f"{t['module']} {t['cumulative_ms']:.0f} ms" for t in s["top_imports_ms"][:4]) + " |",
             f"| `python -c 'import model_collapse.cli'` / bare interpreter | {s['import_cli_process_s']:.2f} s / "
             f"{s['python_startup_s']:.2f} s |",
             "| run phases in process (s) | " + "; ".join(f"{k} {v:.2f}" for k, v in s["phases_s"].items()) + " |",
             f"| torch imported: by `import model_collapse.cli` / during the run | "
             f"{s['torch_imported_by_cli_import']} / {s['torch_imported_during_run']} |",
             f"| machine | {o['cpus_usable']} of {o['cpus']} cores; load {o['loadavg_at_start'][0]:.1f} -> "
             f"{o['loadavg_at_end'][0]:.1f} |"]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
