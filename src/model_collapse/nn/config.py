"""Configs of the torch models, kept free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..schema import Component


class ClassifierConfig(Component):
    """Config of an image classifier (MLP 784-256-256-10 by default, as in W2)."""

    kind: Literal["mlp", "cnn"] = "mlp"
    hidden: list[int] = Field([256, 256], description=(
        "Dense hidden widths: the whole MLP, or the dense head after a CNN's conv stack."))
    channels: list[int] = Field([32, 64], description=(
        "CNN only: output channels of each 3x3 conv + ReLU + 2x2 max-pool block."))
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "constant (W2), or cosine decay to 0 over max_epochs: a decayed rate gains the last fraction of a "
        "percent of accuracy that a short, fixed training budget needs."))
    batch: int = Field(128, ge=1, description="images per step")
    max_epochs: int = Field(30, ge=1, description="epochs at most (early stopping on held-out accuracy ends sooner)")
    min_steps: int = Field(0, ge=0, description=(
        "Raise max_epochs until training takes at least this many steps, so a small data set (8x8 digits: 12 "
        "batches an epoch) gets as many updates as MNIST (469 an epoch)."))
    patience: int = Field(3, ge=1, description="Stop after this many epochs without a better held-out accuracy ...")
    target_accuracy: Optional[float] = Field(None, gt=0, le=1, description=(
        "... or as soon as held-out accuracy reaches this (\"classifiers that stop when accurate\")."))
    val_fraction: float = Field(0.1, ge=0, lt=1, description=(
        "Share of the labelled items held out for early stopping (0: train on all, run max_epochs)."))
    init: Literal["fresh", "warm"] = Field("fresh", description=(
        "fresh: re-initialise on every fit (the original protocol); warm: continue from the last fit."))
    threads: int = Field(0, ge=0, description=(
        "torch intra-op threads while fitting/predicting; 0 leaves torch's setting alone."))
    compile: Optional[bool] = Field(None, description=(
        "Compile the train step (forward, backward, Adam) into one graph (nn/trainer.py); eager with fused "
        "Adam, after one warning, when compiling fails. None: compile the MLP (~1.15x faster steps), not the "
        "CNN (inductor's max-pool made its step ~1.2x slower than eager oneDNN)."))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "Where to train and predict: auto takes CUDA when torch sees a GPU, else the CPU."))
    precision: Literal["fp32", "bf16"] = Field("fp32", description=(
        "bf16: forward and backward under bfloat16 autocast (weights and Adam stay float32)."))
