"""The hf family (transformers causal LMs) and the hf-dataset source, with no download.

Tiny GPT-2 and OPT models are built from a config and written with save_pretrained to a temporary
directory, then loaded by path, the path a user's downloaded model takes; their tokenizer is a
byte-level BPE trained here with `tokenizers`. Hub ids are exercised offline (HF_HUB_OFFLINE=1, set
by conftest.py): a model that is not on disk is one clear message."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import model_collapse as mc  # noqa: E402
from model_collapse.config import validate  # noqa: E402
from model_collapse.datasets.errors import DataError  # noqa: E402
from model_collapse.errors import CollapseError  # noqa: E402
from model_collapse.loop import build  # noqa: E402

torch.set_num_threads(1)
WORDS = ("the cat dog hen fish sat ran laid swam on a mat far egg deep and then it was good in light dark "
         "of waters heaven earth day night").split()


def corpus(n_lines: int = 600, seed: int = 0) -> str:
    """Sentences of a small fixed vocabulary, one per line."""
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, rng.integers(5, 12))) + ".\n" for _ in range(n_lines))


def save_tiny(path, model_type: str, text: str, positions: int = 65, vocab: int = 300):
    """A random tiny model of model_type and a BPE tokenizer trained on text, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text.splitlines(keepends=True), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    shape = {"gpt2": dict(n_layer=1, n_head=2, n_embd=32, n_positions=positions),
             "opt": dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=32, ffn_dim=64,
                         word_embed_proj_dim=32, max_position_embeddings=positions)}[model_type]
    cfg = AutoConfig.for_model(model_type, vocab_size=len(fast) + 3, bos_token_id=0, eos_token_id=1,
                               pad_token_id=1, **shape)   # 3 rows more than tokens, as OPT's embedding has
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "corpus.txt"
    p.write_text(corpus())
    return str(p)


@pytest.fixture(scope="module", params=["gpt2", "opt"])
def pretrained(request, tmp_path_factory, text_file):
    """(model directory, text file): a tiny pretrained-style model on disk."""
    d = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return save_tiny(d, request.param, open(text_file).read()), text_file


def exp_for(model_dir, text_file, **model):
    return {"seed": 0, "chains": 1, "generations": 2,
            "source": {"kind": "text", "path": text_file, "block": 24, "tokenizer": model_dir},
            "model": {"kind": "hf", "model": model_dir, "epochs": 1, "batch": 8, "lr": 1e-3, "threads": 1, **model},
            "regime": {"kind": "replace", "n": 60}, "reference_n": 40,
            "metrics": ["params", "perplexity", "ppl_gen0", "diversity", "vocab_survival"]}


# -- loading by path, the model's own tokens -------------------------------------------------------------------
def test_pretrained_model_loads_by_path_and_runs(pretrained, tmp_path):
    """A saved GPT-2 / OPT and its tokenizer, named by directory: blocks are the tokenizer's ids, samples never
    use the embedding rows past the tokenizer, scores are finite, and bits per character follow from nats."""
    model_dir, text = pretrained
    run = mc.run(exp_for(model_dir, text, mode="prompted", prompt=8, decode="beam", beams=2,
                         repetition_penalty=1.3), out=tmp_path / "r", figures=False)
    df = run.metrics()
    assert run.status == "complete" and np.isfinite(df[["test_ce", "test_bpc", "ppl0_median", "loss"]]).all().all()
    exp = validate(exp_for(model_dir, text))
    src, fam, reg, _ = build(exp)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    first = src.splits["train"][0]
    assert tok.decode(first.tolist()) == src.tokenizer.decode(first) and len(src.vocab) == len(tok)
    fam.fit(src.real(reg.size(0), np.random.default_rng(0)), np.random.default_rng(1))
    out = fam.sample(30, np.random.default_rng(2))
    assert out.max() < len(tok) and out.shape == (1, 30, 24)
    ref = src.reference(20, np.random.default_rng(3))
    lp = fam.token_logprob(ref)
    chars = sum(len(src.tokenizer.decode(b)) for b in ref)
    bpc = mc.metrics.text.perplexity(type("C", (), {"model": fam, "reference": ref, "source": src,
                                                    "generation": 1, "store": None})())["test_bpc"]
    assert np.allclose(bpc, -lp.sum() / np.log(2) / chars)


