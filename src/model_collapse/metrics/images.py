"""Metrics for image data: pixel statistics, class histogram under a reference classifier,
latent spread under the generation-0 encoder, and the classifier-by-generation matrix.

Samples follow the project's image layout: (S, n, P + 1), S chains, n items, P pixels on
the 0..255 scale, last column the class label (255 = unlabelled), uint8 or float16.
Every metric returns columns of shape (S,), one value per chain. The stateful ones
(LatentStd, ClassifierMatrix) are classes with state_dict()/load_state_dict() (numpy
arrays only) so that the loop can checkpoint them and a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np

from ..data import UNLABELLED
from ..nn.classifier import Classifier, ClassifierConfig
from .distribution import Context

HIST_BINS = 10
CHUNK = 8192  # items per chunk when a float copy is needed (bounds the temporary memory)
# classes() labels at most this many samples per chain: the samples are i.i.d. draws, so the
# first ones are a random subset; 10,000 give every share within +-0.5 points (1 s.e.) and
# cost ~1 s of reference-CNN inference per chain on one core instead of ~6 s for 60,000.
CLASS_ITEMS = 10_000
# Integer bin of every uint8 value: floor(v / 255 * 10), with 255 in the last bin.
_LUT = np.minimum(np.arange(256) * HIST_BINS // 255, HIST_BINS - 1)


def _pixel_summary(x: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Mean, std (on [0, 1]) and 10-bin histogram (fractions) of one chain's pixels x (n, P)."""
    if x.dtype == np.uint8:  # exact and fast: one bincount over the 256 values
        counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
        v = np.arange(256) / 255.0
        total = counts.sum()
        mean = (counts * v).sum() / total
        var = (counts * (v - mean) ** 2).sum() / total
        hist = np.bincount(_LUT, weights=counts, minlength=HIST_BINS) / total
        return mean, math.sqrt(var), hist
    s1 = s2 = 0.0
    hist = np.zeros(HIST_BINS)
    for i in range(0, len(x), CHUNK):
        v = np.clip(x[i:i + CHUNK].astype(np.float64), 0, 255) / 255.0
        s1, s2 = s1 + v.sum(), s2 + (v * v).sum()
        hist += np.bincount(np.minimum((v * HIST_BINS).astype(np.int64), HIST_BINS - 1).ravel(),
                            minlength=HIST_BINS)
    total = x.size
    mean = s1 / total
    return mean, math.sqrt(max(s2 / total - mean * mean, 0.0)), hist / total


def pixels(ctx: Context) -> dict[str, np.ndarray]:
    """Pixel mean, std (on [0, 1]) and 10-bin pixel histogram pix_hist_0..9 (fractions) per chain."""
    samples = ctx.samples
    out = [_pixel_summary(samples[s, :, :-1]) for s in range(samples.shape[0])]
    cols = {"pix_mean": np.array([o[0] for o in out]), "pix_std": np.array([o[1] for o in out])}
    hist = np.stack([o[2] for o in out])  # (S, 10)
    cols.update({f"pix_hist_{b}": hist[:, b] for b in range(HIST_BINS)})
    return cols


