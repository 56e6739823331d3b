"""`collapse report`: one self-contained HTML file for runs, experiments with variants and sweeps.

Everything is read from run directories (nothing is recomputed) and embedded: figures and GIFs as
base64 data URIs, trends as inline SVG, no script, font or style sheet from elsewhere; a
Content-Security-Policy forbids the page to load anything that is not inside it, so the file reads
the same offline, mailed or archived. Any directory that holds run directories (an experiment's
variants, a sweep's points and seeds, a folder of runs) becomes a section whose subsections are its
runs, with its own figures, config.yaml and sweep.csv (run directories linked) when it has them.
Of folders named seed-<s> (a sweep's SWEEP/<point>/seed-<s>/) only the first seed's runs are shown
in full unless all_seeds; the others, and runs past max_runs, keep a short section.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import yaml

from .errors import CollapseWarning, CorruptRunError, RunDirError
from .store import read_metrics

IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
               ".jpeg": "image/jpeg"}
# Figures in the order a reader wants them; any others follow by name.
FIGURE_ORDER = ["metrics", "compare", "density", "text", "ppl_hist", "samples", "class_histogram",
                "classifier_accuracy", "classifier_loss"]
MAX_DEPTH = 4         # how deep run directories are looked for below a given directory
GRIDS = 6             # per-generation sample grids shown (evenly spaced, first and last included)
SAMPLE_GENERATIONS = 3
SAMPLE_CHARS = 4000   # a longer sample text is cut (the run's figures/samples.txt has it whole)
TABLE_ROWS = 500      # rows of a sweep.csv shown
SEED = re.compile(r"seed[-_]?(\d+)")   # a sweep's SWEEP/<point>/seed-<s>/ (any folder named so)
# Only what is inside the file may load: data: images, the inline style sheet.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
main{max-width:1180px;margin:0 auto;padding:1.2em 1.6em 4em}
nav{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:.6em 1.2em;margin:1em 0 2em}
nav ul{margin:.2em 0;padding-left:1.2em}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:.4em 1.2em 1em;margin:1.4em 0}
section section{border-color:#eceff3}
h1{font-size:1.7em}h2,h3,h4,h5,h6{margin:.7em 0 .3em}h6{font-size:1em;margin-top:1.2em}
.meta{color:#56606b;font-size:.92em}.top{float:right;font-size:.85em}
figure{display:inline-block;margin:.5em .8em .8em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eceff3}
figcaption{font-size:.82em;color:#56606b}
.grids img{width:230px}.grids img,img.pixels{image-rendering:pixelated}img.pixels{min-width:260px}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
td,th{border-bottom:1px solid #eceff3;padding:.2em .7em;text-align:left;vertical-align:middle}
th{background:#f3f5f8}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:.82em;max-height:30em}
pre.sample{white-space:pre-wrap;max-height:14em}
.failed{color:#b3261e;font-weight:600}
svg.trend{display:block}
"""


@dataclass
class Context:
    """What every section needs: runs left out (anchor -> why), notes by path, anchors by path."""

    left_out: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    anchors: dict = field(default_factory=dict)


@dataclass
class Node:
    """A run directory (run=True) or a directory of them, with its anchor in the report."""

    path: Path
    title: str
    run: bool
    children: list["Node"] = field(default_factory=list)
    anchor: str = ""



def summary(run: Path, data=None) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """([first, last] recorded generation, [(metric, [cell at first, cell at last])]), each cell the
    median (5% - 95%) over chains of the finite values; ([], []) before anything is committed.
    data: the run's read_metrics() when the caller has it already."""
    cols, rows = data if data is not None else read_metrics(run)
    if not len(rows):
        return [], []
    gens = np.unique(rows[:, 0])
    out = []
    for i, c in enumerate(cols[2:], start=2):
        cells = []
        for g in (gens[0], gens[-1]):
            v = rows[rows[:, 0] == g, i]
            v = v[np.isfinite(v)] + 0.0   # + 0.0: no "-0" cells
            cells.append("n/a" if not len(v) else f"{np.median(v):.4g} ({np.percentile(v, 5):.3g} - "
                         f"{np.percentile(v, 95):.3g})" if len(v) > 1 else f"{v[0]:.4g}")
        out.append((c, cells))
    return [int(gens[0]), int(gens[-1])], out