def test_generation_zero_overfits_and_greedy_continuations_reproduce_it(tmp_path):
    """Four sentences, each its own block, a GPT-2 built from a config over the characters: after training, a
    prompted greedy continuation of each block's first 4 characters writes the rest of that block exactly."""
    lines = ["the cat sat on a mat. ", "a dog ran far away.   ", "my hen laid an egg!   ", "big fish swim deep.   "]
    (tmp_path / "a.txt").write_text("".join(s[:20] for s in lines) * 40)
    exp = validate({"chains": 1, "source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 20},
                    "model": {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 4, "n_embd": 32},
                              "epochs": 60, "val_fraction": 0, "lr": 3e-3, "batch": 16, "threads": 1,
                              "mode": "prompted", "prompt": 4, "decode": "greedy"},
                    "regime": {"kind": "replace", "n": 100}})
    src, fam, reg, _ = build(exp)
    real = src.real(reg.size(0), np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    assert np.array_equal(fam.sample(reg.size(0), np.random.default_rng(2)), real)
    assert fam.token_logprob(real[0])[0][:, 4:].mean() > -0.02


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_beam_search_agrees_with_exhaustive_search(tmp_path, penalty):
    """On a 3-character model every 3-token continuation is enumerated: transformers' beam search, 9 beams wide
    (every prefix kept), finds the continuation of highest log-probability (with a penalty: of highest penalised
    score, computed here from the model's logits), and the start token is never written."""
    (tmp_path / "a.txt").write_text("abcacbbac" * 200)
    exp = validate({"chains": 1, "source": {"kind": "text", "path": str(tmp_path / "a.txt"), "block": 5},
                    "model": {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
                              "epochs": 1, "threads": 1, "mode": "prompted", "prompt": 2, "decode": "beam",
                              "beams": 9, "repetition_penalty": penalty},
                    "regime": {"kind": "replace", "n": 50}})
    src, fam, reg, _ = build(exp)
    real = src.real(6, np.random.default_rng(0))
    fam.fit(real, np.random.default_rng(1))
    model = fam.models[0]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)                           # sharper next-token distributions: a unique best continuation
    got = fam.sample(6, np.random.default_rng(2))[0]
    v = len(src.vocab)
    for block, row in zip(real[0], got):
        best, best_score = None, -np.inf
        for tail in itertools.product(range(v), repeat=3):
            seq = np.concatenate([block[:2], tail])
            inp = torch.tensor([[fam.bos, *seq[:-1]]])
            with torch.no_grad():
                logits = model(input_ids=inp).logits[0].float()
            logits[:, v:] = -torch.inf
            score = 0.0
            for t in range(2, 5):
                step = logits[t].clone()
                seen = torch.tensor(sorted({fam.bos, *seq[:t].tolist()}))
                s = step[seen]
                step[seen] = torch.where(s < 0, s * penalty, s / penalty)   # transformers' repetition penalty
                score += float(step.log_softmax(-1)[seq[t]])
            if score > best_score:
                best, best_score = seq, score
        assert np.array_equal(row, best), (row, best)


# -- the loop: seeds, resume, real data ----------------------------------------------------------------------
TINY_RUN = {"seed": 3, "chains": 1, "generations": 4,
            "source": {"kind": "text", "path": None, "block": 24, "tokenizer": "bpe", "vocab_size": 300},
            "model": {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32},
                      "epochs": 2, "finetune_epochs": 1, "batch": 8, "lr": 2e-3, "threads": 1, "init": "base",
                      "mode": "prompted", "prompt": 8, "decode": "sample"},
            "regime": {"kind": "replace", "n": 80}, "reference_n": 40,
            "metrics": ["params", "perplexity", "ppl_gen0", "diversity", {"name": "text_samples", "n": 1}]}


