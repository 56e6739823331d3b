"""The transformer family: the GPT, its decoders (KV cache, beam search), fits, runs, resume after kill -9."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import model_collapse as mc
from model_collapse import contracts
from model_collapse.config import validate
from model_collapse.errors import ConfigError
from model_collapse.loop import build
from model_collapse.nn.generate import Stepper, generate, penalise, warp
from model_collapse.nn.gpt import GPT, _CausalAttention

torch.set_num_threads(1)

ZIPF = {"kind": "zipf-markov", "vocab": 12, "block": 16, "train_tokens": 16 * 200}
TINY = {"kind": "transformer", "layers": 1, "heads": 2, "width": 16, "batch": 16, "compile": False,
        "precision": "fp32", "threads": 1}


def tiny_gpt(vocab=3, context=8, seed=0, scale=1.0) -> GPT:
    """A random 1-layer GPT; scale > 1 sharpens its next-token distributions."""
    model = GPT(vocab, context, layers=1, heads=2, width=16)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def write_cfg(tmp_path, raw, name="exp.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return str(p)


# -- the model and its decoders -------------------------------------------------------------------------
def test_overfits_a_tiny_corpus_and_greedy_samples_reproduce_it(tmp_path):
    """Four sentences, each its own block: after training, a prompted greedy decode of each block's first
    4 characters writes the rest of that block exactly, each token after the prompt with probability near 1."""
    lines = ["the cat sat on a mat. ", "a dog ran far away.   ", "my hen laid an egg!   ", "big fish swim deep.   "]
    text = "".join(s[:20] for s in lines)
    (tmp_path / "a.txt").write_text(text * 40)
    exp = validate({"chains": 1, "source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 20,
                                             "split": [0.9, 0.05, 0.05]},
                    "model": {**TINY, "width": 32, "heads": 4, "epochs": 60, "val_fraction": 0, "lr": 3e-3,
                              "mode": "prompted", "prompt": 4, "decode": "greedy"},
                    "regime": {"kind": "replace", "n": 100}})
    src, fam, reg, _ = build(exp)
    real = src.real(reg.size(0), np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    out = fam.sample(reg.size(0), np.random.default_rng(2))
    assert np.array_equal(out, real)
    lp = fam.token_logprob(real[0])[0]
    assert lp[:, 4:].mean() > -0.01 and abs(lp[:, 0].mean() - np.log(0.25)) < 0.1   # 4 sentences: the first token is a guess


@pytest.mark.parametrize("penalty", [1.0, 2.0])
def test_beam_search_finds_the_most_likely_sequence(penalty):
    """On a 3-token model every 4-token continuation is enumerated: a beam as wide as the 3^3 prefixes finds the
    best (with the repetition penalty in its scores, as HF's beam search); without a penalty a beam of 1 is greedy."""
    model, v, m = tiny_gpt(scale=4.0), 3, 4
    prompt = torch.tensor([[3, 0, 2], [3, 1, 1]])                 # BOS + 2 prompt tokens, two rows
    seq0 = torch.cat([prompt, torch.zeros(2, m, dtype=torch.long)], 1)
    for r in range(2):
        best, best_score = None, -np.inf
        for tail in itertools.product(range(v), repeat=m):
            seq = seq0[r:r + 1].clone()
            seq[0, 3:] = torch.tensor(tail)
            with torch.no_grad():
                logp = model(seq[:, :-1]).log_softmax(-1)[0]        # (L, V)
            score = 0.0
            for t in range(3, 3 + m):
                seen = torch.zeros(1, v, dtype=torch.bool)
                seen[0, seq[0, 1:t]] = True
                score += float(penalise(logp[t - 1:t], seen, penalty)[0, seq[0, t]])
            if score > best_score:
                best, best_score = seq, score
        got = generate(model, seq0[r:r + 1], 3, decode="beam", beams=27, repetition_penalty=penalty)
        assert torch.equal(got, best), (r, got, best)
    if penalty == 1.0:   # (with a penalty they differ, as in HF: greedy penalises logits, beam search log-probs)
        greedy = generate(model, seq0, 3, decode="greedy")
        assert torch.equal(generate(model, seq0, 3, decode="beam", beams=1), greedy)


@pytest.mark.parametrize("context", [16, 6])
def test_kv_cache_gives_the_same_text_and_scores(context):
    """Sampling, greedy and beam decoding write the same tokens with and without the KV cache, including a
    context shorter than the block (windows); teacher-forced logits match token_logprob's."""
    model = tiny_gpt(vocab=5, context=context, scale=2.0)
    seq = torch.full((6, 17), 5)
    seq[:, 1:4] = torch.randint(0, 5, (6, 3), generator=torch.Generator().manual_seed(0))
    for kw in ({"decode": "sample", "temperature": 0.8, "top_k": 4, "top_p": 0.9},
               {"decode": "greedy", "repetition_penalty": 1.3}, {"decode": "beam", "beams": 3}):
        a = generate(model, seq, 4, gen=torch.Generator().manual_seed(1), **kw)
        b = generate(model, seq, 4, gen=torch.Generator().manual_seed(1), cache=False, **kw)
        assert torch.equal(a, b), kw
        assert torch.equal(a[:, :4], seq[:, :4]) and (a[:, 4:] < 5).all()
    with torch.inference_mode():
        scores = [torch.stack([st.logits(a, t).log_softmax(-1) for t in range(1, 17)], 1)
                  for st in (Stepper(model, 16, True), Stepper(model, 16, False))]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-5)


