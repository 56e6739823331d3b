"""Configs of the torch models, kept free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo

from ..schema import Component


class TrainingConfig(Component):
    """The training settings every neural family shares, declared once (nn/trainer.py runs them).

    A family's config subclasses this and keeps the fields it inherits; where its default differs it
    restates only the default and why, through `TrainingConfig.default` (constraints and description
    stay the shared ones).
    """

    # A placeholder the subclasses narrow to their Literal: declared first so that `kind` keeps the
    # first place in a dumped config (pydantic keeps an inherited field where the base declared it).
    kind: str = Field("", description="the component's kind")
    lr: float = Field(1e-3, gt=0, description="learning rate of Adam (AdamW for language models)")
    batch: int = Field(128, ge=1, description="items per optimisation step")
    epochs: Optional[int] = Field(None, ge=1, description=(
        "fixed-epoch protocol: exactly this many epochs per fit, no early stopping; None = stop early "
        "on the held-out score"))
    max_epochs: int = Field(50, ge=1, description="early stopping: at most this many epochs per fit")
    min_epochs: int = Field(1, ge=1, description="early stopping: at least this many epochs per fit")
    patience: int = Field(3, ge=1, description=(
        "early stopping: stop after this many epochs without an improvement of the held-out score"))
    val_fraction: float = Field(0.1, ge=0, lt=1, description=(
        "share of each fit's items held out for early stopping and the reported held-out score"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "where to train and sample: auto takes CUDA when torch sees a GPU, else the CPU"))
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description=(
        "bf16: the forward and backward under bfloat16 autocast (weights and the optimizer stay float32); "
        "fp16: float16 autocast with a dynamic loss scale (CUDA only, trained eagerly)"))
    compile: Optional[bool] = Field(True, description=(
        "compile the whole train step (forward, backward, optimizer) into one graph (nn/trainer.py); eager "
        "autograd with a fused optimizer, after one warning, when compiling fails; None: the family's "
        "measured choice"))
    threads: int = Field(0, ge=0, description="torch threads while fitting and sampling; 0 = torch's default")

    # Early stopping on a held-out score needs held-out items (a family reporting a held-out loss
    # always does; the classifier, which reports accuracy only when it has them, does not).
    heldout_required: ClassVar[bool] = True

    @staticmethod
    def default(name: str, value, why: str = "") -> FieldInfo:
        """The shared field `name` with this family's default; `why` is appended to its description."""
        base = TrainingConfig.model_fields[name]
        return FieldInfo.merge_field_infos(base, default=value,
                                           description=f"{base.description}. {why}" if why else base.description)

    @model_validator(mode="after")
    def _need_heldout(self):
        """Early stopping needs held-out data."""
        if self.heldout_required and self.epochs is None and self.val_fraction == 0:
            raise ValueError("early stopping needs held-out data: set val_fraction > 0, or set epochs "
                             "for a fixed number of epochs")
        return self


class ClassifierConfig(TrainingConfig):
    """Config of an image classifier (MLP 784-256-256-10 by default, as in W2)."""

    kind: Literal["mlp", "cnn"] = Field("mlp", description=(
        "the architecture: mlp (dense layers) or cnn (conv blocks, then a dense head)"))
    hidden: list[int] = Field([256, 256], description=(
        "Dense hidden widths: the whole MLP, or the dense head after a CNN's conv stack."))
    channels: list[int] = Field([32, 64], description=(
        "CNN only: output channels of each 3x3 conv + ReLU + 2x2 max-pool block."))
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "constant (W2), or cosine decay to 0 over max_epochs: a decayed rate gains the last fraction of a "
        "percent of accuracy that a short, fixed training budget needs."))
    max_epochs: int = TrainingConfig.default("max_epochs", 30, "Early stopping on held-out accuracy ends sooner")
    min_steps: int = Field(0, ge=0, description=(
        "Raise max_epochs until training takes at least this many steps, so a small data set (8x8 digits: 12 "
        "batches an epoch) gets as many updates as MNIST (469 an epoch)."))
    patience: int = TrainingConfig.default("patience", 3, "The score is held-out accuracy (ties go to the lower "
                                                          "loss) ...")
    target_accuracy: Optional[float] = Field(None, gt=0, le=1, description=(
        "... or as soon as held-out accuracy reaches this (\"classifiers that stop when accurate\")."))
    val_fraction: float = TrainingConfig.default("val_fraction", 0.1, "0: train on all, for `epochs` or else "
                                                                      "max_epochs")
    init: Literal["fresh", "warm"] = Field("fresh", description=(
        "fresh: re-initialise on every fit (the original protocol); warm: continue from the last fit."))
    compile: Optional[bool] = TrainingConfig.default("compile", None, (
        "None: compile the MLP (~1.15x faster steps), not the CNN (inductor's max-pool made its step ~1.2x "
        "slower than eager oneDNN)"))

    heldout_required: ClassVar[bool] = False
