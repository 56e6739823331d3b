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
(the fixed-epoch protocol). The S chains are one batched model (nn/vae.py).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator

from ..errors import DivergenceError
from ..nn.vae import EVAL_CHUNK, Trainer, VAENet, evaluate, init_flat, layout, num_threads, unflatten
from ..schema import Component

UNLABELLED = 255                                         # label of a generated image
DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.float16)}  # state_dict code -> sample dtype


class VAEConfig(Component):
    """Config of the ``vae`` family (defaults: W2's 784-128-128-20 MLP VAE with a Gaussian decoder)."""

    kind: Literal["vae"] = "vae"
    arch: Literal["mlp", "conv"] = "mlp"
    # Dense widths of the encoder; the decoder mirrors them. hidden=[256, 32, 24], latent=16
    # gives the 784-256-32-24-16 preset.
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1)
    latent: int = Field(20, ge=1)
    # conv only: channels of the two 3x3 stride-2 encoder convs (mirrored by 4x4 transposed convs).
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    # gaussian: sum of squares on data normalised with MNIST's mean/std (W2); bernoulli: BCE on [0, 1].
    decoder: Literal["gaussian", "bernoulli"] = "gaussian"
    lr: float = Field(1e-3, gt=0)
    # 128 as W2: fastest to a given held-out loss here. 512 runs ~1.4x more images/s but needs
    # far more epochs (benchmarks/bench_vae.py: loss 160 after 25 epochs at 128, 39 at 256,
    # not within 45 at 512 with lr 2e-3).
    batch: int = Field(128, ge=1)
    # Fixed-epoch protocol: exactly this many epochs, no early stopping (W2's original used 200).
    epochs: Optional[int] = Field(None, ge=1)
    max_epochs: int = Field(200, ge=1)
    min_epochs: int = Field(5, ge=1)
    # Share of each chain's items held out for the ELBO that drives early stopping and params().
    # 0 (only with `epochs`): train on every item; params() then reports the training-set loss.
    val_fraction: float = Field(0.1, ge=0, lt=1)
    # Stop once the held-out loss has not improved by min_rel_improvement (relative) for
    # `patience` epochs; the improvement is measured against the last epoch that did improve
    # by that much, so slow steady progress still counts. Measured on MNIST (W2 net): from
    # scratch these defaults stop at epoch 69 with held-out loss 149.8 (150 epochs reach
    # 144.5); a warm second generation, on the VAE's own samples, stops after 10 epochs.
    patience: int = Field(5, ge=1)
    min_rel_improvement: float = Field(3e-3, ge=0)
    # warm: keep training the previous generation's VAE (the original experiment); fresh: re-initialise.
    init: Literal["warm", "fresh"] = "warm"
    temperature: float = Field(1.0, gt=0)   # prior draws z ~ N(0, temperature^2 I)
    threads: int = Field(0, ge=0)           # torch threads while fitting/sampling; 0 = torch's default (all cores)
    # Compile the whole train step (forward, backward, Adam) into one graph: ~1.5x faster epochs
    # than our eager path (2.2-2.6x the DataLoader reference, benchmarks/bench_vae.py) after a
    # one-off compile per process and architecture (a few s, ~15-30 s with a cold inductor
    # cache); falls back to eager autograd + fused Adam when compiling fails.
    compile: bool = True

    @model_validator(mode="after")
    def _need_heldout(self):
        """Early stopping needs held-out data."""
        if self.epochs is None and self.val_fraction == 0:
            raise ValueError("early stopping needs held-out data: set val_fraction > 0, or set epochs "
                             "for a fixed number of epochs")
        return self


