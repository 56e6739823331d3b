"""An image generator paired with a classifier that labels its samples.

The original MNIST collapse protocol: at generation g a VAE and a classifier
are both trained on generation g's (image, label) data; the VAE's samples
form generation g+1 and get their labels from the classifier of generation g.
The VAE is warm-started across generations, the classifier re-initialised
(both configurable). labels="reference" labels samples with the reference CNN
trained once on real data instead; labels="none" leaves them unlabelled.
"""

from __future__ import annotations

import time

import numpy as np

from ..nn.classifier import Classifier
from ..data import UNLABELLED
from .vae import VAEFamily
from .vae_config import LabelledVAEConfig  # noqa: F401 - re-exported


class LabelledVAE:
    """S chains of (VAE, classifier) pairs."""

    def __init__(self, cfg: LabelledVAEConfig, source, chains: int):
        self.cfg, self.chains, self.source = cfg, chains, source
        self.vae = VAEFamily(cfg, source.image_shape, chains)
        self.classifier = [Classifier(cfg.classifier, source.image_shape, source.n_classes)
                           for _ in range(chains)]
        self.clf_info = [{} for _ in range(chains)]
        self.timings: dict[str, float] = {}  # seconds per phase of the last fit/sample (timings.csv)

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """Train the VAEs on pixels and (labels="own") each chain's classifier on its labelled items."""
        t0 = time.perf_counter()
        self.vae.fit(data, rng)
        self.timings = {"vae_fit": time.perf_counter() - t0}
        t0 = time.perf_counter()
        if self.cfg.labels == "own":
            seeds = rng.integers(0, 2**62, size=self.chains)
            for c, clf in enumerate(self.classifier):
                x = data[min(c, len(data) - 1)]
                self.clf_info[c] = clf.fit(x[:, :-1], x[:, -1], int(seeds[c]))
        self.timings["classifier_fit"] = time.perf_counter() - t0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n generated images per chain (S, n, P+1), labelled by the chosen classifier."""
        t0 = time.perf_counter()
        x = self.vae.sample(n, rng)
        t1 = time.perf_counter()
        for c in range(self.chains):
            clf = self.classifier[c] if self.cfg.labels == "own" else (
                self.source.reference_classifier() if self.cfg.labels == "reference" else None)
            if clf is not None:
                x[c, :, -1] = clf.predict(x[c, :, :-1])[0]
            else:
                x[c, :, -1] = UNLABELLED
        self.timings.update(vae_sample=t1 - t0, labelling=time.perf_counter() - t1)
        return x

    @property
    def latent_dim(self) -> int:
        """Size of the latent codes decode() takes."""
        return self.vae.latent_dim

    @property
    def temperature(self) -> float:
        """Prior scale of the codes: z ~ N(0, temperature^2 I)."""
        return self.vae.temperature

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images (S, m, P) for latent codes z (S, m, latent)."""
        return self.vae.decode(z)

    def encode_mean(self, x: np.ndarray) -> np.ndarray:
        """Latent means (S, N, latent)."""
        return self.vae.encode_mean(x)

    def log_prob(self, x):
        """Not available for a VAE (the ELBO is only a bound)."""
        raise NotImplementedError("a VAE has no exact log-likelihood; use the loss columns")

    def params(self) -> dict[str, np.ndarray]:
        """VAE held-out losses and epochs, plus the classifier's held-out accuracy and epochs."""
        out = dict(self.vae.params())
        if self.cfg.labels == "own":
            out["clf_val_acc"] = np.array([i.get("val_accuracy", np.nan) for i in self.clf_info], float)
            out["clf_epochs"] = np.array([i.get("epochs", 0) for i in self.clf_info], float)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """VAE weights and every chain's classifier weights."""
        out = {f"vae/{k}": v for k, v in self.vae.state_dict().items()}
        for c, clf in enumerate(self.classifier):
            if clf.fitted:
                out.update({f"clf{c}/{k}": v for k, v in clf.state_dict().items()})
        for c, info in enumerate(self.clf_info):
            out[f"info{c}"] = np.array([info.get("val_accuracy", np.nan), info.get("epochs", 0)], float)
        return out

    def load_state_dict(self, state) -> None:
        """Restore from state_dict()."""
        self.vae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vae/")})
        for c, clf in enumerate(self.classifier):
            sub = {k[len(f"clf{c}/"):]: v for k, v in state.items() if k.startswith(f"clf{c}/")}
            if sub:
                clf.load_state_dict(sub)
                clf.fitted = True
            if f"info{c}" in state:
                acc, ep = state[f"info{c}"]
                self.clf_info[c] = {"val_accuracy": float(acc), "epochs": int(ep)}
