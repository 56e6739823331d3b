"""Diffusion and flow-matching models of vectors in the loop (config: families/diffusion_config.py).

Bertrand et al. (ICLR 2024) show that iterative retraining of diffusion and flow-matching models is
stable when the share of real data is large enough; Gerstgrasser et al. (2024) that accumulating data
prevents collapse for diffusion models as for language models.

Two objectives share one denoiser, an MLP of the point and a sinusoidal embedding of the time t in
(0, 1] (Vaswani et al. 2017's frequencies), S chains batched as one module (ChainLinear):

- ddpm (Ho et al. 2020): t indexes T noise levels abar_1 > ... > abar_T; the network predicts the noise
  e of x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e. Ancestral sampling runs all T steps with
  sigma_t^2 = beta_t; DDIM (Song et al. 2021, eta 0) runs `steps` of them, deterministic given x_T.
- flow (Lipman et al. 2023; the optimal-transport path of Tong et al. 2023): x_t = t x + (1 - t) e, the
  network regresses the velocity x - e; samples integrate dx/dt = v(x, t) from t = 0 (noise) to 1 by
  Euler or Heun steps.

Training is the shared trainer's (nn/trainer.py): the step's fresh noise and time come in as one
N(0, 1) draw per point of size d + 1 (the last one mapped to a uniform time by the normal CDF), drawn
from the run's generator, so a rerun or a resumed run trains on the same numbers. Early stopping
scores the held-out loss at noise and times drawn once per fit.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..nn.trainer import EarlyStopping, Trainer, evaluate, num_threads, resolve_device
from ..nn.vae import ChainLinear
from .diffusion_config import DiffusionConfig

EVAL_CHUNK = 8192
CLIP = 6.0             # DDIM: |x0| bound in standardised units (6 sd: beyond any real point of a toy truth)


def noise_schedule(kind: str, steps: int) -> torch.Tensor:
    """abar_t for t = 1 .. T (T,), float64: linear betas (Ho et al., scaled to T) or the cosine schedule."""
    if kind == "linear":
        scale = 1000 / steps
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=torch.float64).clamp(max=0.999)
        return torch.cumprod(1 - betas, 0)
    s = 0.008                                           # Nichol & Dhariwal (2021)
    f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


class Denoiser(nn.Module):
    """S MLPs (S, B, d) x (S, B) -> (S, B, d) of the point and an embedding of the time."""

    def __init__(self, chains: int, dim: int, hidden: tuple, embed: int):
        super().__init__()
        widths = [dim + embed, *hidden]
        self.layers = nn.ModuleList(ChainLinear(chains, a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = ChainLinear(chains, widths[-1], dim)
        half = embed // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = (1000.0 * t)[..., None] * self.freqs
        h = torch.cat([x, torch.sin(a), torch.cos(a)], -1)
        for layer in self.layers:
            h = torch.nn.functional.silu(layer(h))
        return self.out(h)

    def reset_parameters(self, gen: torch.Generator) -> None:
        """PyTorch's default layer init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from gen."""
        for m in self.modules():
            if isinstance(m, ChainLinear):
                bound = 1.0 / math.sqrt(m.fan_in)
                with torch.no_grad():
                    for p in (m.weight, m.bias):
                        p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))


