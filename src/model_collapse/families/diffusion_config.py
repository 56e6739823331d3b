"""Config of the ``diffusion`` family, free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ..nn.config import TrainingConfig


class DiffusionConfig(TrainingConfig):
    """A denoising diffusion model (DDPM, Ho et al. 2020) or a conditional flow-matching model (Lipman et al.
    2023, the optimal-transport path of Tong et al. 2023) of vectors or images, retrained each generation.

    The denoiser of vectors is an MLP over the point and a sinusoidal embedding of the time, that of images
    a small U-Net (nn/unet.py), optionally class-conditional with classifier-free guidance (Ho & Salimans
    2022); the S chains are S such networks batched into one module, fitted by the shared trainer. Vectors
    are standardised per chain with generation 0's real mean and sd, pixels mapped from 0..255 to [-1, 1].
    """

    kind: Literal["diffusion"] = Field("diffusion", description=(
        "the family: diffusion, a DDPM or conditional flow-matching model of vectors or images"))
    example: ClassVar[dict] = {"hidden": [32, 32], "channels": [8, 16], "groups": 4, "epochs": 2, "batch": 64,
                               "compile": False, "threads": 1, "steps": 10, "timesteps": 50}
    objective: Literal["ddpm", "flow"] = Field("flow", description=(
        "ddpm: predict the noise of x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e (Ho et al. 2020); flow: regress the "
        "velocity x - e of the straight path x_t = t x + (1 - t) e (conditional flow matching, Lipman et al. "
        "2023; the optimal-transport path, Tong et al. 2023)"))
    denoiser: Literal["auto", "mlp", "unet"] = Field("auto", description=(
        "the network: an MLP of the point (vectors, or flattened images) or a U-Net (images); auto = mlp for "
        "vectors, unet for images"))
    hidden: list[int] = Field(default_factory=lambda: [128, 128, 128], min_length=1, description=(
        "mlp: widths of the hidden layers (SiLU)"))
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, description=(
        "unet: channels of its residual block at each resolution, one halving between resolutions, so height "
        "and width must be divisible by 2^(len - 1): [32, 64] takes 8x8 and 28x28 images, [32, 64, 64] 28x28"))
    groups: int = Field(8, ge=1, description="unet: GroupNorm groups per block (gcd with the channels)")
    conditional: bool = Field(False, description=(
        "unet: class-conditional on the image's label (a learned label embedding added to the time's); samples "
        "draw their classes from the last training set's label frequencies and keep them as their labels"))
    guidance: float = Field(0.0, ge=0, description=(
        "conditional: classifier-free guidance weight w (Ho & Salimans 2022): the network's output is "
        "(1 + w) f(x, t, y) - w f(x, t, no label); 0 is the plain conditional model"))
    label_dropout: float = Field(0.1, ge=0, lt=1, description=(
        "conditional: share of training items whose label is replaced by 'no label', so the one network also "
        "learns the unconditional model guidance needs (Ho & Salimans: 0.1-0.2)"))
    time_embed: int = Field(32, ge=2, description="size of the sinusoidal time embedding (even)")
    timesteps: int = Field(100, ge=2, description="ddpm: T, the noise levels of training and ancestral sampling")
    schedule: Literal["linear", "cosine"] = Field("cosine", description=(
        "ddpm: linear betas 1e-4 .. 0.02 scaled to T (Ho et al.), or the cosine abar of Nichol & Dhariwal 2021"))
    sampler: Literal["auto", "ancestral", "ddim", "euler", "heun"] = Field("auto", description=(
        "ddpm: ancestral (all T steps) or ddim (`steps` evenly spaced, eta 0, Song et al. 2021); flow: euler or "
        "heun over `steps`; auto = ancestral for ddpm, euler for flow"))
    steps: int = Field(50, ge=1, description="ddim, euler, heun: integration steps of a sample")
    likelihood_steps: int = Field(50, ge=1, description=(
        "vectors: steps of the probability-flow ODE by which log_prob (and so nll, l2, the likelihood filter and the "
        "density plot) carries a point back to the noise, the exact log-determinant of each step summed (flow: "
        "Euler steps of the learned velocity; ddpm: DDIM's ODE through that many of the T levels); each step "
        "costs one forward and d backward passes of the denoiser"))
    init: Literal["fresh", "warm", "gen0"] = Field("fresh", description=(
        "where each generation's training starts: fresh weights, the previous generation's, or generation 0's"))
    sample_batch: Optional[int] = Field(None, ge=1, description=(
        "items denoised at once per chain (bounds memory); None = 8192 points of a vector, or images of 65,536 "
        "pixels in all (1,024 8x8 digits, 83 MNIST digits): the U-Net's maps then stay in cache, measured 2.3x "
        "faster per 28x28 image than 8192 at once (2 cores)"))
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

    data_kinds: ClassVar[frozenset] = frozenset({"vector", "image"})

    def capabilities(self, source) -> frozenset:
        """Samples points or images; vectors also have a density (the probability-flow ODE's), images decode fixed
        noise (the sample grid)."""
        return frozenset({"items"} | ({"decode"} if source.data_kind == "image" else {"log_prob"}))

    def check(self, exp) -> list[tuple[str, str]]:
        """A U-Net and labels belong to images; a conditional model needs a labelled source."""
        decl, errs = exp.source.declare(), []
        if decl.data_kind != "image" and self.denoiser == "unet":
            errs.append(("model.denoiser", f"a U-Net denoises images, the source gives {decl.data_kind}s; use "
                                           f"denoiser: mlp (or auto)"))
        if self.conditional and (decl.data_kind != "image" or "labels" not in decl.caps):
            errs.append(("model.conditional", f"a class-conditional model needs labelled images, and source "
                                              f"{decl.name} gives none; set conditional: false"))
        elif self.conditional and self.denoiser == "mlp":
            errs.append(("model.conditional", "only the U-Net takes a label (the MLP would ignore it and label its "
                                              "samples at random); use denoiser: unet (or auto)"))
        if self.guidance > 0 and not (self.conditional and self.label_dropout > 0):
            errs.append(("model.guidance", "classifier-free guidance needs a conditional model trained with "
                                           "label_dropout > 0 (its unconditional half); set conditional: true, "
                                           "or guidance: 0"))
        return errs

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
        """The family for a built vector or image source (imports torch)."""
        from .diffusion import DiffusionFamily
        return DiffusionFamily(self, source, chains)