def class_summary(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """Histogram (fractions), entropy (nats), top class and share, mean max-probability of one chain."""
    hist = np.bincount(labels, minlength=n_classes)[:n_classes] / max(len(labels), 1)
    nz = hist[hist > 0]
    out = {f"class_{c}": float(hist[c]) for c in range(n_classes)}
    out.update(class_entropy=float(-(nz * np.log(nz)).sum()), top_class=float(hist.argmax()),
               top_share=float(hist.max()), ref_confidence=float(probs.max(axis=1).mean()))
    return out


def classes(ctx: Context, n: int = CLASS_ITEMS) -> dict[str, np.ndarray]:
    """Class histogram class_0..class_{C-1}, class_entropy (nats), top_class, top_share and
    ref_confidence of the samples, as labelled by the source's reference classifier."""
    clf = ctx.source.reference_classifier()
    rows = []
    for s in range(ctx.samples.shape[0]):
        labels, probs = clf.predict(ctx.samples[s, :n, :-1])  # (n,), (n, C)
        rows.append(class_summary(labels, probs, clf.n_classes))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


class LatentStd:
    """Std of the samples' latent means under the generation-0 encoder (Shumailov et al., Nature 2024).

    Shumailov et al. follow the VAE's collapse by encoding each generation's samples with
    the encoder trained on the real data: as the samples lose their variety, their latent
    means crowd together. The per-dimension std over the n samples, averaged over latent
    dimensions, is the column `latent_std`. The encoder is frozen at generation 0 by
    keeping that generation's family state; state_dict() carries it across a resume.
    """

    PREFIX = "gen0/"

    def __init__(self):
        self.state0: dict[str, np.ndarray] | None = None
        self._encoder = None  # a copy of the family holding state0, made on first use

    def __call__(self, ctx: Context) -> dict[str, np.ndarray]:
        """Column latent_std (S,); NaN if generation 0 was never seen (cannot recover its encoder)."""
        if self.state0 is None:
            if ctx.generation != 0:
                return {"latent_std": np.full(ctx.samples.shape[0], np.nan)}
            self.state0 = {k: np.array(v, copy=True) for k, v in ctx.model.state_dict().items()}
        enc = self._encoder_like(ctx.model, ctx.source)
        mu = np.asarray(enc.encode_mean(ctx.samples), dtype=np.float64)  # (S, n, L)
        return {"latent_std": mu.std(axis=1).mean(axis=1)}

    def _encoder_like(self, model, source):
        """A copy of the family with the generation-0 state (made once, then reused)."""
        if self._encoder is None:
            # Share, not copy, the source a family may hold (real data, reference classifier).
            enc = copy.deepcopy(model, {id(source): source})
            enc.load_state_dict(self.state0)
            self._encoder = enc
        return self._encoder

    def state_dict(self) -> dict[str, np.ndarray]:
        """The generation-0 family state under the prefix gen0/ (empty before generation 0)."""
        return {} if self.state0 is None else {self.PREFIX + k: v for k, v in self.state0.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
        got = {k[len(self.PREFIX):]: np.asarray(v) for k, v in state.items() if k.startswith(self.PREFIX)}
        self.state0, self._encoder = (got or None), None


def _copy_classifier(clf: Classifier) -> Classifier:
    """An independent Classifier with clf's weights (the family may refit clf in place later)."""
    out = Classifier(clf.cfg, clf.image_shape, clf.n_classes)
    out.load_state_dict(clf.state_dict())
    out.val_index, out.fit_n = clf.val_index.copy(), clf.fit_n
    return out


class ClassifierMatrix:
    """The classifier-by-generation matrix of the original MNIST protocol.

    At each recorded generation j it keeps (a) a fixed evaluation subset of generation j's
    training data with its labels, drawn from the items the family's classifier held out
    when it has that record (Classifier.val_index), and (b) a copy of the classifier trained
    at generation j (ctx.model.classifier: one Classifier or a list of S). It then scores
    every kept classifier i on the new subset and the new classifier on every kept subset,
    so acc[i, j] and loss[i, j] (mean cross-entropy, nats) fill in for all i, j.

    Columns: acc_prev (previous recorded classifier on generation j), acc_self (classifier j
    on its held-out part of generation j), acc_first (the generation-0 classifier, trained
    on real data, on generation j). New matrix entries go to ctx.store.add_table(
    "classifier_matrix", rows) as rows chain, classifier, generation, accuracy, loss.
    """

    TABLE = "classifier_matrix"

    def __init__(self, subset: int = 2000):
        self.subset = int(subset)
        self.gens: list[int] = []
        self.data: list[np.ndarray] = []                # per kept generation: (S, m, P + 1)
        self.weights: list[dict[str, np.ndarray]] = []  # per kept generation: {param: (S, ...)}
        self.acc = np.zeros((0, 0, 0))                  # (S, K, K): classifier i, generation j
        self.loss = np.zeros((0, 0, 0))
        self.meta: dict | None = None                   # classifier config, image shape, classes
        self._clfs: list[list[Classifier]] = []         # live copies, rebuilt from weights on resume

    # -- the metric ------------------------------------------------------------------
    def __call__(self, ctx: Context) -> dict[str, np.ndarray]:
        """Score the new generation's classifier and data against all kept ones; columns (S,)."""
        chains = ctx.samples.shape[0]
        nan = np.full(chains, np.nan)
        found = getattr(ctx.model, "classifier", None)
        if found is None:
            return {"acc_prev": nan, "acc_self": nan, "acc_first": nan}
        clfs = list(found) if isinstance(found, (list, tuple)) else [found] * chains
        self._forget_from(ctx.generation)  # a re-run generation replaces what it wrote before
        self._keep(ctx, [_copy_classifier(c) for c in clfs])
        k = len(self.gens) - 1
        rows = self._fill(k)
        store = getattr(ctx, "store", None)
        if store is not None and rows:
            store.add_table(self.TABLE, rows)
        prev = self.acc[:, k - 1, k] if k > 0 else nan
        return {"acc_prev": prev, "acc_self": self.acc[:, k, k].copy(), "acc_first": self.acc[:, 0, k].copy()}

    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(generations (K,), accuracy (S, K, K), loss (S, K, K)); row = classifier, column = data."""
        return np.array(self.gens), self.acc.copy(), self.loss.copy()

    def _forget_from(self, generation: int) -> None:
        """Drop kept generations >= generation."""
        k = sum(g < generation for g in self.gens)
        self.gens, self.data, self.weights, self._clfs = (self.gens[:k], self.data[:k],
                                                          self.weights[:k], self._clfs[:k])
        self.acc, self.loss = self.acc[:, :k, :k], self.loss[:, :k, :k]

    def _keep(self, ctx: Context, clfs: list[Classifier]) -> None:
        """Store generation j's classifiers and a labelled evaluation subset of its training data."""
        c0 = clfs[0]
        self.meta = self.meta or {"cfg": c0.cfg.model_dump(), "image_shape": list(c0.image_shape),
                                  "n_classes": c0.n_classes}
        train = ctx.train  # (S or 1, N, P + 1)
        pools = [self._pool(train[min(s, len(train) - 1)], clfs[s]) for s in range(len(clfs))]
        m = min(self.subset, *(len(p) for p in pools))
        picks = [np.sort(ctx.rng.choice(p, m, replace=False)) for p in pools]
        self.data.append(np.stack([train[min(s, len(train) - 1)][i] for s, i in enumerate(picks)]))
        self.weights.append({k: np.stack([c.state_dict()[k] for c in clfs]) for k in c0.state_dict()})
        self._clfs.append(clfs)
        self.gens.append(int(ctx.generation))

    def _pool(self, items: np.ndarray, clf: Classifier) -> np.ndarray:
        """Indices of labelled items the classifier did not train on (all labelled ones if unknown)."""
        labelled = (items[:, -1] != UNLABELLED) & (items[:, -1] < clf.n_classes)
        if clf.fit_n == len(items) and len(clf.val_index):
            held = clf.val_index[labelled[clf.val_index]]
            if len(held):
                return held
        return np.flatnonzero(labelled)

    def _fill(self, k: int) -> list[dict]:
        """Grow the matrices to k + 1 and score row k and column k; returns the new table rows."""
        chains = len(self._clfs[k])
        acc, loss = np.full((chains, k + 1, k + 1), np.nan), np.full((chains, k + 1, k + 1), np.nan)
        if k:
            acc[:, :k, :k], loss[:, :k, :k] = self.acc, self.loss
        rows = []
        pairs = [(i, k) for i in range(k + 1)] + [(k, j) for j in range(k)]
        for s in range(chains):
            for i, j in pairs:
                x = self.data[j][s]
                acc[s, i, j], loss[s, i, j] = self._clfs[i][s].evaluate(x[:, :-1], x[:, -1])
                rows.append({"chain": s, "classifier": self.gens[i], "generation": self.gens[j],
                             "accuracy": float(acc[s, i, j]), "loss": float(loss[s, i, j])})
        self.acc, self.loss = acc, loss
        return rows

    # -- checkpointing ---------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Kept generations, matrices, evaluation subsets and classifier weights (numpy only)."""
        if not self.gens:
            return {}
        out = {"gens": np.array(self.gens, np.int64), "acc": self.acc, "loss": self.loss,
               "meta": np.array(json.dumps(self.meta))}
        for k, (data, weights) in enumerate(zip(self.data, self.weights)):
            out[f"data/{k}"] = data
            out.update({f"clf/{k}/{name}": w for name, w in weights.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict(); classifiers are rebuilt from their weights."""
        self.__init__(self.subset)
        if "gens" not in state:
            return
        self.gens = [int(g) for g in state["gens"]]
        self.acc, self.loss = np.array(state["acc"]), np.array(state["loss"])
        self.meta = json.loads(str(state["meta"]))
        cfg = ClassifierConfig(**self.meta["cfg"])
        for k in range(len(self.gens)):
            self.data.append(np.array(state[f"data/{k}"]))
            pre = f"clf/{k}/"
            weights = {n[len(pre):]: np.array(v) for n, v in state.items() if n.startswith(pre)}
            self.weights.append(weights)
            clfs = []
            for s in range(self.data[k].shape[0]):
                clf = Classifier(cfg, tuple(self.meta["image_shape"]), self.meta["n_classes"])
                clf.load_state_dict({n: w[s] for n, w in weights.items()})
                clfs.append(clf)
            self._clfs.append(clfs)