def tiny_run(text_file, **changes):
    raw = yaml.safe_load(yaml.safe_dump(TINY_RUN))
    raw["source"]["path"] = text_file
    for k, v in changes.items():
        head, _, tail = k.partition(".")
        raw[head][tail] = v
    return raw


def test_same_seed_same_metrics(text_file, tmp_path):
    a = mc.run(tiny_run(text_file), out=tmp_path / "a", figures=False)
    b = mc.run(tiny_run(text_file), out=tmp_path / "b", figures=False)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    assert np.isfinite(a.metrics()["test_ppl"]).all() and b.status == "complete"


def _newest(run) -> int:
    return max((int(p.stem.split("-")[1]) for p in run.glob("checkpoint-*.npz")), default=-1)


def test_kill_minus_nine_and_resume_give_identical_metrics(text_file, tmp_path):
    """SIGKILL the CLI as soon as it has committed generation 0, then generation 2; resuming gives the same
    tables, byte for byte, as an uninterrupted run."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(text_file, **{"regime.n": 120})))
    mc.run(str(cfg), out=tmp_path / "ref", figures=False)
    out, kills = tmp_path / "cut", 0
    cmd = [sys.executable, "-m", "model_collapse.cli", "run", str(cfg), "--out", str(out), "--resume", "--quiet",
           "--no-figures"]
    for target in (0, 2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and _newest(out) < target:
            time.sleep(0.01)                      # poll for the condition: the checkpoint of `target`
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert kills >= 1
    for table in ("metrics", "ppl_hist", "text_samples"):
        assert (out / f"{table}.csv").read_bytes() == (tmp_path / "ref" / f"{table}.csv").read_bytes(), table


def test_real_data_holds_test_perplexity_closer_to_generation_zero(text_file, tmp_path):
    """Shumailov et al.'s comparison, tiny: with 10% of the real blocks kept in every generation, the test
    perplexity of the last generation stays closer to generation 0's than with none (over 2 chains)."""
    gaps = {}
    for real in (0.0, 0.1):
        raw = tiny_run(text_file, **{"regime.n": 120})
        raw.update(generations=5, chains=2, seed=1)
        raw["regime"] = {"kind": "mix", "n": 120, "real": real, "fitted": 1 - real}
        df = mc.run(raw, out=tmp_path / f"r{real}", figures=False).metrics()
        ppl = df.pivot(index="generation", columns="chain", values="test_ppl").to_numpy()
        gaps[real] = float(np.mean(ppl[-1] - ppl[0]))
    assert gaps[0.1] < gaps[0.0], gaps


def test_lora_trains_and_stores_only_the_adapters(pretrained, tmp_path):
    """With lora, the checkpoint's weights are the adapters alone, the pretrained weights do not move, and the
    adapters do (their B matrices start at zero)."""
    pytest.importorskip("peft")
    model_dir, text = pretrained
    exp = validate(exp_for(model_dir, text, lora={"r": 2, "alpha": 4}, lr=1e-2))
    src, fam, reg, _ = build(exp)
    fam.fit(src.real(reg.size(0), np.random.default_rng(0)), np.random.default_rng(1))
    state = fam.state_dict()
    weights = [k for k in state if k.startswith("w/")]
    assert weights and all("lora_" in k for k in weights)
    assert any(np.abs(state[k]).max() > 0 for k in weights if "lora_B" in k)
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    merged = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in fam.models[0].state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], merged[k].cpu()) for k in base if k in merged)
    fam2 = build(exp)[1]
    fam2.load_state_dict(state)
    ref = src.reference(10, np.random.default_rng(2))
    assert np.array_equal(fam.token_logprob(ref), fam2.token_logprob(ref))


