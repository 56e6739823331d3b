"""Diffusion and flow-matching models of vectors and images in the loop (config: families/diffusion_config.py).

Bertrand et al. (ICLR 2024) show that iterative retraining of diffusion and flow-matching models is
stable when the share of real data is large enough; Gerstgrasser et al. (2024) that accumulating data
prevents collapse for diffusion models as for language models.

Two objectives share one denoiser of the point and a sinusoidal embedding of the time t in (0, 1]: an
MLP for vectors (nn/denoise.py), a U-Net for images (nn/unet.py), S chains batched as one module:

- ddpm (Ho et al. 2020): t indexes T noise levels abar_1 > ... > abar_T; the network predicts the noise
  e of x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e. Ancestral sampling runs all T steps with
  sigma_t^2 = beta_t; DDIM (Song et al. 2021, eta 0) runs `steps` of them, deterministic given x_T.
- flow (Lipman et al. 2023; the optimal-transport path of Tong et al. 2023): x_t = t x + (1 - t) e, the
  network regresses the velocity x - e; samples integrate dx/dt = v(x, t) from t = 0 (noise) to 1 by
  Euler or Heun steps.

Training is the shared trainer's (nn/trainer.py): the step's fresh noise and time come in as one
N(0, 1) draw per point of size d + 1 (the last one mapped to a uniform time by the normal CDF; a
class-conditional model draws one more, for dropping the label), drawn from the run's generator, so a
rerun or a resumed run trains on the same numbers. Early stopping scores the held-out loss at noise and
times drawn once per fit.

Images are the project's layout (S, N, P + 1), pixels 0..255 and the label last (255 = unlabelled): the
model sees pixels mapped to [-1, 1]; its samples come back in the training data's dtype, labelled with
the class they were drawn for (conditional) or unlabelled.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..data import UNLABELLED
from ..errors import ConfigError
from ..nn.denoise import MLPDenoiser
from ..nn.trainer import EarlyStopping, Trainer, evaluate, num_threads, resolve_device
from ..nn.unet import UNet, unet_fits
from .diffusion_config import DiffusionConfig

EVAL_CHUNK = 8192
CLIP = 6.0             # DDIM: |x0| bound in standardised units (6 sd: beyond any real point of a toy truth)
GRID_SEED = 0          # decode(): the extra noise of ancestral sampling is the same at every generation


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


class DiffusionLoss:
    """The training loss per chain (S,): noise-prediction (ddpm) or velocity (flow) mean squared error."""

    def __init__(self, objective: str, abar: torch.Tensor, classes: int = 0, label_dropout: float = 0.0):
        self.objective, self.abar, self.steps = objective, abar.float(), len(abar)
        self.classes, self.label_dropout = classes, label_dropout
        self.__qualname__ = f"DiffusionLoss.{objective}.{classes}.{label_dropout}"

    def __call__(self, model, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """x (S, B, d) [labels (S, B)] noise (S, B, d + 1 [+ 1]) -> the per-chain mean loss (S,)."""
        *labels, noise = rest
        d = x.shape[-1]
        eps, u = noise[..., :d], torch.special.ndtr(noise[..., d])          # u ~ U(0, 1)
        y = None
        if labels:   # classifier-free guidance trains the null label on a share of the items
            drop = torch.special.ndtr(noise[..., d + 1]) < self.label_dropout
            y = torch.where(drop, self.classes, labels[0])
        if self.objective == "flow":
            t = u
            xt = t[..., None] * x + (1 - t[..., None]) * eps
            target = x - eps
        else:
            idx = (u * self.steps).long().clamp(0, self.steps - 1)
            ab = self.abar.to(x.device)[idx][..., None]
            xt = ab.sqrt() * x + (1 - ab).sqrt() * eps
            t, target = (idx + 1).float() / self.steps, eps
        return ((model(xt, t, y) - target) ** 2).mean(-1).mean(-1)


class DiffusionFamily:
    """S independent diffusion (or flow-matching) models of d-dimensional points or of images, trained as one
    module."""

    def __init__(self, cfg: DiffusionConfig, source, chains: int):
        self.cfg, self.chains = cfg, int(chains)
        self.images = getattr(source, "data_kind", "vector") == "image"
        if self.images:
            self.image_shape = tuple(int(n) for n in source.image_shape)
            self.dim = self.image_shape[0] * self.image_shape[1]
        else:
            self.dim = int(source.dim)
        self.unet = self.images and cfg.denoiser in ("unet", "auto")      # validation refuses a U-Net of vectors
        self.classes = int(source.n_classes) if cfg.conditional and self.unet else 0   # only the U-Net takes labels
        self.eval_chunk = max(1, 65536 // self.dim) if self.images else EVAL_CHUNK   # as sampling's batches
        if self.unet and not unet_fits(self.image_shape, len(cfg.channels)):
            h, w = self.image_shape
            raise ConfigError(
                f"model.channels: a U-Net of {len(cfg.channels)} resolutions halves the image "
                f"{len(cfg.channels) - 1} time(s), so height and width must be divisible by "
                f"{2 ** (len(cfg.channels) - 1)}; these images are {h}x{w}. Use fewer channels entries "
                f"(e.g. channels: {list(cfg.channels[:1 if h % 2 or w % 2 else 2])}) or denoiser: mlp")
        self.device = resolve_device(cfg.device)
        self.abar = noise_schedule(cfg.schedule, cfg.timesteps)
        self.loss_fn = DiffusionLoss(cfg.objective, self.abar, self.classes, cfg.label_dropout)
        self.clip = 1.0 if self.images else CLIP     # DDIM's x0 bound: the pixel range [-1, 1]
        self.model = None
        self.gen0: Optional[dict] = None
        self.shift = self.scale = None          # (S, 1, d) generation 0's real mean and sd per chain; images 127.5
        self.class_freq = None                  # (S, K) label frequencies of the last training set (conditional)
        self.dtype = np.dtype(np.uint8)         # images: the dtype of the last training data (and of samples)
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_epochs = nan.copy(), np.zeros(self.chains)

    def _new_model(self):
        c = self.cfg
        if self.unet:
            return UNet(self.chains, self.image_shape, tuple(c.channels), c.time_embed, self.classes, c.groups)
        return MLPDenoiser(self.chains, self.dim, tuple(c.hidden), c.time_embed)

    @property
    def latent_dim(self) -> int:
        """decode(): the size of the noise a sample starts from (the pixels of an image)."""
        return self.dim

    temperature = 1.0   # decode(): the noise is N(0, I)

    def _points(self, data) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Points (S, N, d) (vectors float64, pixels float32) and, for a conditional model, labels (S, N) int64."""
        if self.images:
            data = np.asarray(data)
            if data.ndim != 3 or data.shape[-1] != self.dim + 1 or data.shape[0] not in (self.chains, 1):
                raise ValueError(f"diffusion: image data must be (chains, N, {self.dim} pixels + 1 label), got "
                                 f"{data.shape}")
            data = np.broadcast_to(data, (self.chains,) + data.shape[1:])
            labels = None
            if self.classes:
                labels = data[..., -1].astype(np.int64)
                bad = int(((labels < 0) | (labels >= self.classes)).sum())
                if bad:
                    raise ConfigError(
                        f"model.conditional: the class-conditional diffusion model needs every image labelled "
                        f"0..{self.classes - 1}, but {bad} of the {labels.size} training items are not (label "
                        f"{UNLABELLED} = unlabelled); set conditional: false, or train on labelled data")
            return data[..., :-1].astype(np.float32), labels
        x = np.asarray(data, np.float64)
        x = x[..., None] if x.ndim == 2 and self.dim == 1 else x
        if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[0] not in (self.chains, 1):
            raise ValueError(f"diffusion: data must be (chains, N, {self.dim}), got {x.shape}")
        return np.broadcast_to(x, (self.chains,) + x.shape[1:]), None

    # ---- fit ------------------------------------------------------------------
    def fit(self, data, rng: np.random.Generator) -> None:
        """Train every chain on its points (S, N, d) or images (S, N, P + 1); torch seeds come from rng only."""
        x, labels = self._points(data)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        cfg = self.cfg
        if self.images:           # pixels 0..255 -> [-1, 1]
            self.dtype = np.dtype(np.float16) if np.asarray(data).dtype == np.float16 else np.dtype(np.uint8)
            self.shift = self.scale = np.full((self.chains, 1, 1), 127.5)
        elif self.shift is None:  # standardise with generation 0's real data, for every later generation too
            self.shift = x.mean(axis=1, keepdims=True)
            self.scale = np.maximum(x.std(axis=1, keepdims=True), 1e-8)
        if labels is not None:
            self.class_freq = np.stack([np.bincount(row, minlength=self.classes) for row in labels]) / labels.shape[1]
        z = (torch.from_numpy(x) * (1 / 127.5) - 1 if self.images else
             torch.from_numpy(((x - self.shift) / self.scale).astype(np.float32)))
        y = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels))
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
            train, val = [train], [val]
            if y is not None:
                train.append(torch.gather(y, 1, perm[:, n_val:]) if n_val else y)
                val.append(torch.gather(y, 1, perm[:, :n_val]) if n_val else y)
            width = self.dim + 1 + (y is not None)     # noise, time and (conditional) the label's drop
            val.append(torch.randn(self.chains, val[0].shape[1], width, generator=gen))
            train, val = [t.to(self.device) for t in train], [t.to(self.device) for t in val]
            trainer = Trainer(model, self.loss_fn, lr=cfg.lr, compile=bool(cfg.compile), precision=cfg.precision,
                              name="diffusion model", lr_key="model.lr")
            score = lambda: evaluate(model, self.loss_fn, val, self.eval_chunk)   # noqa: E731
            stop = None if cfg.epochs else EarlyStopping(self.chains, cfg.patience, cfg.min_rel_improvement,
                                                         cfg.min_epochs)
            res = trainer.fit(train, gen, batch=cfg.batch, max_epochs=cfg.epochs or cfg.max_epochs, stop=stop,
                              score=score, noise=(width,))
            scores = res.scores
            if scores is None:
                scores = score()
                trainer.check(scores, res.epochs[0] - 1, "held-out")
        self.model = model
        if cfg.init == "gen0" and self.gen0 is None:
            self.gen0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.last_loss, self.last_epochs = np.asarray(scores[0], float), res.epochs.astype(float)

    # ---- sampling -------------------------------------------------------------
    def _guided(self, model, y: Optional[torch.Tensor]):
        """The network as the sampler calls it, f(x, t): conditioned on y, with classifier-free guidance."""
        w = self.cfg.guidance
        if y is None or w == 0:
            return lambda x, t: model(x, t, y)
        null = torch.full_like(y, self.classes)

        def f(x, t):   # one call on both halves: (1 + w) f(x, t, y) - w f(x, t, none)  (Ho & Salimans 2022)
            c, u = model(torch.cat([x, x], 1), torch.cat([t, t], 1), torch.cat([y, null], 1)).chunk(2, 1)
            return (1 + w) * c - w * u
        return f

    @torch.inference_mode()
    def _integrate(self, x: torch.Tensor, gen: torch.Generator, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Noise x (S, m, d) [classes y (S, m)] -> standardised samples, by the configured sampler."""
        cfg = self.cfg
        model = self._guided(self.model.eval(), y)
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
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-self.clip, self.clip)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x

    def _draw(self, noise: Optional[np.ndarray], n: int, gen: torch.Generator,
              classes: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Samples (S, n, d) on the data's scale from noise (S, n, d) (None: drawn from gen), and their classes."""
        if self.model is None:
            raise RuntimeError("the diffusion model has not been fitted (or loaded) yet")
        if self.classes and classes is None:   # each chain's classes in its last training set's proportions
            freq = torch.from_numpy(self.class_freq).float()
            classes = torch.multinomial(freq, n, replacement=True, generator=gen).numpy() if n else \
                np.zeros((self.chains, 0), np.int64)
        out = np.empty((self.chains, n, self.dim))
        step = self.cfg.sample_batch or (max(1, 65536 // self.dim) if self.images else 8192)
        with num_threads(self.cfg.threads):
            for a in range(0, n, step):
                m = min(step, n - a)
                x = (torch.randn(self.chains, m, self.dim, generator=gen) if noise is None else
                     torch.from_numpy(np.asarray(noise[:, a:a + m], np.float32)))
                y = None if not self.classes else torch.from_numpy(np.array(classes[:, a:a + m], np.int64)).to(self.device)
                out[:, a:a + m] = self._integrate(x.to(self.device), gen, y).double().cpu().numpy()
        return out * self.scale + self.shift, classes

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points per chain (S, n, d), denoised from N(0, I) draws made on the CPU from rng; images
        (S, n, P + 1) in the training data's dtype, labelled with their class (conditional) or 255."""
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        x, classes = self._draw(None, n, gen)
        if not self.images:
            return x
        out = np.empty((self.chains, n, self.dim + 1), self.dtype)
        pixels = np.clip(x, 0, 255)
        out[..., :-1] = np.rint(pixels) if self.dtype == np.uint8 else pixels
        out[..., -1] = UNLABELLED if classes is None else classes
        return out

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images (S, m, P) float on 0..255 denoised from the given noise z (S, m, P): the sample grid follows
        the same starting noise through the generations (a conditional model draws cell i as class i mod K;
        ancestral sampling's extra noise is the same every time)."""
        z = np.asarray(z, np.float32)
        m = z.shape[1]
        classes = np.broadcast_to(np.arange(m) % max(self.classes, 1), (self.chains, m)) if self.classes else None
        x, _ = self._draw(z, m, torch.Generator().manual_seed(GRID_SEED), classes)
        return np.clip(x, 0, 255).astype(np.float32)

    # ---- density (vectors) ----------------------------------------------------
    def _ode_steps(self) -> list[tuple[float, float, float]]:
        """The steps x' = a x + b f(x, t) that carry a standardised point to the noise, as (a, b, t).

        flow: Euler steps of dx/dt = v(x, t) backward from the data (t = 1) to the noise (t = 0). ddpm: the
        probability-flow ODE in DDIM's variables, x / sqrt(abar) moving with sqrt((1 - abar) / abar) at rate e(x, t)
        (Song et al. 2021), through `likelihood_steps` of the T levels from the data (abar = 1) to level T; each
        step is DDIM's update run backward, with the noise predicted at the level it steps to (level 0, the clean
        data, is never trained)."""
        k = self.cfg.likelihood_steps
        if self.cfg.objective == "flow":
            return [(1.0, -1.0 / k, 1.0 - i / k) for i in range(k)]
        abar, steps = self.abar.numpy(), len(self.abar)
        out, prev = [], 1.0
        for level in np.unique(np.linspace(1, steps, min(k, steps)).round().astype(int)):
            ab = float(abar[level - 1])
            a = math.sqrt(ab / prev)
            out.append((a, math.sqrt(1 - ab) - a * math.sqrt(1 - prev), level / steps))
            prev = ab
        return out

    def _log_density(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised points z (S, m, d) -> log density (S, m) float64 of the flow that maps them to N(0, I) by
        _ode_steps: the prior's log density at the end plus each step's exact log |det(a I + b df/dx)|, so it is
        the density of an invertible map of the noise and integrates to 1 (up to how well the steps resolve the
        ODE), the change of variables of Chen et al. 2018 with the Jacobian in full (d backward passes)."""
        model, (s, m, d) = self.model.eval(), z.shape
        eye = torch.eye(d, dtype=torch.float64, device=z.device)
        logdet = torch.zeros(s, m, dtype=torch.float64, device=z.device)
        for a, b, t in self._ode_steps():
            x = z.detach().requires_grad_(True)
            with torch.enable_grad():
                f = model(x, torch.full((s, m), t, device=z.device))
                rows = [torch.autograd.grad(f[..., i].sum(), x, retain_graph=i + 1 < d)[0] for i in range(d)]
            logdet += torch.linalg.slogdet(a * eye + b * torch.stack(rows, -2).double())[1]   # rows: df_i/dx
            z = (a * x + b * f).detach()
        return logdet - 0.5 * (z.double() ** 2).sum(-1) - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, x) -> np.ndarray:
        """Log density of shared points x (M, d) under each chain's model (S, M), by the probability-flow ODE
        (_log_density) on the standardised scale, less the log of the standardising scale."""
        if self.images or self.model is None:
            raise RuntimeError("diffusion: log_prob is for a fitted model of vectors")
        x = np.asarray(x, float).reshape(-1, self.dim)
        z = ((x[None] - self.shift) / self.scale).astype(np.float32)        # (S, M, d)
        out = np.empty((self.chains, len(x)))
        step = max(1, EVAL_CHUNK // (2 * self.dim))                         # the graph of d backward passes
        with num_threads(self.cfg.threads):
            for a in range(0, len(x), step):
                chunk = torch.from_numpy(np.ascontiguousarray(z[:, a:a + step])).to(self.device)
                out[:, a:a + step] = self._log_density(chunk).cpu().numpy()
        return out - np.log(self.scale).sum(-1)

    # ---- records and state ----------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Held-out loss and epochs of the last fit: each (S,)."""
        return {"loss": self.last_loss.astype(float), "epochs": self.last_epochs.astype(float)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weights ('w/', with their chain axis), generation-0 weights ('g0/'), the standardisation, records."""
        state = {"loss": self.last_loss, "epochs": self.last_epochs, "dtype": np.array(int(self.dtype == np.float16))}
        if self.class_freq is not None:
            state["class_freq"] = self.class_freq
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
        self.class_freq = np.array(state["class_freq"], float) if "class_freq" in state else None
        self.dtype = np.dtype(np.float16) if int(state.get("dtype", 0)) else np.dtype(np.uint8)