def _natural(p: Path):
    """Sort key that puts seed-2 before seed-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _tree(path: Path, title: str, depth: int = 0) -> Node | None:
    """The runs at or below path (None when there are none).

    A run directory has metrics.csv (written at its first checkpoint), or status.json before that;
    a directory holding run directories (variants, a sweep) is a group even if it has a status.json."""
    if (path / "metrics.csv").exists():
        return Node(path, title, True)
    kids = []
    if depth < MAX_DEPTH and path.is_dir():
        kids = [_tree(c, c.name, depth + 1) for c in sorted(path.iterdir(), key=_natural)
                if c.is_dir() and not c.name.startswith(".")]
        kids = [k for k in kids if k is not None]
    if kids:
        return Node(path, title, False, kids)
    return Node(path, title, True) if (path / "status.json").exists() else None


def _walk(node: Node):
    """Every node, depth first."""
    yield node
    for k in node.children:
        yield from _walk(k)


def _data_uri(path: Path) -> str:
    """The file as a data: URI (its type from the extension)."""
    return f"data:{IMAGE_TYPES[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _figure(path: Path, caption: str) -> str:
    """An embedded image with its caption (a GIF of sample grids is scaled up with crisp pixels)."""
    cls = ' class="pixels"' if path.suffix.lower() == ".gif" else ""
    return (f'<figure><img{cls} src="{_data_uri(path)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _images(folder: Path) -> list[Path]:
    """Image files directly in folder, in FIGURE_ORDER then by name."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES]
    rank = {n: i for i, n in enumerate(FIGURE_ORDER)}
    return sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), _natural(p)))


