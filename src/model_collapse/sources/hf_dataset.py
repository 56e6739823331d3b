"""Text from the `datasets` library: a data set saved with save_to_disk, local files, or a hub id.

`path` is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, a local
parquet / json / jsonl / csv / txt file (or a glob of them), or a hub id such as `wikitext` (with
`name: wikitext-2-raw-v1`), fetched by `datasets` where the machine can reach the hub and cached
by it. Each of the project's splits (train / validation / test) reads the data set's split named in
`splits`; when the data set has only a training split, its text is dealt to the three splits by
`split` as for a text file. The text column's rows are joined by newlines into one stream per split
and cut into blocks of the tokenizer's tokens (sources/text.py); the blocks' digest is recorded in
every checkpoint, so a run refuses to resume on data that changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ..datasets.errors import DataError
from .text import SPLITS, RealTextConfig, TextSource

INSTALL = "pip install 'model-collapse[hf]' (the datasets library)"
FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


class HFDatasetSourceConfig(RealTextConfig):
    """Token blocks of a text column of a Hugging Face data set (on disk, in local files, or on the hub)."""

    kind: Literal["hf-dataset"] = Field("hf-dataset", description=(
        "the source: hf-dataset, token blocks of a text column of a data set loaded by the `datasets` library"))
    path: str = Field(..., description=(
        "a save_to_disk directory, a local parquet / json / jsonl / csv / txt file (or glob), or a hub id "
        "such as wikitext"))
    name: Optional[str] = Field(None, description="the data set's configuration, e.g. wikitext-2-raw-v1")
    column: str = Field("text", description="the column holding the text (a txt file's is `text`)")
    splits: dict[str, str] = Field(default_factory=lambda: {s: s for s in SPLITS}, description=(
        "the data set's split read for each of train, validation and test; a data set with only its "
        "training split is dealt to the three by `split`"))
    revision: Optional[str] = Field(None, description="hub only: a branch, tag or commit of the data set")

    def check(self, exp) -> list[tuple[str, str]]:
        """The split fractions; the splits mapping names train (validation and test optional)."""
        errs = super().check(exp)
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown or "train" not in self.splits:
            errs.append(("source.splits", f"maps the project's splits {', '.join(SPLITS)} to the data set's "
                                          f"(train is required); got {sorted(self.splits)}"))
        return errs

    def build(self, chains: int) -> TextSource:
        """Load the data set's text and cut it into blocks."""
        texts = load_texts(self)
        if "test" in texts:
            texts.setdefault("validation", "")
            return TextSource.from_texts(self, chains, texts, f"{self.path}" + (f" ({self.name})" if self.name else ""))
        return TextSource.from_stream(self, chains, texts["train"], self.path)


def _datasets():
    from ..text.hf import quiet_import
    return quiet_import("datasets", "the hf-dataset source needs", INSTALL)


def _open(cfg: HFDatasetSourceConfig):
    """The data set as a DatasetDict (or a Dataset, taken as the training split)."""
    ds = _datasets()
    path = os.path.expanduser(cfg.path)
    p = Path(path)
    try:
        if p.is_dir() and any((p / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            return ds.load_from_disk(path)
        suffix = next((b for s, b in FILE_BUILDERS.items() if path.endswith(s)), None)
        if suffix is not None:
            return ds.load_dataset(suffix, data_files=path)
        if p.exists():
            return ds.load_dataset(path, cfg.name)   # a local folder of data files, or a loading script's
        return ds.load_dataset(cfg.path, cfg.name, revision=cfg.revision)
    except FileNotFoundError as e:
        raise DataError(f"hf-dataset {cfg.path}: no data there ({str(e).splitlines()[0][:200]}); give a "
                        f"save_to_disk directory, a data file, or a hub id") from None
    except (ConnectionError, OSError, ValueError) as e:
        from ..text.hf import offline
        why = ("offline mode is set" if offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               else "it could not be fetched from the hub from here")
        raise DataError(f"hf-dataset '{cfg.path}'{f' ({cfg.name})' if cfg.name else ''} is not on disk and {why} "
                        f"({str(e).splitlines()[0][:200]}). On a machine with network access load it once "
                        f"(`datasets.load_dataset('{cfg.path}'{f', {cfg.name!r}' if cfg.name else ''})"
                        f".save_to_disk(DIR)`) and give DIR as source.path"
                        + (f"; the tokenizer {cfg.tokenizer} (and a model of that name) must be on disk too: "
                           f"`huggingface-cli download {cfg.tokenizer}`" if cfg.tokenizer not in ("char", "bpe")
                           else "")) from None


def load_texts(cfg: HFDatasetSourceConfig) -> dict[str, str]:
    """{split: the text column's rows joined by newlines} for each split the data set has (train at least)."""
    data = _open(cfg)
    parts = data if hasattr(data, "keys") else {"train": data}
    out = {}
    for ours, theirs in cfg.splits.items():
        if theirs not in parts:
            if ours == "train":
                raise DataError(f"hf-dataset {cfg.path}: no split '{theirs}' (it has {', '.join(parts)}); set "
                                f"source.splits.train to one of them")
            continue
        split = parts[theirs]
        if cfg.column not in split.column_names:
            raise DataError(f"hf-dataset {cfg.path}: split '{theirs}' has no column '{cfg.column}' (it has "
                            f"{', '.join(split.column_names)}); set source.column")
        rows = split[cfg.column]
        if rows and not isinstance(rows[0], str):
            raise DataError(f"hf-dataset {cfg.path}: column '{cfg.column}' holds {type(rows[0]).__name__}, not "
                            f"text; set source.column to a text column")
        out[ours] = "\n".join(r for r in rows if r is not None)
    return out