# -- bad input: one clear message ----------------------------------------------------------------------------
def test_hub_id_not_on_disk_offline_is_one_message(text_file, tmp_path):
    raw = exp_for("no-such-org/no-such-model", text_file)
    with pytest.raises(DataError, match="is not on disk: HF_HUB_OFFLINE is set.*huggingface-cli download"):
        mc.run(raw, out=tmp_path / "r", figures=False)
    assert not (tmp_path / "r").exists()
    cli = subprocess.run([sys.executable, "-m", "model_collapse.cli", "run", "-", "--out", str(tmp_path / "c")],
                         input=yaml.safe_dump(raw), capture_output=True, text=True)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_block_longer_than_the_models_context(pretrained, tmp_path):
    model_dir, text = pretrained
    raw = exp_for(model_dir, text)
    raw["source"]["block"] = 64                      # + the start token: 65 positions, the model has 65
    raw["model"].update(epochs=1)
    mc.run({**raw, "generations": 1}, out=tmp_path / "ok", figures=False)
    raw["source"]["block"] = 65
    with pytest.raises(DataError, match="needs 66 positions, but .* takes at most 65; lower source.block to 64"):
        mc.run(raw, out=tmp_path / "r", figures=False)


def test_pretrained_model_needs_its_own_tokenizer(pretrained):
    model_dir, text = pretrained
    raw = exp_for(model_dir, text)
    raw["source"]["tokenizer"] = "char"
    with pytest.raises(CollapseError, match=f"reads its own tokens: set source.tokenizer: {model_dir}"):
        validate(raw)


def test_resume_with_another_tokenizer_is_refused(text_file, tmp_path):
    """A run made with one tokenizer directory refuses to resume once that directory holds another tokenizer."""
    model_dir = save_tiny(tmp_path / "m", "gpt2", open(text_file).read(), vocab=300)
    raw = exp_for(model_dir, text_file)
    mc.run({**raw, "generations": 1}, out=tmp_path / "r", figures=False)
    save_tiny(tmp_path / "m", "gpt2", open(text_file).read(), vocab=280)
    with pytest.raises(CollapseError, match="vocabulary hash"):
        mc.open_run(tmp_path / "r").resume(generations=2, figures=False)


# -- hf-dataset -------------------------------------------------------------------------------------------------
def test_hf_dataset_from_disk_and_from_files_cut_the_same_blocks(tmp_path):
    """A DatasetDict saved with save_to_disk, and the same rows as parquet (one split, dealt by source.split),
    give token blocks of the joined text column; a missing column is one message naming the columns."""
    datasets = pytest.importorskip("datasets")
    rows = {s: [f"{s} line {i}: " + corpus(1, seed=i).strip() for i in range(n)]
            for s, n in (("train", 300), ("validation", 30), ("test", 30))}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"body": r}) for s, r in rows.items()})
    dd.save_to_disk(str(tmp_path / "dd"))
    src = validate({"source": {"kind": "hf-dataset", "path": str(tmp_path / "dd"), "column": "body", "block": 16},
                    "model": {"kind": "ngram"}, "regime": {"kind": "replace", "n": 10}}).source.build(1)
    tok = src.tokenizer
    assert tok.decode(src.splits["test"].ravel()) == "\n".join(rows["test"])[: src.splits["test"].size]
    assert np.array_equal(src.splits["train"].ravel(), tok.encode("\n".join(rows["train"]))[: src.splits["train"].size])
    dd["train"].to_parquet(str(tmp_path / "t.parquet"))
    one = validate({"source": {"kind": "hf-dataset", "path": str(tmp_path / "t.parquet"), "column": "body",
                               "block": 16}, "model": {"kind": "ngram"},
                    "regime": {"kind": "replace", "n": 10}}).source.build(1)
    assert sum(len(one.splits[s]) for s in one.splits) == len(tok.encode("\n".join(rows["train"]))) // 16
    with pytest.raises(DataError, match="has no column 'text' \\(it has body\\)"):
        validate({"source": {"kind": "hf-dataset", "path": str(tmp_path / "dd")}, "model": {"kind": "ngram"},
                  "regime": {"kind": "replace", "n": 10}}).source.build(1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_in_bf16(text_file, tmp_path):
    df = mc.run(tiny_run(text_file, **{"model.device": "cuda", "model.precision": "bf16"}), out=tmp_path / "r",
                figures=False).metrics()
    assert np.isfinite(df["test_ppl"]).all()
