"""Configs of the ``vae`` family, free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from ..nn.config import ClassifierConfig, TrainingConfig


class VAEConfig(TrainingConfig):
    """Config of the ``vae`` family (defaults: W2's 784-128-128-20 MLP VAE with a Gaussian decoder)."""

    kind: Literal["vae"] = Field("vae", description="the family: vae, a variational autoencoder of images")
    arch: Literal["mlp", "conv"] = Field("mlp", description=(
        "mlp: dense encoder and decoder (W2); conv: two stride-2 convolutions each way"))
    hidden: list[int] = Field(default_factory=lambda: [128, 128], min_length=1, description=(
        "Dense widths of the encoder; the decoder mirrors them. hidden=[256, 32, 24], latent=16 gives the "
        "784-256-32-24-16 preset."))
    latent: int = Field(20, ge=1, description="size of the latent code z")
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, description=(
        "conv only: channels of the two 3x3 stride-2 encoder convs (mirrored by 4x4 transposed convs)."))
    decoder: Literal["gaussian", "bernoulli"] = Field("gaussian", description=(
        "gaussian: sum of squares on data normalised with MNIST's mean/std (W2); bernoulli: BCE on [0, 1]."))
    batch: int = TrainingConfig.default("batch", 128, (
        "128 as W2: fastest to a given held-out loss here. 512 runs ~1.4x more images/s but needs far more "
        "epochs (benchmarks/bench_vae.py: loss 160 after 25 epochs at 128, 39 at 256, not within 45 at 512 "
        "with lr 2e-3)"))
    epochs: Optional[int] = TrainingConfig.default("epochs", None, "W2's original used 200")
    max_epochs: int = TrainingConfig.default("max_epochs", 200)
    min_epochs: int = TrainingConfig.default("min_epochs", 5)
    val_fraction: float = TrainingConfig.default("val_fraction", 0.1, (
        "The score is the ELBO, also reported by params(). 0 (only with `epochs`): train on every item; "
        "params() then reports the training-set loss"))
    patience: int = TrainingConfig.default("patience", 5, (
        "An improvement is a relative drop of min_rel_improvement against the last epoch that did improve by "
        "that much, so slow steady progress still counts. Measured on MNIST (W2 net): from scratch these "
        "defaults stop at epoch 69 with held-out loss 149.8 (150 epochs reach 144.5); a warm second "
        "generation, on the VAE's own samples, stops after 10 epochs"))
    min_rel_improvement: float = Field(3e-3, ge=0, description=(
        "early stopping: the relative held-out improvement that counts as progress (see patience)"))
    init: Literal["warm", "fresh"] = Field("warm", description=(
        "warm: keep training the previous generation's VAE (the original experiment); fresh: re-initialise."))
    temperature: float = Field(1.0, gt=0, description=(
        "prior scale of the samples: z ~ N(0, temperature^2 I), then decoded (Glow's temperature, Kingma & "
        "Dhariwal 2018). Below 1 trades diversity for quality (draws crowd the prior's mode): the sampling "
        "bias of Alemohammad et al. (2023), whose lambda scales the covariance, so lambda = temperature^2 "
        "(as the gaussian family's temperature). 1 samples the model as fitted."))
    truncation: Optional[float] = Field(None, gt=0, description=(
        "truncate the standard-normal draws before scaling: every coordinate with |z_i| > truncation is "
        "drawn again until none is (the truncation trick, Brock et al. 2019); None keeps the full prior"))
    compile: Optional[bool] = TrainingConfig.default("compile", True, (
        "~1.5x faster epochs than the eager path (benchmarks/bench_vae.py) after a one-off compile per process "
        "and architecture (a few s, ~15-30 s with a cold inductor cache)"))
    precision: Literal["fp32", "bf16", "fp16"] = TrainingConfig.default("precision", "fp32", (
        "Measured on W2 (bench_vae.py --bf16, 2-core CPU with AMX): the same held-out loss epoch by epoch; "
        "~10% slower epochs at batch 128, ~1.4x faster at 512, ~1.9x at 2048. Hence fp32"))


class LabelledVAEConfig(VAEConfig):
    """VAE settings plus the per-generation classifier that labels its samples."""

    labels: Literal["own", "reference", "none"] = Field("own", description=(
        "own: each generation's classifier labels the next generation's samples (the original MNIST "
        "protocol); reference: the reference CNN labels them; none: samples stay unlabelled"))
    classifier: ClassifierConfig = Field(default_factory=lambda: ClassifierConfig(target_accuracy=0.98), description=(
        "the per-generation classifier trained on each generation's labelled data (labels: own)"))

    data_kinds: ClassVar[frozenset] = frozenset({"image"})
    # small and fast for the contract tests (model_collapse.testing)
    example: ClassVar[dict] = {"hidden": [32], "latent": 4, "epochs": 2, "val_fraction": 0.1, "batch": 64,
                               "compile": False, "classifier": {"kind": "mlp", "hidden": [32], "max_epochs": 2}}

    def capabilities(self, source) -> frozenset:
        """Image items, latent codes both ways; a classifier of its own when it labels its samples."""
        return frozenset({"items", "encode", "decode"} | ({"classify"} if self.labels == "own" else set()))

    def build(self, source, chains: int):
        """The (VAE, classifier) family for a built image source (imports torch)."""
        from .labelled import LabelledVAE
        return LabelledVAE(self, source, chains)