class DiffusionLoss:
    """The training loss per chain (S,): noise-prediction (ddpm) or velocity (flow) mean squared error."""

    def __init__(self, objective: str, abar: torch.Tensor):
        self.objective, self.abar, self.steps = objective, abar.float(), len(abar)
        self.__qualname__ = f"DiffusionLoss.{objective}"

    def __call__(self, model, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        eps, u = noise[..., :d], torch.special.ndtr(noise[..., d])          # u ~ U(0, 1)
        if self.objective == "flow":
            t = u
            xt = t[..., None] * x + (1 - t[..., None]) * eps
            target = x - eps
        else:
            idx = (u * self.steps).long().clamp(0, self.steps - 1)
            ab = self.abar.to(x.device)[idx][..., None]
            xt = ab.sqrt() * x + (1 - ab).sqrt() * eps
            t, target = (idx + 1).float() / self.steps, eps
        return ((model(xt, t) - target) ** 2).mean(-1).mean(-1)


class DiffusionFamily:
    """S independent diffusion (or flow-matching) models of d-dimensional points, trained as one module."""

    def __init__(self, cfg: DiffusionConfig, dim: int, chains: int):
        self.cfg, self.dim, self.chains = cfg, int(dim), int(chains)
        self.device = resolve_device(cfg.device)
        self.abar = noise_schedule(cfg.schedule, cfg.timesteps)
        self.loss_fn = DiffusionLoss(cfg.objective, self.abar)
        self.model: Optional[Denoiser] = None
        self.gen0: Optional[dict] = None
        self.shift = self.scale = None          # (S, 1, d): generation 0's real mean and sd per chain
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_epochs = nan.copy(), np.zeros(self.chains)

    def _new_model(self) -> Denoiser:
        return Denoiser(self.chains, self.dim, tuple(self.cfg.hidden), self.cfg.time_embed)

    def _points(self, data) -> np.ndarray:
        x = np.asarray(data, np.float64)
        x = x[..., None] if x.ndim == 2 and self.dim == 1 else x
        if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[0] not in (self.chains, 1):
            raise ValueError(f"diffusion: data must be (chains, N, {self.dim}), got {x.shape}")
        return np.broadcast_to(x, (self.chains,) + x.shape[1:])

    # ---- fit ------------------------------------------------------------------
    def fit(self, data, rng: np.random.Generator) -> None:
        """Train every chain on its points (S, N, d); torch seeds come from rng only."""
        x = self._points(data)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        cfg = self.cfg
        if self.shift is None:   # standardise with generation 0's real data, for every later generation too
            self.shift = x.mean(axis=1, keepdims=True)
            self.scale = np.maximum(x.std(axis=1, keepdims=True), 1e-8)
        z = torch.from_numpy(((x - self.shift) / self.scale).astype(np.float32))
        with num_threads(cfg.threads):
            model = self._new_model()
            if self.model is None or cfg.init == "fresh" or (cfg.init == "gen0" and self.gen0 is None):
                model.reset_parameters(gen)
            else:
                model.load_state_dict(self.model.state_dict() if cfg.init == "warm" else self.gen0)
            model.to(self.device)
            n = z.shape[1]
            n_val = 0 if cfg.val_fraction == 0 else min(n - 1, max(1, round(cfg.val_fraction * n)))
            perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(self.chains)])
            take = lambda i: torch.gather(z, 1, i[..., None].expand(-1, -1, self.dim))   # noqa: E731
            train, val = (take(perm[:, n_val:]), take(perm[:, :n_val])) if n_val else (z, z)
            val_noise = torch.randn(self.chains, val.shape[1], self.dim + 1, generator=gen)
            train, val, val_noise = (t.to(self.device) for t in (train, val, val_noise))
            trainer = Trainer(model, self.loss_fn, lr=cfg.lr, compile=bool(cfg.compile), precision=cfg.precision,
                              name="diffusion model", lr_key="model.lr")
            score = lambda: evaluate(model, self.loss_fn, (val, val_noise), EVAL_CHUNK)   # noqa: E731
            stop = None if cfg.epochs else EarlyStopping(self.chains, cfg.patience, cfg.min_rel_improvement,
                                                         cfg.min_epochs)
            res = trainer.fit((train,), gen, batch=cfg.batch, max_epochs=cfg.epochs or cfg.max_epochs, stop=stop,
                              score=score, noise=(self.dim + 1,))
            scores = res.scores
            if scores is None:
                scores = score()
                trainer.check(scores, res.epochs[0] - 1, "held-out")
        self.model = model
        if cfg.init == "gen0" and self.gen0 is None:
            self.gen0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.last_loss, self.last_epochs = np.asarray(scores[0], float), res.epochs.astype(float)

    # ---- sampling -------------------------------------------------------------
    @torch.inference_mode()
    def _integrate(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Noise x (S, m, d) -> standardised samples, by the configured sampler."""
        cfg, model = self.cfg, self.model.eval()
        sampler = cfg.sampler if cfg.sampler != "auto" else ("euler" if cfg.objective == "flow" else "ancestral")
        s, m = x.shape[:2]
        full = lambda v: torch.full((s, m), float(v), device=x.device)   # noqa: E731
        if cfg.objective == "flow":
            dt = 1.0 / cfg.steps
            for i in range(cfg.steps):
                t = i * dt
                v = model(x, full(t))
                if sampler == "heun":
                    v = 0.5 * (v + model(x + dt * v, full(t + dt)))
                x = x + dt * v
            return x
        abar = self.abar.to(x.device)
        steps = len(abar)
        if sampler == "ancestral":
            for k in range(steps - 1, -1, -1):
                ab, ab_prev = abar[k], (abar[k - 1] if k else torch.ones((), dtype=abar.dtype, device=x.device))
                beta = 1 - ab / ab_prev
                eps = model(x, full((k + 1) / steps))
                x = ((x - (beta / (1 - ab).sqrt()).float() * eps) / (1 - beta).sqrt().float())
                if k:
                    x = x + beta.sqrt().float() * torch.randn(x.shape, generator=gen).to(x.device)
            return x
        ks = np.unique(np.linspace(steps - 1, 0, cfg.steps).round().astype(int))[::-1]
        for i, k in enumerate(ks):
            ab = abar[k].float()
            ab_prev = abar[ks[i + 1]].float() if i + 1 < len(ks) else torch.ones((), device=x.device)
            eps = model(x, full((k + 1) / steps))
            # x0's estimate divides by sqrt(abar), ~1e-3 at the noisiest level: clipped to the standardised
            # data's range, as DDIM samplers clip it (diffusers' clip_sample), then eps made consistent with it
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-CLIP, CLIP)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points per chain (S, n, d), denoised from N(0, I) draws made on the CPU from rng."""
        if self.model is None:
            raise RuntimeError("the diffusion model has not been fitted (or loaded) yet")
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        out = np.empty((self.chains, n, self.dim))
        with num_threads(self.cfg.threads):
            for a in range(0, n, self.cfg.sample_batch):
                m = min(self.cfg.sample_batch, n - a)
                x = torch.randn(self.chains, m, self.dim, generator=gen).to(self.device)
                out[:, a:a + m] = self._integrate(x, gen).double().cpu().numpy()
        return out * self.scale + self.shift

    # ---- records and state ----------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Held-out loss and epochs of the last fit: each (S,)."""
        return {"loss": self.last_loss.astype(float), "epochs": self.last_epochs.astype(float)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weights ('w/', with their chain axis), generation-0 weights ('g0/'), the standardisation, records."""
        state = {"loss": self.last_loss, "epochs": self.last_epochs}
        if self.model is not None:
            state.update({"w/" + k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()})
            state["shift"], state["scale"] = self.shift, self.scale
        if self.gen0 is not None:
            state.update({"g0/" + k: v.numpy() for k, v in self.gen0.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict()."""
        def part(prefix):
            got = {k[len(prefix):]: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()
                   if k.startswith(prefix)}
            return got or None

        weights = part("w/")
        if weights is None:
            self.model = None
        else:
            model = self._new_model()
            try:
                model.load_state_dict(weights)
            except RuntimeError as e:
                raise ValueError(f"diffusion state does not match this architecture (config changed?): "
                                 f"{str(e).splitlines()[0]}") from None
            self.model = model.to(self.device)
            self.shift, self.scale = np.array(state["shift"], float), np.array(state["scale"], float)
        self.gen0 = part("g0/")
        self.last_loss, self.last_epochs = np.array(state["loss"], float), np.array(state["epochs"], float)