def test_sampling_follows_the_model_and_the_warpers():
    """Drawn first tokens follow softmax(logits / T) (chi-square); top-k keeps k tokens; top-p keeps the smallest
    set reaching p; the repetition penalty divides positive and multiplies negative scores of seen tokens."""
    from scipy.stats import chisquare
    model = tiny_gpt(vocab=5, context=4, scale=2.0)
    seq = torch.full((20000, 2), 5)
    out = generate(model, seq, 1, temperature=0.7, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = (model(seq[:1, :1])[0, -1] / 0.7).double().softmax(-1).numpy()
    p /= p.sum()
    assert chisquare(np.bincount(out[:, 1].numpy(), minlength=5), p * 20000).pvalue > 1e-3
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    assert torch.isinf(warp(logits, 1.0, 2, 1.0)).sum() == 3
    probs = logits.softmax(-1)[0]                                       # 0.61, 0.22, 0.14, 0.03, 0.004
    kept = torch.isfinite(warp(logits, 1.0, None, 0.8))[0]
    assert kept.tolist() == [True, True, False, False, False] and probs[:1].sum() < 0.8 <= probs[:2].sum()
    seen = torch.tensor([[True, False, False, True, False]])
    assert penalise(logits, seen, 2.0).tolist() == [[1.0, 1.0, 0.5, -2.0, -3.0]]


def test_compiled_bf16_attention_matches_the_fused_kernel():
    """The attention used inside a compiled bf16 CPU step gives SDPA's outputs and gradients (checked in float32)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 3, 10, 8, generator=g)
    ours = _CausalAttention.apply(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- the family ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["warm", "gen0", "fresh"])
def test_init_and_state_round_trip(init):
    """A loaded state (weights, generation-0 weights, prompt pool) fits and samples exactly as the original;
    warm continues the last model, gen0 restarts from generation 0's whatever came between, fresh from new weights."""
    exp = contracts.experiment({**TINY, "epochs": 1, "init": init, "mode": "prompted", "prompt": 4,
                                "finetune_epochs": 1}, ZIPF, chains=2, regime={"kind": "replace", "n": 200})
    src, fam, _, _ = build(exp)
    real = src.real(200, np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    x = fam.sample(200, np.random.default_rng(2))
    assert x.shape == (2, 200, 16) and np.array_equal(x[:, :, :4], real[:, :, :4])   # every prompt, in order
    state1 = {k: np.array(v) for k, v in fam.state_dict().items()}
    other = build(exp)[1]
    other.load_state_dict(state1)
    for f in (fam, other):
        f.fit(x, np.random.default_rng(3))
    weights = lambda f: f.models[1].state_dict()                       # noqa: E731
    assert all(torch.equal(weights(fam)[k], weights(other)[k]) for k in weights(fam))
    assert np.array_equal(fam.sample(50, np.random.default_rng(4)), other.sample(50, np.random.default_rng(4)))
    # The next fit from the state after one fit, and from the state after two: equal unless warm.
    after1, after2 = build(exp)[1], build(exp)[1]
    after1.load_state_dict(state1)
    after2.load_state_dict({k: np.array(v) for k, v in fam.state_dict().items()})
    for f in (after1, after2):
        f.fit(x, np.random.default_rng(5))
    same = all(torch.equal(weights(after1)[k], weights(after2)[k]) for k in weights(fam))
    assert same == (init != "warm")


def test_prompt_from_end_continues_where_blocks_end():
    """prompt_from: end puts each training block's last `prompt` tokens first and the model writes the rest, so a
    second generation prompted from the first's samples starts from model-written text only."""
    exp = contracts.experiment({**TINY, "epochs": 1, "mode": "prompted", "prompt": 4, "prompt_from": "end"},
                               ZIPF, chains=2, regime={"kind": "replace", "n": 100})
    src, fam, _, _ = build(exp)
    real = src.real(100, np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    x = fam.sample(100, np.random.default_rng(2))
    assert np.array_equal(x[:, :, :4], np.broadcast_to(real[:, :, -4:], (2, 100, 4)))
    assert not np.array_equal(x[:, :, 4:8], np.broadcast_to(real[:, :, 4:8], (2, 100, 4)))


@pytest.mark.parametrize("change, needle", [
    ({"model": {**TINY, "context": 17}}, "model.context: a context of 17 tokens is longer than a block"),
    ({"model": {**TINY, "mode": "prompted", "prompt": 16}}, "model.prompt: the prompt (16 tokens) leaves nothing"),
    ({"model": {**TINY, "width": 18, "heads": 4}}, "width (18) must be a multiple of heads (4)"),
    ({"model": {**TINY, "val_fraction": 0}}, "early stopping needs held-out data"),
    ({"source": {"kind": "gaussian"}}, "family transformer fits text data; source gaussian yields vector data"),
])
def test_bad_config_one_clear_message(tmp_path, change, needle):
    """A context longer than the block, a prompt filling it, ...: ConfigError (the CLI's exit 2) with one
    problem line, nothing written."""
    raw = {"source": dict(ZIPF), "model": dict(TINY), "regime": {"kind": "replace", "n": 100}, "generations": 2,
           **change}
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(needle)) as caught:
        mc.run(write_cfg(tmp_path, raw), out=out, figures=False)
    err = str(caught.value).splitlines()
    assert err[0] == "invalid configuration:" and len(err) == 2 and needle in err[1], err
    assert not out.exists()


def test_context_longer_than_the_text(tmp_path):
    """A user's text shorter than the block (and so than the context): one message saying so."""
    (tmp_path / "a.txt").write_text("In the beginning.")
    raw = {"source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 64}, "model": dict(TINY),
           "regime": {"kind": "replace", "n": 10}, "generations": 2}
    with pytest.raises(ConfigError, match="source.block: a block of 64 characters is longer than the text") as caught:
        mc.run(write_cfg(tmp_path, raw), out=tmp_path / "run", figures=False)
    err = str(caught.value).splitlines()
    assert len(err) == 2 and "source.block: a block of 64 characters is longer than the text" in err[1], err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="model.context"):
        validate({**raw, "source": {**raw["source"], "block": 16}, "model": {**TINY, "context": 32}})


# -- whole runs ----------------------------------------------------------------------------------------
RUN = {"seed": 2, "chains": 1, "generations": 40, "reference_n": 100, "checkpoint_seconds": 0,
       "source": dict(ZIPF), "regime": {"kind": "mix", "n": 120, "real": 0.25, "fitted": 0.75},
       "model": {**TINY, "init": "gen0", "max_epochs": 3, "finetune_epochs": 1, "mode": "prompted", "prompt": 4,
                 "decode": "beam", "beams": 2, "repetition_penalty": 1.2},
       "metrics": ["params", "perplexity", "ppl_gen0", "diversity", "vocab_survival", "token_tail",
                   {"name": "text_samples", "n": 1}]}


def test_same_seed_same_metrics(run):
    """Two runs with the same seed give identical metric columns, finite perplexities included."""
    a, b = run({**RUN, "generations": 6}), run({**RUN, "generations": 6})
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert np.isfinite(a["test_ppl"]).all() and np.isfinite(a["ppl0_median"]).all()


def _newest(run) -> int:
    """Generation of the newest checkpoint (-1: none)."""
    return max((int(p.stem.split("-")[1]) for p in run.glob("checkpoint-*.npz")), default=-1)


def test_kill_minus_nine_and_resume_give_identical_metrics(tmp_path):
    """SIGKILL the CLI at random moments (the first while it starts or fits generation 0, the others a moment
    after a new checkpoint), resume each time: every table equals an uninterrupted run's."""
    cfg = write_cfg(tmp_path, RUN)
    ref = tmp_path / "ref"
    assert mc.run(cfg, out=ref, figures=False).status == "complete"
    out, rng, kills = tmp_path / "cut", np.random.default_rng(7), 0
    cmd = [sys.executable, "-m", "model_collapse.cli", "run", cfg, "--out", str(out), "--resume", "--quiet"]
    while kills < 3:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0, first = time.monotonic(), _newest(out)
        delay = rng.uniform(0.3, 2.5) if kills == 0 else rng.uniform(0.0, 0.2)
        progressed = t0 if kills == 0 else None
        while proc.poll() is None and time.monotonic() - t0 < 90:
            if progressed is None and _newest(out) > first:
                progressed = time.monotonic()
            if progressed is not None and time.monotonic() - progressed >= delay:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        if proc.wait() != -signal.SIGKILL:
            break                              # it finished first: nothing left to interrupt
        kills += 1
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert kills >= 2, kills
    for table in ("metrics", "ppl_hist", "text_samples"):
        assert (out / f"{table}.csv").read_bytes() == (ref / f"{table}.csv").read_bytes(), table


def test_compiled_bf16_fits_are_deterministic_on_two_threads():
    """The default path (one compiled step, bf16 autocast, 2 threads) gives the same weights on every fit: what
    exact resume needs (inductor's embedding gradient added rows in a thread-dependent order before)."""
    exp = contracts.experiment({**TINY, "compile": True, "precision": "bf16", "threads": 2, "epochs": 2}, ZIPF,
                               chains=1, regime={"kind": "replace", "n": 200})
    states = []
    for _ in range(2):
        fam = build(exp)[1]
        fam.fit(build(exp)[0].real(200, np.random.default_rng(0)), np.random.default_rng(1))
        states.append(fam.state_dict())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0] if k.startswith("w/"))
