"""Config of the ``diffusion`` family, free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ..nn.config import TrainingConfig


class DiffusionConfig(TrainingConfig):
    """A denoising diffusion model (DDPM, Ho et al. 2020) or a conditional flow-matching model (Lipman et al.
    2023, the optimal-transport path of Tong et al. 2023) of vectors, retrained each generation.

    The denoiser is an MLP over the point and a sinusoidal embedding of the time; the S chains are S such
    networks batched into one module (nn/vae.py's ChainLinear), fitted by the shared trainer. Data are
    standardised per chain with generation 0's real mean and sd.
    """

    kind: Literal["diffusion"] = Field("diffusion", description=(
        "the family: diffusion, a DDPM or conditional flow-matching model of vectors"))
    example: ClassVar[dict] = {"hidden": [32, 32], "epochs": 2, "batch": 64, "compile": False, "threads": 1,
                               "steps": 10, "timesteps": 50}
    objective: Literal["ddpm", "flow"] = Field("flow", description=(
        "ddpm: predict the noise of x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e (Ho et al. 2020); flow: regress the "
        "velocity x - e of the straight path x_t = t x + (1 - t) e (conditional flow matching, Lipman et al. "
        "2023; the optimal-transport path, Tong et al. 2023)"))
    hidden: list[int] = Field(default_factory=lambda: [128, 128, 128], min_length=1, description=(
        "widths of the denoiser MLP's hidden layers (SiLU)"))
    time_embed: int = Field(32, ge=2, description="size of the sinusoidal time embedding (even)")
    timesteps: int = Field(100, ge=2, description="ddpm: T, the noise levels of training and ancestral sampling")
    schedule: Literal["linear", "cosine"] = Field("cosine", description=(
        "ddpm: linear betas 1e-4 .. 0.02 scaled to T (Ho et al.), or the cosine abar of Nichol & Dhariwal 2021"))
    sampler: Literal["auto", "ancestral", "ddim", "euler", "heun"] = Field("auto", description=(
        "ddpm: ancestral (all T steps) or ddim (`steps` evenly spaced, eta 0, Song et al. 2021); flow: euler or "
        "heun over `steps`; auto = ancestral for ddpm, euler for flow"))
    steps: int = Field(50, ge=1, description="ddim, euler, heun: integration steps of a sample")
    init: Literal["fresh", "warm", "gen0"] = Field("fresh", description=(
        "where each generation's training starts: fresh weights, the previous generation's, or generation 0's"))
    sample_batch: int = Field(8192, ge=1, description="points denoised at once per chain (bounds memory)")
    # -- the shared training settings' defaults that differ here (nn/config.py: TrainingConfig) --------
    lr: float = TrainingConfig.default("lr", 3e-3, (
        "Adam; on 8 Gaussians (10,000 points) 3e-3 for 100 epochs covers every mode, 1e-3 for 30 none"))
    batch: int = TrainingConfig.default("batch", 512, "Points per step")
    epochs: Optional[int] = TrainingConfig.default("epochs", 100, (
        "Diffusion losses are noisy (a fresh time and noise per point): a fixed budget is the usual protocol"))
    max_epochs: int = TrainingConfig.default("max_epochs", 500)
    patience: int = TrainingConfig.default("patience", 20, "The score is the held-out loss at fixed times and noise")
    min_rel_improvement: float = Field(1e-3, ge=0, description="early stopping: relative drop of the held-out "
                                                               "loss that counts as an improvement")
    compile: Optional[bool] = TrainingConfig.default("compile", False, (
        "Off by default: the tiny MLP's step is dominated by launch overhead either way"))

    data_kinds: ClassVar[frozenset] = frozenset({"vector"})

    def capabilities(self, source) -> frozenset:
        """Samples points (no exact density)."""
        return frozenset({"items"})

    @model_validator(mode="after")
    def _consistent(self):
        """The sampler belongs to the objective; the time embedding is even."""
        ok = {"ddpm": ("auto", "ancestral", "ddim"), "flow": ("auto", "euler", "heun")}[self.objective]
        if self.sampler not in ok:
            raise ValueError(f"sampler {self.sampler} is not a {self.objective} sampler; choose from {', '.join(ok)}")
        if self.time_embed % 2:
            raise ValueError(f"time_embed must be even (got {self.time_embed})")
        return self

    def build(self, source, chains: int):
        """The family for a built vector source (imports torch)."""
        from .diffusion import DiffusionFamily
        return DiffusionFamily(self, source.dim, chains)
