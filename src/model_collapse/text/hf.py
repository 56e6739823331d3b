"""Hugging Face models and tokenizers: found on disk or on the hub, with one message when neither works.

A name is a local directory (what `save_pretrained` writes, or a downloaded snapshot) or a hub id
such as `facebook/opt-125m`. A hub id is fetched by `transformers` only where the machine can
reach the hub; with HF_HUB_OFFLINE=1 (or no network) a model not already in the local cache is
one DataError saying how to get it. `transformers` is an optional extra (`pip install
'model-collapse[hf]'`); nothing imports it until a run uses a Hugging Face tokenizer or model.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from ..datasets.errors import DataError
from .tokenize import vocab_hash

INSTALL = "pip install 'model-collapse[hf]' (transformers and safetensors; peft for LoRA)"


def quiet_import(name: str, who_needs: str, install: str = INSTALL):
    """A Hugging Face library (transformers, datasets), quiet (no progress bars, errors only), or a DataError
    saying how to install it."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise DataError(f"{who_needs} the {name} library: {install}") from None
    module.utils.logging.set_verbosity_error()
    module.utils.logging.disable_progress_bar()
    return module


def transformers():
    """The transformers module, quiet."""
    return quiet_import("transformers", "Hugging Face models need")


def offline(*variables: str) -> bool:
    """Whether any of these offline switches (HF_HUB_OFFLINE by default) is set."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in variables or ("HF_HUB_OFFLINE",))


def is_local(name: str) -> bool:
    """Whether `name` names a directory on disk (else it is taken for a hub id)."""
    return Path(os.path.expanduser(name)).is_dir()


def load(loader, name: str, what: str, **kwargs):
    """loader.from_pretrained(name) for a local directory or a hub id, with one clear error if that fails."""
    local = is_local(name)
    path = os.path.expanduser(name) if local else name
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        if local:
            raise DataError(f"{what} {name}: the directory holds no readable {what} ({str(e).splitlines()[0]}); "
                            f"write one there with save_pretrained, or name a hub id") from None
        how = ("HF_HUB_OFFLINE is set, so only the local cache is searched" if offline() else
               "it is neither a local directory nor reachable on the Hugging Face hub from here")
        raise DataError(
            f"{what} '{name}' is not on disk: {how}. On a machine with network access run "
            f"`huggingface-cli download {name}` (or `python -c \"import transformers as t; "
            f"t.AutoModelForCausalLM.from_pretrained('{name}')\"`) to fill the cache, or save the model to a "
            f"directory and give its path") from None


class HFTokenizer:
    """A Hugging Face tokenizer with the project's tokenizer interface (text/tokenize.py)."""

    kind = "hf"

    def __init__(self, tok, name: str):
        self._tok, self.name = tok, name
        vocab = tok.get_vocab()
        self.vocab = [f"<unused {i}>" for i in range(len(tok))]   # ids without a string keep a placeholder
        for s, i in vocab.items():
            if i < len(self.vocab):
                self.vocab[i] = s
        self.hash = vocab_hash(self.vocab)
        # the token every block is read after, so its first token is predicted too
        self.bos = next((t for t in (tok.bos_token_id, tok.eos_token_id) if t is not None), None)

    @classmethod
    def load(cls, name: str) -> "HFTokenizer":
        """AutoTokenizer.from_pretrained(name) (a directory or a hub id)."""
        tf = transformers()
        return cls(load(tf.AutoTokenizer, name, "tokenizer"), name)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (L,) int32 of a text, no special tokens (lines encoded as one batch: fast tokenizers)."""
        lines = text.splitlines(keepends=True)
        if not lines:
            return np.zeros(0, np.int32)
        ids = self._tok(lines, add_special_tokens=False)["input_ids"]
        return np.concatenate([np.asarray(i, np.int32) for i in ids])

    def decode(self, ids) -> str:
        """The text of token ids."""
        return self._tok.decode([int(i) for i in np.ravel(ids)])
