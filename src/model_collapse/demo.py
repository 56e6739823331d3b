"""`collapse demo`: run the demo recipes and write a report of what they show: REPORT.md and the
self-contained report.html of report.py."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from .report import summary

# (recipe, overrides for --quick: a smaller run of the same experiment, for tests)
DEMO = [
    ("mnist-quick", ["generations=3", "model.max_epochs=2", "regime.n=2000"]),
    ("gmm-blog", ["generations=60", "chains=4"]),
    ("gaussian-85-20", ["generations=100", "chains=100"]),
    ("tails-ngram", ["generations=4", "chains=2"]),
    ("lm-quick", ["generations=2", "regime.n=200", "model.max_epochs=1", "model.finetune_epochs=1"]),
]


def _summary(run: Path) -> str:
    """A Markdown table of median (5%-95%) of each metric at the first and last recorded generation."""
    gens, table = summary(run)
    if not gens:
        return "(no generation recorded yet)"
    lines = [f"| metric | generation {gens[0]} | generation {gens[1]} |", "|---|---|---|"]
    lines += [f"| {c} | {cells[0]} | {cells[1]} |" for c, cells in table]
    return "\n".join(lines)


def _section(name: str, out: Path, seconds: float) -> str:
    """The report section of one recipe's run directory."""
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    text = [f"## {name}", "", cfg.get("description", ""), "",
            f"{cfg['generations']} generations x {cfg['chains']} chains, {seconds:.0f} s. "
            f"Run directory: `{out}`.", ""]
    runs = [p for p in sorted(out.iterdir()) if (p / "metrics.csv").exists()] or [out]
    for fig in sorted((out / "figures").glob("*.*")):
        text += [f"![{fig.stem}]({fig.relative_to(out.parent)})", ""]
    for run in runs:
        if run != out:
            text += [f"### variant {run.name}", ""]
            for fig in sorted((run / "figures").glob("*.png")):
                text += [f"![{fig.stem}]({fig.relative_to(out.parent)})", ""]
        text += [_summary(run), ""]
    return "\n".join(text)


def demo(out: Path, quick: bool = False, recipes: list[str] | None = None) -> Path:
    """Run the demo recipes into out/, write out/REPORT.md and out/report.html; returns REPORT.md's path."""
    from .config import load_raw
    from .report import check_target
    from .runner import execute
    check_target(out / "report.html")   # a --out that cannot be written: one line before any run
    out.mkdir(parents=True, exist_ok=True)
    sections, done = [], {}   # done: recipe -> a note for the HTML report
    for name, small in DEMO:
        if recipes is not None and name not in recipes:
            continue
        raw = load_raw(name, small if quick else [])
        t0 = time.perf_counter()
        run = out / name
        execute(raw, run, overwrite=True, progress=None)   # overwrite under the run's lock
        sections.append(_section(name, run, time.perf_counter() - t0))
        done[name] = f"ran in {time.perf_counter() - t0:.0f} s (collapse demo{' --quick' if quick else ''})"
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s -> {run}")
    report = out / "REPORT.md"
    report.write_text("# model-collapse demo report\n\nEach section is one recipe from `configs/`, run by "
                      "`collapse demo`; figures are medians with 5-95% bands across chains.\n\n"
                      + "\n\n".join(sections) + "\n")
    from .report import write_report
    write_report([out / name for name in done], out / "report.html", title="model-collapse demo report",
                 intro="Each section is one recipe from configs/, run by `collapse demo`; figures are "
                       "medians with 5-95% bands across chains.",
                 notes={out / n: note for n, note in done.items()})
    return report