class VAEFamily:
    """S independent VAEs trained as one chain-batched model."""

    def __init__(self, cfg: VAEConfig, image_shape: tuple[int, int], chains: int):
        self.cfg, self.chains = cfg, int(chains)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.net = VAENet(self.chains, self.image_shape, tuple(cfg.hidden), cfg.latent, cfg.arch,
                          tuple(cfg.channels), cfg.decoder)
        self.flat: Optional[torch.Tensor] = None   # all weights, (T,) float32 (nn/vae.py layout); None until fitted
        self.dtype = np.dtype(np.uint8)       # dtype of the last training data (and of samples)
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_recon, self.last_kl = nan.copy(), nan.copy(), nan.copy()
        self.last_epochs = np.zeros(self.chains, dtype=np.int64)
        self.last_history: list[np.ndarray] = []   # held-out loss (S,) after each epoch of the last fit

    @property
    def pixels(self) -> int:
        """P = H * W."""
        return self.image_shape[0] * self.image_shape[1]

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
        with num_threads(self.cfg.threads):
            before = None if self.flat is None else self.flat.clone()   # training runs in place
            if self.flat is None or self.cfg.init == "fresh":
                self.flat = init_flat(self.net, gen)
            # float16 holds 0..255 integers exactly, and the compiled step converts float16 to
            # float32 about 5x faster than uint8 (inductor loads uint8 in partial vectors).
            train, val = self._split(x.half(), gen)
            val_eps = torch.randn(self.chains, val.shape[1], self.cfg.latent, generator=gen)
            try:
                self._train(train, val, val_eps, gen)
            except DivergenceError:
                self.flat = before    # leave the family as it was before this fit
                raise
        # uint8 stays uint8; float16 (and any other float input) samples as float16, un-quantised.
        self.dtype = np.dtype(np.uint8) if x.dtype == torch.uint8 else np.dtype(np.float16)

    def _epoch(self, trainer: Trainer, train: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One pass over a fresh per-chain permutation (last partial batch dropped); mean train loss (S,)."""
        s, n, p = train.shape
        b = min(self.cfg.batch, n)
        steps = n // b                       # fixed batch shape: one compiled graph, no recompiles
        perm = torch.stack([torch.randperm(n, generator=gen)[:steps * b] for _ in range(s)])  # (S, steps*B)
        # One gather per epoch into (steps, S, B, P): every batch is then a contiguous slice.
        rows = (perm + n * torch.arange(s)[:, None]).reshape(s, steps, b).transpose(0, 1).reshape(-1)
        batches = train.reshape(s * n, p).index_select(0, rows).view(steps, s, b, p)
        eps = torch.randn(steps, s, b, self.cfg.latent, generator=gen)
        return trainer.epoch(batches, eps)

    def _train(self, train, val, val_eps, gen) -> None:
        """Epochs with per-chain early stopping on the held-out -ELBO (or a fixed count)."""
        cfg = self.cfg
        trainer = Trainer(self.net, self.flat, cfg.lr, cfg.compile)   # trains self.flat in place
        stop = _Stopper(self.net, cfg) if cfg.epochs is None else None
        self.last_history = []
        for e in range(cfg.epochs or cfg.max_epochs):
            train_loss = self._epoch(trainer, train, gen)
            self._check(train_loss, e, "training")
            if stop is None:
                continue
            heldout = evaluate(self.net, self.flat, val, val_eps)
            self._check(heldout[0], e, "held-out")
            self.last_history.append(heldout[0].numpy().copy())
            if stop.update(e, heldout, self.flat):
                break
        if stop is None:
            res = evaluate(self.net, self.flat, val, val_eps)
            self._check(res[0], cfg.epochs - 1, "held-out")
            self.last_epochs = np.full(self.chains, cfg.epochs, dtype=np.int64)
        else:
            self.flat = stop.best_flat
            res, self.last_epochs = stop.best, stop.epochs_run()
        self.last_loss, self.last_recon, self.last_kl = (r.numpy().astype(float) for r in res)

    def _check(self, loss: torch.Tensor, epoch: int, what: str) -> None:
        """Raise DivergenceError on a non-finite per-chain loss (S,)."""
        bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
        if bad:
            raise DivergenceError(
                f"VAE training diverged: non-finite {what} loss in epoch {epoch + 1} on chain(s) {bad} "
                f"(lr={self.cfg.lr}, batch={self.cfg.batch}); lower model.lr (e.g. {self.cfg.lr / 10:g}) "
                "and resume")

    # ---- sampling and codes ---------------------------------------------------
    def _require_fit(self) -> dict[str, torch.Tensor]:
        """Named weight views; raises before the first fit or load."""
        if self.flat is None:
            raise RuntimeError("the VAE has not been fitted (or loaded) yet")
        return unflatten(self.net, self.flat)

    @torch.inference_mode()
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Mean images for latents z (S, m, latent): (S, m, P) float32 on 0..255."""
        ps = self._require_fit()
        z = torch.as_tensor(np.asarray(z, np.float32))
        with num_threads(self.cfg.threads):
            out = [self.net.to_pixels(self.net.decode_raw(ps, z[:, a:a + EVAL_CHUNK]))
                   for a in range(0, z.shape[1], EVAL_CHUNK)]
        return torch.cat(out, 1).numpy() if out else np.zeros((self.chains, 0, self.pixels), np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n unlabelled images per chain from the prior: (S, n, P + 1) in the training data's dtype.

        Each image is the decoder's mean for z ~ N(0, temperature^2 I) (no pixel noise), as in
        the MNIST experiment; uint8 images are rounded and clipped to 0..255.
        """
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        z = torch.randn(self.chains, n, self.cfg.latent, generator=gen) * self.cfg.temperature
        px = self.decode(z.numpy())
        out = np.empty((self.chains, n, self.pixels + 1), self.dtype)
        out[..., :self.pixels] = np.clip(np.rint(px) if self.dtype == np.uint8 else px, 0, 255)
        out[..., self.pixels] = UNLABELLED
        return out

    @torch.inference_mode()
    def encode_mean(self, x: np.ndarray) -> np.ndarray:
        """Latent means of images x (S or 1, N, P + 1) under each chain's encoder: (S, N, latent)."""
        ps = self._require_fit()
        px = self._pixels(x, leading=(1,))
        px = px.expand(self.chains, *px.shape[1:])
        with num_threads(self.cfg.threads):
            out = [self.net.encode(ps, self.net.normalise(px[:, a:a + EVAL_CHUNK]))[0]
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
        """float32 weights ('w/<layer>.w|b', leading chain axis), sample dtype code and last-fit records.

        Adam's moments are not saved: every fit starts a fresh optimiser, so weights plus the
        fit's rng determine the next generation exactly (a resumed run matches an unbroken one).
        """
        code = next(k for k, v in DTYPES.items() if v == self.dtype)
        state = {"dtype": np.array(code), "loss": self.last_loss, "recon": self.last_recon,
                 "kl": self.last_kl, "epochs": self.last_epochs}
        if self.flat is not None:
            state.update({"w/" + k: p.numpy().copy() for k, p in unflatten(self.net, self.flat).items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
        shapes = self.net.shapes()
        weights = {k[2:]: v for k, v in state.items() if k.startswith("w/")}
        if weights:
            if set(weights) != set(shapes):
                raise ValueError("VAE state does not match this architecture (config changed?)")
            self.flat = torch.cat([torch.tensor(np.asarray(weights[k], np.float32)).reshape(-1)
                                   for k, _, _ in layout(self.net)])
        else:
            self.flat = None
        self.dtype = DTYPES[int(state["dtype"])]
        self.last_loss, self.last_recon, self.last_kl = (np.array(state[k], float) for k in ("loss", "recon", "kl"))
        self.last_epochs = np.array(state["epochs"], np.int64)


class _Stopper:
    """Per-chain early stopping on the held-out loss, keeping each chain's best weights."""

    def __init__(self, net: VAENet, cfg: VAEConfig):
        self.net, self.cfg, s = net, cfg, net.chains
        self.best = None                                   # (loss, recon, kl), each (S,), at each chain's best epoch
        self.best_flat: Optional[torch.Tensor] = None      # weights (T,) at each chain's best epoch
        self.ref = torch.full((s,), float("inf"))          # loss at the last significant improvement
        self.since = torch.zeros(s, dtype=torch.int64)     # epochs since then
        self.active = torch.ones(s, dtype=torch.bool)
        self.stopped_at = torch.zeros(s, dtype=torch.int64)
        self.epoch = 0

    def _keep(self, better: torch.Tensor, heldout: tuple, flat: torch.Tensor) -> None:
        """Copy the current weights and scores of the chains in mask `better` (S,) into the best."""
        if self.best is None:
            self.best, self.best_flat = tuple(h.clone() for h in heldout), flat.clone()
            return
        for b, h in zip(self.best, heldout):
            b[better] = h[better]
        for _, shape, off in layout(self.net):             # each segment is (S, ...) chain-major
            n = math.prod(shape)
            cur, best = flat[off:off + n].view(shape[0], -1), self.best_flat[off:off + n].view(shape[0], -1)
            best[better] = cur[better]

    def update(self, epoch: int, heldout: tuple, flat: torch.Tensor) -> bool:
        """Record one epoch's held-out (loss, recon, kl), each (S,); True once every chain has stopped."""
        loss, self.epoch = heldout[0], epoch + 1
        better = self.active & (loss < (self.best[0] if self.best is not None else torch.inf))
        if better.any():
            self._keep(better, heldout, flat)
        significant = loss <= self.ref * (1 - self.cfg.min_rel_improvement)
        self.ref = torch.where(self.active & significant, loss, self.ref)
        self.since = torch.where(significant, 0, self.since + 1)
        done = self.active & (self.since >= self.cfg.patience) & (epoch + 1 >= self.cfg.min_epochs)
        self.stopped_at[done] = epoch + 1
        self.active &= ~done
        return not bool(self.active.any())

    def epochs_run(self) -> np.ndarray:
        """Epochs each chain trained for (the cap for chains that never stopped): (S,)."""
        return torch.where(self.active, self.epoch, self.stopped_at).numpy().astype(np.int64)
