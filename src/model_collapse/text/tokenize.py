"""Tokenizers for text sources: characters, byte-pair tokens (the `tokenizers` library), words.

Every tokenizer has `vocab` (token strings by id), `encode(str) -> (L,) int32`,
`decode(ids) -> str` and `hash` (a digest of the vocabulary: a run records it
and refuses to resume with a tokenizer that gives the ids other meanings).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..datasets.errors import DataError


def vocab_hash(vocab: list[str]) -> str:
    """A short, stable digest of a vocabulary (its strings in id order)."""
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def check_vocab_hash(saved, source) -> None:
    """Refuse saved state made with another tokenizer than `source`'s (one message saying what changed)."""
    saved = "(none recorded)" if saved is None else str(saved)
    if saved != source.tokenizer.hash:
        raise DataError(
            f"the run was made with a tokenizer whose vocabulary hash is {saved}, but source {source.name} now "
            f"gives {source.tokenizer.hash} ({len(source.vocab)} tokens): the text or the tokenizer changed since "
            f"the run started; restore them, or start a new run")


class CharTokenizer:
    """One token per Unicode character; the vocabulary is the corpus's characters, sorted."""

    kind = "char"

    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)
        self._points = np.array([ord(c) for c in self.vocab], np.uint32)   # sorted code points
        self.hash = vocab_hash(self.vocab)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every character of `text`."""
        points = np.unique(_code_points(text))
        return cls([chr(int(p)) for p in points])

    def encode(self, text: str) -> np.ndarray:
        """Token ids (L,) int32; a character outside the vocabulary is an error naming it."""
        cps = _code_points(text)
        idx = np.minimum(np.searchsorted(self._points, cps), len(self._points) - 1)
        bad = self._points[idx] != cps
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"character {text[i]!r} (at position {i}) is not in the tokenizer's "
                            f"{len(self.vocab)}-character vocabulary")
        return idx.astype(np.int32)

    def decode(self, ids) -> str:
        """The text of token ids."""
        return self._points[np.asarray(ids, np.int64)].astype("<u4").tobytes().decode("utf-32-le")


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of a string, (L,) uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


class WordTokenizer:
    """Synthetic words w0 .. w{V-1}, written separated by spaces (the Zipf-Markov language)."""

    kind = "word"

    def __init__(self, size: int):
        self.vocab = [f"w{i}" for i in range(size)]
        self.hash = vocab_hash(self.vocab)
        self._index = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> np.ndarray:
        """Token ids of space-separated words."""
        try:
            return np.array([self._index[w] for w in text.split()], np.int32)
        except KeyError as e:
            raise DataError(f"word {e.args[0]!r} is not in the vocabulary w0 .. w{len(self.vocab) - 1}") from None

    def decode(self, ids) -> str:
        """Words separated by spaces."""
        return " ".join(self.vocab[int(i)] for i in np.ravel(ids))


class BPETokenizer:
    """Byte-level byte-pair tokens (Sennrich et al. 2016; GPT-2's byte alphabet) from `tokenizers`."""

    kind = "bpe"

    def __init__(self, tok):
        self._tok = tok
        vocab = tok.get_vocab()
        self.vocab = [None] * len(vocab)
        for s, i in vocab.items():
            self.vocab[i] = s
        if any(v is None for v in self.vocab):
            raise DataError("the byte-pair tokenizer's ids are not contiguous; delete its cache file and retry")
        self.hash = vocab_hash(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (L,) int32 (lines are encoded as a batch: the pre-tokenizer never joins across them)."""
        lines = text.splitlines(keepends=True)
        out = [np.asarray(e.ids, np.int32) for e in self._tok.encode_batch(lines)] if lines else []
        return np.concatenate(out) if out else np.zeros(0, np.int32)

    def decode(self, ids) -> str:
        """The text of token ids (byte-level: lossless)."""
        return self._tok.decode([int(i) for i in np.ravel(ids)])


def train_bpe(text: str, vocab_size: int, cache: Path) -> BPETokenizer:
    """A byte-level BPE tokenizer trained on `text`, cached under `cache` by content hash."""
    try:
        import tokenizers
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise DataError("byte-pair tokens need the `tokenizers` library: pip install tokenizers "
                        "(or set source.tokenizer: char)") from None
    key = hashlib.sha256(f"bpe-v1|{vocab_size}|{tokenizers.__version__}|".encode() + text.encode()).hexdigest()
    path = Path(cache) / f"bpe-{key[:24]}.json"
    if path.exists():
        return BPETokenizer(Tokenizer.from_file(str(path)))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return BPETokenizer(tok)
