"""`collapse report`: one self-contained HTML file, checked by parsing it and by opening it in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

import model_collapse as mc
from model_collapse.api import Run
from model_collapse.cli import main
from model_collapse.errors import RunDirError

TINY_VAE = {"name": "tiny-vae", "description": "a tiny VAE on 8x8 digits", "chains": 1, "generations": 2,
            "source": {"kind": "digits"},
            "model": {"kind": "vae", "hidden": [32], "latent": 4, "max_epochs": 2, "min_epochs": 1, "batch": 64,
                      "compile": False, "threads": 1,
                      "classifier": {"kind": "mlp", "hidden": [32], "max_epochs": 1, "compile": False}},
            "regime": {"kind": "replace", "n": 300}, "metrics": ["params", "pixels", "grid"],
            "checkpoint_seconds": 0}


class Page(HTMLParser):
    """Every tag with its attributes, ids, and the text of <style> elements."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()
        self.styles: list[str] = []
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Small real runs: Gaussian variants, a bigram text model, a digits VAE, and a sweep-shaped folder."""
    base = tmp_path_factory.mktemp("runs")
    cfg = base / "vae.yaml"
    cfg.write_text(yaml.safe_dump(TINY_VAE))
    recipes = {
        "gauss": ("gaussian-85-20", {"generations": 6, "chains": 20}),
        "ngram": ("tails-ngram", {"generations": 3, "chains": 2}),
        "vae": (cfg, {}),
    }
    for point, n, seed in [("p0", 50, 0), ("p0", 50, 1), ("p1", 200, 0)]:   # the layout of `collapse sweep`
        recipes[f"sweep/{point}/seed-{seed}"] = ("gaussian-replace",
                                                 {"generations": 3, "chains": 5, "regime.n": n, "seed": seed})
    for out, (recipe, overrides) in recipes.items():
        assert mc.run(recipe, out=base / out, overrides=overrides).status == "complete", out
    (base / "sweep" / "sweep.csv").write_text("point,regime.n,seed,status,run_dir\np0,50,0,complete,p0/seed-0\n"
                                              "p0,50,1,complete,p0/seed-1\np1,200,0,complete,p1/seed-0\n")
    (base / "sweep" / "figures").mkdir()
    shutil.copy(base / "sweep" / "p0" / "seed-0" / "figures" / "metrics.png", base / "sweep" / "figures" / "sweep.png")
    return base


@pytest.fixture(scope="module")
def report(runs):
    """The report of every run above, written through the CLI (the API reports one run or sweep at a time)."""
    out = runs / "report.html"
    args = [str(runs / p) for p in ("gauss", "ngram", "vae", "sweep")]
    assert main(["report", *args, "-o", str(out)]) == 0
    return out


def image_files(runs: Path) -> list[Path]:
    """The figures a report of the runs must embed: figures/ and per-generation grids (all but later seeds')."""
    files = []
    for folder in runs.rglob("*"):
        if folder.is_dir() and folder.name in ("figures", "samples") and "seed-1" not in folder.parts:
            files += [p for p in folder.iterdir() if p.suffix in (".png", ".gif")]
    return files


def test_report_is_self_contained(runs, report):
    """Every image is a data URI that decodes, links stay inside the page, nothing loads from elsewhere."""
    text = report.read_text()
    page = Page(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    assert not re.search(r"url\(|@import", "".join(page.styles))
    images = [a["src"] for t, a in page.tags if t == "img"]
    kinds = set()
    for src in images:
        head, _, data = src.partition(",")
        assert re.fullmatch(r"data:image/(png|gif);base64", head), head[:40]
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            assert im.width > 0 and im.height > 0
            kinds.add(im.format)
    assert kinds == {"PNG", "GIF"}
    assert len(images) == len(image_files(runs)) > 10     # every figure, GIF and sample grid, once
    for tag, attrs in page.tags:
        for key in set(attrs) & {"href", "src", "action", "poster"}:
            value = attrs[key] or ""
            assert not re.match(r"(https?:)?//", value), (tag, value[:60])
            if key == "href":
                assert value.startswith("#") and value[1:] in page.ids, value
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?:", text)


def test_report_content(runs, report):
    """Each run has its section (contents linked), config, metric table, samples; the sweep is listed."""
    text = report.read_text()
    page = Page(text)
    toc = [a["href"][1:] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    for run in ["gauss/mle", "gauss/unbiased", "ngram/replace", "ngram/accumulate", "vae",
                "sweep/p0/seed-0", "sweep/p0/seed-1", "sweep/p1/seed-0"]:
        anchor = re.sub(r"[^A-Za-z0-9_-]+", "-", str(runs / run)).strip("-")[-60:]
        assert anchor in page.ids and anchor in toc, run
    assert text.count("Does refitting N(85, 20^2)") >= 3     # the experiment and both variants
    assert "ddof: 1" in text and "regime:" in text          # the resolved configs
    assert "generation 0</th><th>generation 5" in text and "<td>var</td>" in text
    assert "<svg" in text                                   # inline trends
    samples = (runs / "ngram" / "replace" / "text_samples.csv").read_text().splitlines()
    assert samples[1].split(",")[3].strip('"')[:40] in text  # a stored sample text
    assert "figures/sweep.png" in text and "<th>regime.n</th>" in text
    link = re.search(r'<td><a href="#([^"]+)">p1/seed-0</a></td>', text)   # sweep.csv links its runs
    assert link and link.group(1) in page.ids
    assert text.count("not a sweep point's first seed") == 1               # p0/seed-1, listed only
    assert "Sample grids" in text and "samples.gif" in text


def test_max_runs_and_all_seeds(runs):
    """Past --max-runs, runs keep their place in the contents and their config, without figures;
    --all-seeds shows every seed."""
    from model_collapse.report import build_report
    figures = len(list((runs / "sweep" / "p0" / "seed-0" / "figures").glob("*.png")))
    text = build_report([runs / "sweep"], max_runs=1)
    assert text.count("past --max-runs 1") == 1 and text.count("not a sweep point's first seed") == 1
    assert text.count("<img") == 1 + figures
    assert "p1/seed-0" in text and text.count("regime:") == 3
    text = build_report([runs / "sweep"], all_seeds=True)
    assert "not included" not in text and text.count("<img") == 1 + 3 * figures


def test_plot_draws_missing_figures(runs, tmp_path):
    """A run without figures (a sweep's, by default) says how to draw them; --plot draws them first."""
    run = tmp_path / "seed-0"
    shutil.copytree(runs / "sweep" / "p1" / "seed-0", run)
    shutil.rmtree(run / "figures")
    stored = mc.open_run(run)
    assert stored.report(tmp_path / "a.html") == tmp_path / "a.html"
    assert "No figures in this run directory" in (tmp_path / "a.html").read_text() and not stored.figures
    assert stored.report(tmp_path / "b.html", plot=True) == tmp_path / "b.html"
    assert (run / "figures" / "metrics.png").exists()
    assert (tmp_path / "b.html").read_text().count("<img") == len(list((run / "figures").glob("*.png"))) >= 1


def test_report_refuses_what_is_not_a_run(tmp_path):
    """A missing path or a folder without runs: one RunDirError (the CLI's exit 2), nothing written."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="is not a directory"):
        mc.open_run(tmp_path / "nope").report(tmp_path / "r.html")
    with pytest.raises(RunDirError, match="holds no run directory"):
        Run(tmp_path / "empty").report(tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_demo_writes_html(tmp_path):
    """collapse demo writes report.html next to REPORT.md, with the recipe's figures embedded."""
    from model_collapse.demo import demo
    md = demo(tmp_path / "demo", quick=True, recipes=["gaussian-85-20"])
    html = (md.parent / "report.html").read_text()
    assert "gaussian-85-20" in html and "ran in" in html
    assert html.count('src="data:image/png;base64,') == len(list((md.parent).rglob("figures/*.png")))


def chromium() -> str | None:
    """A headless-capable Chromium or Chrome on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Put into a copy of the report: records console errors, failed loads and CSP refusals from the very
# start, then, once everything has loaded, what every image decoded to, into the DOM that --dump-dom prints.
PROBE = """<script>
window.__problems = [];
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { window.__problems.push(level + ": " + args.join(" ")); original(...args); };
}
addEventListener("error", e => window.__problems.push("error: " + (e.message || (e.target && e.target.outerHTML
  || "").slice(0, 80))), true);
addEventListener("securitypolicyviolation", e => window.__problems.push("csp: " + e.blockedURI));
addEventListener("load", () => {
  const images = Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const links = Array.from(document.querySelectorAll("a[href^='#']"),
                           a => !!document.getElementById(a.getAttribute("href").slice(1)));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, links, problems: window.__problems});
  document.body.appendChild(out);
});
</script>"""


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile (no sandbox: tests may run as root in a container)."""
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def test_report_opens_in_chromium(report, tmp_path):
    """Headless Chromium loads the report with no console error and every image decoded; keeps a screenshot."""
    browser = chromium()
    if browser is None:
        pytest.skip("headless Chromium not found: install the Debian package `chromium` "
                    "(`make test` does so when run as root where apt-get exists)")
    text = report.read_text()
    # The report forbids scripts (its CSP); the probed copy allows inline ones, images stay data:-only.
    probed = text.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    assert probed.count("script-src 'unsafe-inline'") == 1 and "__problems" in probed
    copy = tmp_path / "probed.html"
    copy.write_text(probed)
    done = run_chromium(browser, tmp_path / "profile", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=10000", "--dump-dom", copy.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no probe in Chromium's DOM dump (exit {done.returncode}): {done.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert probe["problems"] == []
    assert len(probe["images"]) == sum(t == "img" for t, _ in Page(text).tags)
    assert all(complete and w > 0 and h > 0 for complete, w, h in probe["images"]), probe["images"]
    assert probe["links"] and all(probe["links"])
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Refused" in line]
    assert console == []
    shot = tmp_path / "report.png"
    done = run_chromium(browser, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,1600",
                        f"--screenshot={shot}", report.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        assert len(im.convert("L").getcolors(1 << 16) or []) > 20   # drawn figures, not a blank page
