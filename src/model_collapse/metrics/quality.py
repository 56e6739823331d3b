"""Sample quality of image generations: FID, precision/recall/density/coverage, memorisation,
and the latent sparsity of a VAE's encoder.

FID, PRDC and memorisation compare the generation's samples with real images in one
feature space: the penultimate layer of the source's reference CNN (the input of its last
linear layer; 128 features for MNIST), trained once on the real training split
(nn/classifier.py). Inception features (Heusel et al. 2017) are meaningless on 28x28
digits; a digit classifier's own features are the usual stand-in on MNIST.

Work is shared, so the three metrics together cost little more than one:
- the samples' features are computed once per generation and kept on the generation's
  Context (every metric of a generation receives the same Context object);
- the real set (a fixed draw of n test images, the same for every run and seed), its
  features, mean, covariance and k-NN radii, and the training images' features, are
  computed once per run and kept per source object (a weak reference: they go with it).

Distances (PRDC, memorisation) are Euclidean in feature space, computed as blocked float32
matrix products with torch; FID's statistics are float64.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from ..nn.trainer import num_threads
from .distribution import Context

REAL_SEED = 0        # which test images form the real set: one fixed draw, shared by all runs
BATCH = 512          # images per forward pass of the reference CNN (512: 3x faster than 4096 on CPU, cache-sized)
BLOCK = 2048         # rows of a distance-matrix block (2048 x 10,000 float32 = 80 MB)
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # source -> {key: value}


# -- features ----------------------------------------------------------------------------
@torch.inference_mode()
def embed(clf, pixels: np.ndarray) -> np.ndarray:
    """Penultimate-layer features (n, F) float32 of images (n, P) on 0..255 under a Classifier.

    A hook on the last linear layer takes its input, so the features are exactly what the
    classifier's own forward pass computes (normalisation, convolutions, dense layers).
    """
    net = clf.net.eval()
    x = clf._tensor(pixels)
    got: list[torch.Tensor] = []
    hook = net.head[-1].register_forward_pre_hook(lambda module, args: got.append(args[0].float().cpu()))
    try:
        with num_threads(clf.cfg.threads):
            for i in range(0, len(x), BATCH):
                net(x[i:i + BATCH].to(clf.device))
    finally:
        hook.remove()
    return torch.cat(got).numpy() if got else np.zeros((0, net.head[-1].in_features), np.float32)


def sample_features(ctx: Context, n: int) -> np.ndarray:
    """Features (S, min(n, N), F) of the first n samples of every chain, computed once per generation.

    They are kept on the Context (one per generation, shared by all its metrics) together
    with the samples array they came from; a metric asking for more items extends them.
    """
    samples = ctx.samples
    n = min(int(n), samples.shape[1])
    got = ctx.__dict__.get("_quality_features")
    if got is not None and got[0] is samples and got[1].shape[1] >= n:
        return got[1][:, :n]
    have = got[1] if got is not None and got[0] is samples else None
    start = 0 if have is None else have.shape[1]
    clf = ctx.source.reference_classifier()
    new = np.stack([embed(clf, samples[s, start:n, :-1]) for s in range(samples.shape[0])])
    feats = new if have is None else np.concatenate([have, new], axis=1)
    ctx._quality_features = (samples, feats)
    return feats


def _cached(source, key, make):
    """A per-run value: computed once per source object (falls back to no caching if it cannot be weakly referenced)."""
    try:
        slot = _CACHE.setdefault(source, {})
    except TypeError:
        return make()
    if key not in slot:
        slot[key] = make()
    return slot[key]


class RealSet:
    """A fixed set of real test images in feature space and the statistics derived from it."""

    def __init__(self, feats: np.ndarray):
        self.feats = feats                                   # (m, F) float32
        x = feats.astype(np.float64)
        self.mean = x.mean(axis=0)
        self.cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1],) * 2)
        self.cov_sqrt = psd_sqrt(self.cov)
        self._radii: dict[int, np.ndarray] = {}

    def radii(self, k: int) -> np.ndarray:
        """Squared distance of every real item to its k-th nearest other real item (m,)."""
        if k not in self._radii:
            self._radii[k] = kth_neighbour_sq(self.feats, k)
        return self._radii[k]


def real_set(ctx: Context, n: int) -> RealSet:
    """n real test images (all if the test split is smaller), drawn with a fixed seed, embedded once per run."""
    source = ctx.source

    def make():
        images = source.reference(int(n), np.random.default_rng(REAL_SEED))
        return RealSet(embed(source.reference_classifier(), images[:, :-1]))
    return _cached(source, ("real", int(n)), make)


# -- Fréchet distance (Heusel et al. 2017) -------------------------------------------------
def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, by its eigendecomposition.

    Eigenvalues below 0 (rounding in a rank-deficient covariance) are set to 0.
    """
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2, cov1_sqrt=None) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), in float64.

    d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2) (Heusel et al. 2017,
    after Dowson & Landau 1982). The last trace is the sum of the square roots of the
    eigenvalues of the symmetric PSD matrix C1^1/2 C2 C1^1/2, so two symmetric
    eigendecompositions suffice (C1^1/2 is computed once per run): no general matrix square
    root, whose iterations can return complex or inaccurate results on near-singular
    covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = psd_sqrt(cov1) if cov1_sqrt is None else cov1_sqrt
    m = s1 @ cov2 @ s1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = mu1 - mu2
    return float(d @ d + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def fid(ctx: Context, n: int = 10000) -> dict[str, np.ndarray]:
    """FID between the first n samples of each chain and n fixed real test images, in the reference CNN's features.

    FID is biased upwards by a finite n (Chong & Forsyth 2020), so n is fixed per run and
    recorded: fid_n is the number of samples used (fewer than n when a generation has fewer),
    fid_n_real the number of real images (the whole test split when it is smaller than n).
    """
    real, feats = real_set(ctx, n), sample_features(ctx, n)
    out = np.full(len(feats), np.nan)
    if feats.shape[1] > 1:
        for s, f in enumerate(feats):
            x = f.astype(np.float64)
            out[s] = frechet_distance(real.mean, real.cov, x.mean(axis=0), np.cov(x, rowvar=False), real.cov_sqrt)
    return {"fid": out, "fid_n": np.full(len(feats), float(feats.shape[1])),
            "fid_n_real": np.full(len(feats), float(len(real.feats)))}


# -- distances -----------------------------------------------------------------------------
def _pair(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 tensors A (n, F + 2), B (m, F + 2) whose product A @ B.T holds the squared distances.

    Rows become [a, |a|^2, 1] and [-2b, 1, |b|^2], so one matrix product gives
    |a|^2 + |b|^2 - 2 a.b with no extra pass over the (n, m) block. Both sets are first
    centred on a's mean (distances do not change) to keep the float32 norms small.
    """
    c = a.mean(axis=0, dtype=np.float64) if len(a) else 0.0
    a, b = np.asarray(a, np.float64) - c, np.asarray(b, np.float64) - c
    sa, sb = (a * a).sum(1, keepdims=True), (b * b).sum(1, keepdims=True)
    left = np.hstack([a, sa, np.ones_like(sa)])
    right = np.hstack([-2 * b, np.ones_like(sb), sb])
    return (torch.from_numpy(left.astype(np.float32)), torch.from_numpy(right.astype(np.float32)))


def _blocks(a: torch.Tensor, b: torch.Tensor):
    """Yield (start, squared distances (rows, len(b))) for row blocks of a against all of b (see _pair).

    Rounding can make an entry slightly negative; the callers only compare or clamp the reduced values.
    """
    bt = b.T.contiguous()
    for i in range(0, len(a), BLOCK):
        yield i, a[i:i + BLOCK] @ bt


@torch.inference_mode()
def kth_neighbour_sq(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row of x (n, F) to its k-th nearest other row (n,); inf if n <= k."""
    if len(x) <= k:
        return np.full(len(x), np.inf, np.float32)
    out = []
    for i, d in _blocks(*_pair(x, x)):
        rows = torch.arange(len(d))
        d[rows, rows + i] = -1.0                       # the item itself: always the nearest
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out).clamp_(min=0.0).numpy()


@torch.inference_mode()
def nearest_sq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distance from each row of x to its nearest row of y: (len(x),)."""
    return torch.cat([d.min(dim=1).values for _, d in _blocks(*_pair(y, x)[::-1])]).clamp_(min=0.0).numpy()


@torch.inference_mode()
def prdc_features(real: np.ndarray, fake: np.ndarray, k: int = 5, real_radii: np.ndarray | None = None) -> dict:
    """Precision, recall, density and coverage of fake (M, F) against real (N, F) features.

    Naeem et al. (2020), "Reliable fidelity and diversity metrics for generative models",
    with r_i the distance from real X_i to its k-th nearest other real item, s_j likewise
    among the fakes:
      precision = share of fakes inside some real ball B(X_i, r_i)   (Kynkaanniemi et al. 2019)
      recall    = share of reals inside some fake ball B(Y_j, s_j)
      density   = (1 / kM) sum_j #{i: Y_j in B(X_i, r_i)}   (1 in expectation for equal laws)
      coverage  = share of reals whose own ball B(X_i, r_i) holds some fake
    One pass over real-by-fake blocks of squared distances (float32) gives all four.
    """
    n, m = len(real), len(fake)
    if n <= k or m <= k:
        return {c: float("nan") for c in ("precision", "recall", "density", "coverage")}
    r = torch.from_numpy(kth_neighbour_sq(real, k) if real_radii is None else real_radii)
    s = torch.from_numpy(kth_neighbour_sq(fake, k))
    inside = torch.zeros(m, dtype=torch.bool)       # fake j lies in some real ball
    hits = 0                                        # (fake, real ball holding it) pairs
    covered = torch.zeros(n, dtype=torch.bool)      # real i's ball holds a fake
    recalled = torch.zeros(n, dtype=torch.bool)     # real i lies in some fake ball
    y, x = _pair(real, fake)[::-1]
    for j, d in _blocks(y, x):                      # d: (fakes of the block, all reals)
        in_real = d <= r[None, :]
        inside[j:j + len(d)] = in_real.any(dim=1)
        hits += int(torch.count_nonzero(in_real))   # ~10x faster than a per-row sum of booleans
        covered |= in_real.any(dim=0)
        recalled |= (d <= s[j:j + len(d), None]).any(dim=0)
    return {"precision": float(inside.double().mean()), "recall": float(recalled.double().mean()),
            "density": hits / (k * m), "coverage": float(covered.double().mean())}


def prdc(ctx: Context, n: int = 10000, k: int = 5) -> dict[str, np.ndarray]:
    """Precision, recall, density, coverage (Naeem et al. 2020, k = 5) of the first n samples of each
    chain against n fixed real test images, in the reference CNN's features."""
    real, feats = real_set(ctx, n), sample_features(ctx, n)
    radii = real.radii(k)
    rows = [prdc_features(real.feats, f, k, radii) for f in feats]
    return {c: np.array([r[c] for r in rows]) for c in ("precision", "recall", "density", "coverage")}


# -- memorisation --------------------------------------------------------------------------
def _training_images(ctx: Context) -> tuple[object, np.ndarray]:
    """(cache key, the real images generation 0 trained on (N, P + 1)).

    With the experiment at hand they are rebuilt exactly as the loop drew them (same seed
    stream, same size), so nothing has to be kept in checkpoints; without one (a bare
    Context) they are the given training set of the first chain.
    """
    exp = ctx.exp
    if exp is None:
        train = np.asarray(ctx.train)
        return None, train[0] if train.ndim == 3 else train
    from ..rng import Seeds
    size = exp.regime.build().size(0)
    real = ctx.source.real(size, Seeds(exp.seed).rng("real"))
    return ("train", int(exp.seed), int(size)), np.asarray(real)[0]


def memorisation(ctx: Context, n: int = 10000, q: float = 0.05) -> dict[str, np.ndarray]:
    """Share of samples nearer to a real training image than real test images usually are.

    In the reference CNN's features (those FID and PRDC use), d(x) is the distance from x to
    its nearest neighbour among the real images generation 0 trained on. The threshold is the
    q-quantile (default 5th percentile) of d over the fixed real test images, which the model
    never saw. Columns: memorised = share of the first n samples with d below it (about q for
    samples as novel as fresh real digits; well above q when the model copies its training
    images), nn_ratio = median d of the samples / median d of the test images (below 1:
    samples sit closer to the training images than unseen real digits do).
    """
    real = real_set(ctx, n)
    key, images = _training_images(ctx)

    def make():
        train = embed(ctx.source.reference_classifier(), images[:, :-1])
        return train, np.sqrt(nearest_sq(real.feats, train))
    train, test_nn = make() if key is None else _cached(ctx.source, key, make)
    cut, med = np.quantile(test_nn, q), np.median(test_nn)
    feats = sample_features(ctx, n)
    mem, ratio = np.full(len(feats), np.nan), np.full(len(feats), np.nan)
    for s, f in enumerate(feats):
        if len(f):
            d = np.sqrt(nearest_sq(f, train))
            mem[s], ratio[s] = (d < cut).mean(), np.median(d) / med if med > 0 else np.nan
    return {"memorised": mem, "nn_ratio": ratio}


# -- latent sparsity -----------------------------------------------------------------------
def hoyer(codes: np.ndarray) -> np.ndarray:
    """Hoyer (2004) sparsity of each row of codes (..., L): (sqrt(L) - |z|_1 / |z|_2) / (sqrt(L) - 1).

    1 for a code with a single non-zero entry, 0 for equal magnitudes; an all-zero code
    counts as 1 (nothing is used). NaN when L = 1.
    """
    L = codes.shape[-1]
    if L < 2:
        return np.full(codes.shape[:-1], np.nan)
    l1, l2 = np.abs(codes).sum(-1), np.sqrt((codes * codes).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = (np.sqrt(L) - l1 / l2) / (np.sqrt(L) - 1)
    return np.where(l2 > 0, h, 1.0)


def latent_sparsity(ctx: Context, n: int = 2000, threshold: float = 0.01) -> dict[str, np.ndarray]:
    """Collapsed latent dimensions and Hoyer sparsity of the encoder's mean codes of held-out real images.

    A dimension u has collapsed to the prior when its posterior mean no longer depends on the
    image: Var_x(E_q[z_u | x]) < threshold over the first n held-out real images (the "active
    units" criterion of Burda et al. 2016, threshold 0.01; the ELBO's KL term then pulls such a
    posterior onto N(0, 1)). Columns: latent_collapsed = share of collapsed dimensions,
    latent_hoyer = mean Hoyer sparsity of the codes E_q[z | x] (1: one dimension carries each
    image, 0: all dimensions equally).
    """
    ref = np.asarray(ctx.reference)[:n]
    mu = np.asarray(ctx.model.encode_mean(ref[None]), np.float64)   # (S, n, L)
    var = mu.var(axis=1) if mu.shape[1] > 1 else np.zeros((mu.shape[0], mu.shape[2]))
    return {"latent_collapsed": (var < threshold).mean(axis=1), "latent_hoyer": hoyer(mu).mean(axis=1)}