def _config(path: Path) -> dict:
    """config.yaml as a dict ({} when absent or unreadable: a report never fails on one run)."""
    try:
        doc = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _status(path: Path) -> dict:
    """status.json ({} when absent or unreadable)."""
    try:
        doc = json.loads((path / "status.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}   # a JSON list or number is as unreadable as garbage


def _config_block(path: Path) -> str:
    """The resolved config, folded."""
    if not (path / "config.yaml").exists():
        return ""
    return (f"<details><summary>config.yaml (resolved: every default written out)</summary>"
            f"<pre>{escape((path / 'config.yaml').read_text())}</pre></details>")


def _trend(cols: list[str], rows: np.ndarray, name: str) -> str:
    """An inline SVG of a metric's median (line) and 5-95% band over chains against the generation."""
    from .plots.panels import bands
    gens, med, lo, hi, _ = bands(cols, rows, name)
    ok = np.isfinite(med)
    if ok.sum() < 2:
        return ""
    gens, med, lo, hi = gens[ok], med[ok], lo[ok], hi[ok]
    step = max(1, -(-len(gens) // 120))   # ~120 points are all 140 px can show
    keep = np.r_[np.arange(0, len(gens) - 1, step), len(gens) - 1]
    gens, med, lo, hi = gens[keep], med[keep], np.where(np.isfinite(lo), lo, med)[keep], \
        np.where(np.isfinite(hi), hi, med)[keep]
    w, h, pad = 140.0, 30.0, 2.0
    low, high = float(min(lo.min(), med.min())), float(max(hi.max(), med.max()))
    y0, span = (low, high - low) if high > low else (low - 0.5, 1.0)   # a constant: a line across the middle
    x = pad + (gens - gens[0]) / max(gens[-1] - gens[0], 1) * (w - 2 * pad)

    def y(v):
        return h - pad - (v - y0) / span * (h - 2 * pad)

    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y(med)))
    band = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(np.r_[x, x[::-1]], np.r_[y(hi), y(lo)[::-1]]))
    return (f'<svg class="trend" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" '
            f'role="img"><title>{escape(name)}: median and 5-95% band, generations {int(gens[0])}-'
            f'{int(gens[-1])}, range {low:.4g} to {high:.4g}</title>'
            f'<polygon points="{band}" fill="#1f77b4" fill-opacity="0.2"/>'
            f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.3"/></svg>')


def _metric_table(run: Path) -> str:
    """Median (5% - 95%) over chains at the first and last recorded generation, and the trend between."""
    from .store import read_metrics
    try:
        cols, rows = read_metrics(run)
    except CorruptRunError as e:   # a report never fails on one run: the damage is shown, and named on stderr
        import warnings
        warnings.warn(str(e), CollapseWarning, stacklevel=2)
        return f'<p class="meta">{escape(str(e))}</p>'
    except RunDirError:
        return '<p class="meta">No metrics.csv yet.</p>'
    gens, table = summary(run, (cols, rows))
    if not gens:
        return '<p class="meta">No generation committed yet.</p>'
    head = (f"<tr><th>metric</th><th>generation {gens[0]}</th><th>generation {gens[1]}</th>"
            f"<th>median and 5-95% over generations</th></tr>")
    body = "".join(f"<tr><td>{escape(c)}</td><td class=num>{escape(a)}</td><td class=num>{escape(b)}</td>"
                   f"<td>{_trend(cols, rows, c)}</td></tr>" for c, (a, b) in table)
    return (f"<h6>Metrics: median (5% - 95%) over chains</h6><table>{head}{body}</table>")


def _grids(run: Path) -> str:
    """A few of the per-generation sample grids (RUN/samples/gen-G.png), first and last included."""
    pngs = sorted((run / "samples").glob("gen-*.png")) if (run / "samples").is_dir() else []
    if not pngs:
        return ""
    pick = sorted({round(i) for i in np.linspace(0, len(pngs) - 1, min(GRIDS, len(pngs)))})
    figs = "".join(_figure(pngs[i], f"generation {int(pngs[i].stem[4:])}") for i in pick)
    return f'<h6>Sample grids (chain 0; each cell follows one latent draw)</h6><div class="grids">{figs}</div>'


def _samples(run: Path) -> str:
    """The stored sample texts (RUN/text_samples.csv) of the first, a middle and the last generation."""
    from .plots.text import committed_rows
    rows = committed_rows(run, "text_samples")
    if not rows:
        return ""
    gens = sorted({int(r["generation"]) for r in rows})
    pick = [gens[round(i)] for i in np.linspace(0, len(gens) - 1, min(SAMPLE_GENERATIONS, len(gens)))]
    out = ["<h6>Sample texts</h6>"]
    for g in dict.fromkeys(pick):
        out.append(f"<p class=meta>generation {g}</p>")
        for r in rows:
            if int(r["generation"]) == g:
                text = r["text"] if len(r["text"]) <= SAMPLE_CHARS else r["text"][:SAMPLE_CHARS] + " [...]"
                out.append(f'<pre class="sample" title="chain {escape(r["chain"])}, sample '
                           f'{escape(r["index"])}">{escape(text)}</pre>')
    return "".join(out)


def _csv_table(path: Path, ctx: Context) -> str:
    """A CSV file (a sweep's sweep.csv) as an HTML table; a cell naming a run directory links to it."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""

    def cell(c: str) -> str:
        anchor = ctx.anchors.get(os.path.normpath(os.path.join(path.parent, c))) if 0 < len(c) < 400 else None
        return f'<td><a href="#{anchor}">{escape(c)}</a></td>' if anchor else f"<td>{escape(c)}</td>"

    head = "".join(f"<th>{escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in rows[1:TABLE_ROWS + 1])
    more = (f'<p class="meta">{len(rows) - 1 - TABLE_ROWS} more rows in {escape(path.name)}</p>'
            if len(rows) - 1 > TABLE_ROWS else "")
    return f"<h6>{escape(path.name)}</h6><table><tr>{head}</tr>{body}</table>{more}"


def _meta(path: Path, cfg: dict, note: str | None) -> str:
    """Size, status and directory of a run in one line."""
    st = _status(path)
    bits = []
    if "generations" in cfg and "chains" in cfg:
        bits.append(f"{cfg['generations']} generations x {cfg['chains']} chains")
    if st:
        s = escape(str(st.get("status", "?")))
        bits.append(f"status <span class={'failed' if s == 'failed' else 'ok'}>{s}</span>"
                    f" (last complete generation {st.get('last_complete_generation', '?')})")
    if note:
        bits.append(escape(note))
    bits.append(f"directory <code>{escape(str(path))}</code>")
    msg = st.get("message")
    extra = f'<p class="failed">{escape(str(msg))}</p>' if msg and st.get("status") != "complete" else ""
    return f'<p class="meta">{" · ".join(bits)}</p>{extra}'


def _section(node: Node, level: int, ctx: Context) -> str:
    """The HTML section of one node (and, for a directory of runs, its runs)."""
    h = f"h{min(level, 5)}"
    cfg = _config(node.path)
    out = [f'<section id="{node.anchor}"><a class="top" href="#contents">contents</a>',
           f"<{h}>{escape(node.title)}</{h}>"]
    if cfg.get("description"):
        out.append(f"<p>{escape(str(cfg['description']))}</p>")
    out.append(_meta(node.path, cfg, ctx.notes.get(node.path.resolve())))
    out.append(_config_block(node.path))
    if node.anchor in ctx.left_out:
        out.append(f'<p class="meta">Figures and tables not included ({ctx.left_out[node.anchor]}); or make a '
                   f"report of <code>{escape(str(node.path))}</code> on its own.</p></section>")
        return "".join(out)
    figs = _images(node.path) + _images(node.path / "figures")
    if figs:
        out.append("".join(_figure(p, str(p.relative_to(node.path))) for p in figs))
    elif node.run:
        out.append(f'<p class="meta">No figures in this run directory: draw them with '
                   f"<code>collapse plot {escape(str(node.path))}</code> (or `collapse report --plot`).</p>")
    if node.run:
        out += [_grids(node.path), _metric_table(node.path), _samples(node.path)]
    else:
        for name in ("sweep.csv",):
            if (node.path / name).exists():
                out.append(_csv_table(node.path / name, ctx))
        runs = [n for n in _walk(node) if n.run]
        items = "".join(f'<li><a href="#{n.anchor}">{escape(str(n.path.relative_to(node.path)))}</a> '
                        f'<span class="meta">{escape(str(_status(n.path).get("status", "")))}</span></li>'
                        for n in runs)
        out.append(f"<h6>{len(runs)} run{'s' if len(runs) != 1 else ''}</h6><ul>{items}</ul>")
        out += [_section(k, level + 1, ctx) for k in node.children]
    out.append("</section>")
    return "".join(out)


def _toc(nodes: list[Node]) -> str:
    """Nested links to every section."""
    if not nodes:
        return ""
    return "<ul>" + "".join(f'<li><a href="#{n.anchor}">{escape(n.title)}</a>{_toc(n.children)}</li>'
                            for n in nodes) + "</ul>"


def _later_seeds(node: Node) -> list[Node]:
    """Children named seed-<s> other than the lowest seed (a sweep point's other seeds)."""
    seeds = [(int(m.group(1)), k) for k in node.children if (m := SEED.fullmatch(k.path.name))]
    return [k for _, k in sorted(seeds, key=lambda t: t[0])[1:]]


def build_report(paths: list[Path], title: str = "model-collapse report", intro: str = "",
                 max_runs: int = 100, notes: dict | None = None, all_seeds: bool = False,
                 plot: bool = False) -> str:
    """The report's HTML text for run directories and directories of them (in the order given).

    Runs past max_runs, and unless all_seeds the runs of every seed-<s> folder but a point's first,
    keep their section (config, status, contents entry) without figures and tables. plot: first draw
    the figures of shown runs that have none (a sweep's runs, unless it ran with --run-figures)."""
    roots = []
    for p in map(Path, paths):
        node = _tree(p, p.resolve().name)
        if node is None:
            raise RunDirError(f"{p} holds no run directory (none with status.json or metrics.csv within "
                              f"{MAX_DEPTH} levels); pass a directory written by `collapse run` or a sweep")
        roots.append(node)
    ctx = Context(notes={Path(k).resolve(): v for k, v in (notes or {}).items()})
    used: set[str] = {"contents"}
    for node in (n for r in roots for n in _walk(r)):
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", str(node.path)).strip("-")[-60:] or "section"
        node.anchor, k = base, 1
        while node.anchor in used:
            k += 1
            node.anchor = f"{base}-{k}"
        used.add(node.anchor)
        ctx.anchors[os.path.normpath(node.path)] = node.anchor
    later = set() if all_seeds else {n.anchor for r in roots for g in _walk(r) for s in _later_seeds(g)
                                     for n in _walk(s) if n.run}
    shown = 0
    for node in (n for r in roots for n in _walk(r) if n.run):
        if node.anchor in later:
            ctx.left_out[node.anchor] = "not a sweep point's first seed: pass --all-seeds"
        elif shown >= max_runs:
            ctx.left_out[node.anchor] = f"past --max-runs {max_runs}"
        else:
            shown += 1
            if plot and (node.path / "metrics.csv").exists() and not _images(node.path / "figures"):
                from .plots import plot_run
                plot_run(node.path)
    body = "".join(_section(r, 2, ctx) for r in roots)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body><main>"
            f"<h1>{escape(title)}</h1><p class=meta>Written {stamp} by <code>collapse report</code> from "
            f"{', '.join(f'<code>{escape(str(p))}</code>' for p in paths)}. Figures: median and 5-95% band "
            f"over chains, dashed mean, dotted closed form where one is known.</p>"
            + (f"<p>{escape(intro)}</p>" if intro else "")
            + f'<nav id="contents"><strong>Contents</strong>{_toc(roots)}</nav>{body}</main></body></html>\n')


def check_target(out: Path) -> None:
    """Refuse, before any work, an output path that is a directory or cannot be written."""
    out = Path(out)
    if out.is_dir():
        raise RunDirError(f"-o {out} is a directory; name the HTML file to write, e.g. {out / 'report.html'}")
    parent = next((d for d in [out.parent, *out.parent.parents] if d.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write {out}: {parent} is not a writable directory; choose another -o")


def write_report(paths: list[Path], out: Path, title: str = "model-collapse report", intro: str = "",
                 max_runs: int = 100, notes: dict | None = None, all_seeds: bool = False,
                 plot: bool = False) -> Path:
    """Write the self-contained HTML report of paths to out (build_report's arguments); returns out."""
    from .store import atomic_write
    check_target(out)
    text = build_report(paths, title, intro, max_runs, notes, all_seeds, plot)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text.encode(), durable=False)
    return out


__all__ = ["build_report", "write_report"]
