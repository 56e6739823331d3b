"""Variational autoencoder on images, refitted on its own prior samples.

The MNIST experiment of Shumailov et al. (Nature 2024): a VAE (Kingma &
Welling 2014) is trained on the current 60,000 images, 60,000 new images are
decoded from prior draws z ~ N(0, I), and the next generation trains on them.
By default the same VAE keeps training from generation to generation ("warm",
as in the original experiment); "fresh" re-initialises it each time.

Data layout (project-wide): (S, N, P + 1) with P = H*W pixels on 0..255 and a
last label column (255 = unlabelled), uint8 or float16. The VAE ignores the
label; its samples come back unlabelled, in the dtype it was trained on.

Each fit trains until the held-out -ELBO stops improving (by a relative
``min_rel_improvement`` within ``patience`` epochs, capped at ``max_epochs``)
and keeps each chain's best weights; ``epochs`` instead fixes the epoch count
(the fixed-epoch protocol). The S chains are one batched module (nn/vae.py)
trained by the project's one training loop (nn/trainer.py).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import DivergenceError
from ..nn.trainer import EarlyStopping, Trainer, evaluate, num_threads, resolve_device
from ..nn.vae import VAE, normalise
from .vae_config import VAEConfig
from ..data import UNLABELLED

DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.float16)}  # state_dict code -> sample dtype
EVAL_CHUNK = 4096                                        # items per chain per inference call (no graph is kept)


def heldout_terms(model: VAE, raw: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-chain mean -ELBO, reconstruction and KL (each (S,)) of raw (S, B, P) with noise eps (S, B, latent)."""
    recon, kl = model.loss_terms(raw, eps)
    return (recon + kl).mean(1), recon.mean(1), kl.mean(1)


