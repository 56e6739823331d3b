"""Real image data sets as sources: MNIST, Fashion-MNIST, EMNIST, scikit-learn's 8x8 digits.

Data layout (project-wide for images): (S, N, P + 1) with P = H * W pixels on
the 0..255 scale and the class label in the last column (255 = unlabelled);
dtype uint8, or float16 to keep generated pixels un-quantised.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from ..datasets import load_images
from ..paths import cache_dir
from ..kinds import SourceDecl
from ..schema import Component



class ImageSourceConfig(Component):
    """A real image data set; `n` items of its training split form generation 0."""

    kind: Literal["mnist", "fashion-mnist", "emnist", "digits"] = Field("mnist", description=(
        "the source: mnist, fashion-mnist, emnist (see subset) or digits (scikit-learn's 8x8 digits)"))
    subset: str = Field("balanced", description="EMNIST only: balanced, letters, digits, byclass, bymerge, mnist")
    folder: Optional[str] = Field(None, description="MNIST / Fashion-MNIST: a folder holding the four .gz files")
    dtype: Literal["uint8", "float16"] = Field("uint8", description=(
        "storage of the pixel layout: uint8, or float16 to keep generated pixels un-quantised"))
    classifier: Literal["cnn", "mlp"] = Field("cnn", description="architecture of the reference classifier")

    def declare(self) -> SourceDecl:
        """Labelled images, with a reference classifier trained once on the real data."""
        return SourceDecl(self.kind, "image", frozenset({"reference_classifier", "labels"}))

    def build(self, chains: int) -> "ImageSource":
        """The source object for a run (loads the data set)."""
        return ImageSource(self, chains)


def to_layout(images: np.ndarray, labels: np.ndarray, dtype: str = "uint8") -> np.ndarray:
    """(N, H, W) images + (N,) labels -> (N, H*W + 1) rows, label last."""
    n = len(images)
    out = np.empty((n, images[0].size + 1), dtype=dtype)
    out[:, :-1] = images.reshape(n, -1)
    out[:, -1] = labels
    return out


class ImageSource:
    """Training split = real data (shared by all chains); test split = reference."""

    data_kind = "image"
    truth = None

    def __init__(self, cfg: ImageSourceConfig, chains: int):
        self.cfg, self.chains = cfg, chains
        kw = {"subset": cfg.subset} if cfg.kind == "emnist" else (
            {"folder": cfg.folder} if cfg.folder and cfg.kind in ("mnist", "fashion-mnist") else {})
        self.train = load_images(cfg.kind, "train", **kw)
        self.test = load_images(cfg.kind, "test", **kw)
        self.image_shape = tuple(self.train.images.shape[1:])
        self.classes = list(self.train.classes)
        self.n_classes = len(self.classes)
        self.pool = to_layout(self.train.images, self.train.labels, cfg.dtype)   # (N, P+1)

    def real(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Generation 0's training set: n training images (all of them when n >= N), shared by all chains."""
        rows = self.pool if n >= len(self.pool) else self.pool[np.sort(rng.choice(len(self.pool), n, replace=False))]
        return np.broadcast_to(rows, (self.chains,) + rows.shape)   # a view: no copy per chain

    def fresh(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n real training images drawn anew (the 'true' share of mixed regimes)."""
        idx = rng.choice(len(self.pool), size=(self.chains, n), replace=n > len(self.pool))
        return self.pool[np.sort(idx, axis=1)]

    def reference(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Held-out real images (test split), at most n: (M, P+1)."""
        test = to_layout(self.test.images, self.test.labels, self.cfg.dtype)
        return test if n >= len(test) else test[np.sort(rng.choice(len(test), n, replace=False))]

    def reference_classifier(self):
        """The classifier trained once on the real training split (cached on disk)."""
        return self._reference[0]

    @cached_property
    def _reference(self):
        from ..nn.classifier import ClassifierConfig, reference_classifier
        name = self.cfg.kind + (f"-{self.cfg.subset}" if self.cfg.kind == "emnist" else "")
        cfg = None if self.cfg.classifier == "cnn" else ClassifierConfig(kind="mlp")  # None: the tuned CNN
        return reference_classifier(name, self.image_shape, self.train, self.test, cache_dir() / "classifiers", cfg)
