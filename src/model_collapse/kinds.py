"""The vocabulary of validation: data kinds, capabilities, and what a component needs.

Every source declares the kind of data it yields and what it offers (a known
truth, a reference classifier); every family declares the kinds it fits and
what a fitted model can do; every metric and filter declares a `Needs`.
`config.validate` compares declarations only: nothing branches on kind names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_KINDS = {
    "vector": "rows of d floats, (S, N, d)",
    "category": "category indices, (S, N)",
    "image": "H*W pixels on 0..255 plus a label column, (S, N, P + 1)",
    "text": "blocks of T token ids, (S, N, T)",
    "pairs": "labelled pairs (x, y) for regression, (S, N, d + 1)",
}

CAPABILITIES = {
    # what a fitted family can do
    "items": "sample items (not only a sufficient-statistic summary)",
    "log_prob": "give the exact log density (or mass) of points",
    "cdf": "give a 1-D cumulative distribution function",
    "moments": "give its mean and covariance",
    "probs": "give its category probabilities",
    "encode": "encode images into latent codes",
    "decode": "decode latent codes into images",
    "classify": "label its samples with a classifier of its own",
    "score_text": "give per-token log-probabilities of text",
    "normal": "be a Gaussian fit: its mean and covariance say everything (closed forms apply)",
    # what a source offers
    "truth": "a known true distribution",
    "modes": "known mode locations and spread (a ring or grid of Gaussians)",
    "target": "a selection target of its own: a biased verifier's reference N(mean, cov) (Qiao et al. 2025)",
    "reference_classifier": "a classifier trained once on the real data",
    "labels": "class labels",
}

# What each capability promises a fitted family has: methods and attributes (dotted through the
# family's config as `cfg.x`). A family that declares a capability has every one; the contract tests
# (contracts.check_family) check it, and code that needs a capability may call them without probing.
CAPABILITY_METHODS = {
    "items": ("sample",),
    "log_prob": ("log_prob",),
    "cdf": ("cdf", "dim"),
    "moments": ("moments",),
    "probs": ("p",),                                   # (S, K) category probabilities
    "encode": ("encode_mean",),
    "decode": ("decode", "latent_dim", "temperature"),   # latent codes z ~ N(0, T^2 I) of size latent_dim
    "classify": ("classifier",),                       # one classifier per chain (metrics.images)
    "score_text": ("token_logprob", "log_prob"),
    "normal": ("moments", "mean", "cov", "mean_log_prob", "dim"),
}

TRUTH_NAMES = {"gaussian": "Gaussian", "gmm": "Gaussian-mixture", "categorical": "categorical",
               "markov": "Markov-language", "linreg": "linear-model", "checkerboard": "checkerboard"}


@dataclass(frozen=True)
class SourceDecl:
    """What a source declares: its name, data kind, dimension (vectors) and capabilities."""

    name: str
    data_kind: str
    caps: frozenset = frozenset()
    dim: int | None = None
    truth: str | None = None     # the family of the true distribution, where one is known


@dataclass(frozen=True)
class Needs:
    """What a metric or filter needs; empty fields need nothing."""

    kinds: tuple = ()            # data kinds it applies to (any of)
    model: tuple = ()            # capabilities the fitted model must have (all of)
    model_any: tuple = ()        # ... at least one of these
    source: tuple = ()           # capabilities the source must have (all of)
    truth: tuple = ()            # families of true distribution accepted (any of)
    dims: tuple = ()             # vector dimensions accepted (any of)
    truth_is_model: bool = False  # the fitted family must be the truth's own family
    extra: dict = field(default_factory=dict, compare=False)


def _either(words) -> str:
    """'a', 'a or b', 'a, b or c'."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _cap(c: str) -> str:
    return CAPABILITIES.get(c, c)


def family_mismatch(kind: str, fits: frozenset, src: SourceDecl) -> list[str]:
    """Messages when family `kind` (fitting `fits` kinds) cannot fit the source's data."""
    if src.data_kind in fits:
        return []
    return [f"family {kind} fits {_either(sorted(fits))} data; source {src.name} yields {src.data_kind} data"]


def mismatches(who: str, needs: Needs, src: SourceDecl, model_kind: str, model_caps: frozenset) -> list[str]:
    """One message per unmet need, naming both sides (`metric kl needs ...; source gmm is ...`)."""
    out = []
    if needs.kinds and src.data_kind not in needs.kinds:
        out.append(f"{who} needs {_either(needs.kinds)} data; source {src.name} yields {src.data_kind} data")
        return out   # the other needs follow from the kind
    if needs.truth and src.truth not in needs.truth:
        names = [TRUTH_NAMES.get(t, t) for t in needs.truth]
        tail = "is neither" if len(names) == 2 else ("is not" if len(names) == 1 else "is none of these")
        have = "" if src.truth is None else f" (its truth is {TRUTH_NAMES.get(src.truth, src.truth)})"
        out.append(f"{who} needs a {_either(names)} truth; source {src.name} {tail}{have}")
    elif needs.truth_is_model and src.truth is not None and src.truth != model_kind:
        out.append(f"{who} needs the model to be the truth's family ({src.truth}); model {model_kind} is not")
    for c in needs.source:
        if c not in src.caps:
            out.append(f"{who} needs a source with {_cap(c)}; source {src.name} has none")
    if needs.dims and src.dim not in needs.dims:
        out.append(f"{who} needs {_either([f'{d}-D' for d in needs.dims])} data; source {src.name} is {src.dim}-D")
    for c in needs.model:
        if c not in model_caps:
            out.append(f"{who} needs a model that can {_cap(c)}; model {model_kind} cannot (here)")
    if needs.model_any and not set(needs.model_any) & set(model_caps):
        out.append(f"{who} needs a model that can {_either([_cap(c) for c in needs.model_any])}; "
                   f"model {model_kind} can do neither here")
    return out