class VAEFamily:
    """S independent VAEs trained as one chain-batched model."""

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int], chains: int):
        self.cfg, self.chains = cfg, int(chains)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.device = resolve_device(cfg.device)
        self.model: Optional[VAE] = None           # None until fitted or loaded
        self.dtype = np.dtype(np.uint8)            # dtype of the last training data (and of samples)
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_recon, self.last_kl = nan.copy(), nan.copy(), nan.copy()
        self.last_epochs = np.zeros(self.chains, dtype=np.int64)
        self.last_converged = np.zeros(self.chains, dtype=bool)   # early stopping fired before max_epochs
        self.last_history: list[np.ndarray] = []   # held-out loss (S,) after each epoch of the last fit

    @property
    def latent_dim(self) -> int:
        """Size of the latent code z that decode() takes (the `decode` capability)."""
        return self.cfg.latent

    @property
    def temperature(self) -> float:
        """Prior scale of the codes the samples decode: z ~ N(0, temperature^2 I)."""
        return self.cfg.temperature

    @property
    def pixels(self) -> int:
        """P = H * W."""
        return self.image_shape[0] * self.image_shape[1]

    def _new_model(self) -> VAE:
        """An uninitialised chain-batched VAE of this config, on the CPU."""
        c = self.cfg
        return VAE(self.chains, self.image_shape, tuple(c.hidden), c.latent, c.arch, tuple(c.channels), c.decoder)

    # ---- data -----------------------------------------------------------------
    def _pixels(self, data, leading=(None,)) -> torch.Tensor:
        """Pixel columns of (S, N, P + 1) as one contiguous tensor (S, N, P) in the data's own dtype."""
        data = np.asarray(data)
        if data.ndim != 3 or data.shape[-1] != self.pixels + 1:
            raise ValueError(f"VAE data must be (chains, items, {self.pixels} pixels + 1 label), got {data.shape}")
        if data.shape[0] not in (self.chains, *leading):
            raise ValueError(f"data has {data.shape[0]} chains, the family {self.chains}")
        if data.dtype not in (np.uint8, np.float16):
            data = data.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(data[..., :self.pixels]))

    def _split(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-chain random held-out split of x (S, N, P) -> train (S, N - V, P), val (S, V, P)."""
        n = x.shape[1]
        n_val = 0 if self.cfg.val_fraction == 0 else min(n - 1, max(1, round(self.cfg.val_fraction * n)))
        if n_val == 0:
            return x, x
        perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(self.chains)])   # (S, N)
        take = lambda i: torch.gather(x, 1, i.unsqueeze(-1).expand(-1, -1, x.shape[-1]))     # noqa: E731
        return take(perm[:, n_val:]), take(perm[:, :n_val])

    # ---- fit ------------------------------------------------------------------
    def fit(self, data, rng: np.random.Generator) -> None:
        """Train every chain on its pixels (labels ignored); torch seeds come from rng only."""
        x = self._pixels(data)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        old = self.model
        saved = None if old is None else {k: v.clone() for k, v in old.state_dict().items()}  # training is in place
        with num_threads(self.cfg.threads):
            model = old
            if model is None or self.cfg.init == "fresh":
                model = self._new_model()
                model.reset_parameters(gen)         # drawn on the CPU: the same weights on every device
                model.to(self.device)
            # float16 holds 0..255 integers exactly, and the compiled step converts float16 to
            # float32 about 5x faster than uint8 (inductor loads uint8 in partial vectors).
            train, val = (t.to(self.device) for t in self._split(x.half(), gen))
            val_eps = torch.randn(self.chains, val.shape[1], self.cfg.latent, generator=gen).to(self.device)
            try:
                self._train(model, train, val, val_eps, gen)
            except DivergenceError:
                if old is not None:
                    old.load_state_dict(saved)  # leave the family as it was before this fit
                raise
        self.model = model
        # uint8 stays uint8; float16 (and any other float input) samples as float16, un-quantised.
        self.dtype = np.dtype(np.uint8) if x.dtype == torch.uint8 else np.dtype(np.float16)

    def _train(self, model: VAE, train, val, val_eps, gen) -> None:
        """Epochs with per-chain early stopping on the held-out -ELBO (or a fixed count)."""
        cfg = self.cfg
        trainer = Trainer(model, VAE.loss, lr=cfg.lr, compile=cfg.compile is not False, precision=cfg.precision,
                          name="VAE", lr_key="model.lr")
        score = lambda: evaluate(model, heldout_terms, (val, val_eps), EVAL_CHUNK)   # noqa: E731
        stop = None if cfg.epochs else EarlyStopping(self.chains, cfg.patience, cfg.min_rel_improvement,
                                                     cfg.min_epochs)
        res = trainer.fit((train,), gen, batch=cfg.batch, max_epochs=cfg.epochs or cfg.max_epochs,
                          stop=stop, score=score, noise=(cfg.latent,))
        scores = res.scores
        if scores is None:                          # fixed epochs: score the final weights once
            scores = score()
            trainer.check(scores, cfg.epochs - 1, "held-out")
        self.last_loss, self.last_recon, self.last_kl = (np.asarray(s, float) for s in scores)
        self.last_epochs, self.last_converged, self.last_history = res.epochs, res.converged, res.history

    # ---- sampling and codes ---------------------------------------------------
    def _require_fit(self) -> VAE:
        """The fitted module, in inference mode; raises before the first fit or load."""
        if self.model is None:
            raise RuntimeError("the VAE has not been fitted (or loaded) yet")
        return self.model.eval()

    @torch.inference_mode()
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Mean images for latents z (S, m, latent): (S, m, P) float32 on 0..255."""
        model = self._require_fit()
        z = torch.as_tensor(np.asarray(z, np.float32)).to(self.device)
        with num_threads(self.cfg.threads):
            out = [model.to_pixels(model.decode(z[:, a:a + EVAL_CHUNK])).cpu()
                   for a in range(0, z.shape[1], EVAL_CHUNK)]
        return torch.cat(out, 1).numpy() if out else np.zeros((self.chains, 0, self.pixels), np.float32)

    def latents(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n prior draws per chain (S, n, latent): temperature * e, e ~ N(0, I), each |e_i| <= truncation if set.

        temperature^2 is the sampling bias lambda of Alemohammad et al. (2023) on the prior's
        covariance; truncation redraws the coordinates beyond it (Brock et al. 2019). With the
        defaults (1, None) this is exactly one randn call, as it always was.
        """
        e = torch.randn(self.chains, n, self.cfg.latent, generator=gen)
        t = self.cfg.truncation
        if t is not None:
            bad = e.abs() > t
            while bad.any():   # each round keeps P(|e| <= t) of the rest: a few rounds for t >= 1
                e[bad] = torch.randn(int(bad.sum()), generator=gen)
                bad = e.abs() > t
        return e * self.cfg.temperature

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n unlabelled images per chain from the prior: (S, n, P + 1) in the training data's dtype.

        Each image is the decoder's mean for z from latents() (no pixel noise), as in the
        MNIST experiment; uint8 images are rounded and clipped to 0..255.
        """
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        z = self.latents(n, gen)
        px = self.decode(z.numpy())
        out = np.empty((self.chains, n, self.pixels + 1), self.dtype)
        out[..., :self.pixels] = np.clip(np.rint(px) if self.dtype == np.uint8 else px, 0, 255)
        out[..., self.pixels] = UNLABELLED
        return out

    @torch.inference_mode()
    def encode_mean(self, x: np.ndarray) -> np.ndarray:
        """Latent means of images x (S or 1, N, P + 1) under each chain's encoder: (S, N, latent)."""
        model = self._require_fit()
        px = self._pixels(x, leading=(1,)).to(self.device)
        px = px.expand(self.chains, *px.shape[1:])
        with num_threads(self.cfg.threads):
            out = [model.encode(normalise(px[:, a:a + EVAL_CHUNK]))[0].cpu()
                   for a in range(0, px.shape[1], EVAL_CHUNK)]
        return torch.cat(out, 1).numpy() if out else np.zeros((self.chains, 0, self.cfg.latent), np.float32)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Not available: a VAE's likelihood is intractable (only the ELBO bound is)."""
        raise NotImplementedError("the VAE family has no exact log density; use params()['loss'] (held-out -ELBO)")

    # ---- records and state ----------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Held-out -ELBO, reconstruction and KL per image, and epochs run, of the last fit: each (S,)."""
        return {"loss": self.last_loss, "recon": self.last_recon, "kl": self.last_kl,
                "epochs": self.last_epochs.astype(float)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """float32 weights ('w/' + the module's state_dict keys, leading chain axis), sample dtype code
        and last-fit records.

        Adam's moments are not saved: every fit starts a fresh optimiser, so weights plus the
        fit's rng determine the next generation exactly (a resumed run matches an unbroken one).
        """
        code = next(k for k, v in DTYPES.items() if v == self.dtype)
        state = {"dtype": np.array(code), "loss": self.last_loss, "recon": self.last_recon,
                 "kl": self.last_kl, "epochs": self.last_epochs}
        if self.model is not None:
            state.update({"w/" + k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
        weights = {k[2:]: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items() if k.startswith("w/")}
        self.model = None
        if weights:
            model = self._new_model()
            try:
                model.load_state_dict(weights)   # strict: every key, matching shapes
            except RuntimeError as e:
                raise ValueError(f"VAE state does not match this architecture (config changed?): {e}") from None
            self.model = model.to(self.device)
        self.dtype = DTYPES[int(state["dtype"])]
        self.last_loss, self.last_recon, self.last_kl = (np.array(state[k], float) for k in ("loss", "recon", "kl"))
        self.last_epochs = np.array(state["epochs"], np.int64)
