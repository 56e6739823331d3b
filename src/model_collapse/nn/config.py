"""Configs of the torch models, kept free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..schema import Component


class ClassifierConfig(Component):
    """Config of an image classifier (MLP 784-256-256-10 by default, as in W2)."""

    kind: Literal["mlp", "cnn"] = "mlp"
    # Dense hidden widths: the whole MLP, or the dense head after a CNN's conv stack.
    hidden: list[int] = [256, 256]
    # CNN only: output channels of each 3x3 conv + ReLU + 2x2 max-pool block.
    channels: list[int] = [32, 64]
    lr: float = Field(1e-3, gt=0)
    # constant (W2), or cosine decay to 0 over max_epochs: a decayed rate gains the last
    # fraction of a percent of accuracy that a short, fixed training budget needs.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    batch: int = Field(128, ge=1)
    max_epochs: int = Field(30, ge=1)
    # Raise max_epochs until training takes at least this many steps, so a small data set
    # (8x8 digits: 12 batches an epoch) gets as many updates as MNIST (469 an epoch).
    min_steps: int = Field(0, ge=0)
    # Stop after this many epochs without a better held-out accuracy ...
    patience: int = Field(3, ge=1)
    # ... or as soon as held-out accuracy reaches this ("classifiers that stop when accurate").
    target_accuracy: Optional[float] = Field(None, gt=0, le=1)
    # Share of the labelled items held out for early stopping (0: train on all, run max_epochs).
    val_fraction: float = Field(0.1, ge=0, lt=1)
    # fresh: re-initialise on every fit (the original protocol); warm: continue from the last fit.
    init: Literal["fresh", "warm"] = "fresh"
    # torch intra-op threads while fitting/predicting; 0 leaves torch's setting alone.
    threads: int = Field(0, ge=0)
    # Compile the train step (forward, backward, Adam) into one graph (nn/trainer.py); eager with
    # fused Adam, after one warning, when compiling fails. None: compile the MLP (~1.15x faster
    # steps), not the CNN (inductor's max-pool made its step ~1.2x slower than eager oneDNN).
    compile: Optional[bool] = None
    # Where to train and predict: auto takes CUDA when torch sees a GPU, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16: forward and backward under bfloat16 autocast (weights and Adam stay float32).
    precision: Literal["fp32", "bf16"] = "fp32"
