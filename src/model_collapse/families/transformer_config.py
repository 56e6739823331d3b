"""Config of the ``transformer`` family, free of torch so validating an experiment never imports it."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ..nn.config import TrainingConfig


class TransformerConfig(TrainingConfig):
    """A GPT-style decoder (nn/gpt.py) retrained each generation on the text it and its ancestors wrote.

    Defaults: 2 layers, 4 heads, width 128, a context of one block; AdamW (lr 1e-3, batch 32, as W4)
    until the held-out loss stops improving; unconditional samples at temperature 1.
    """

    kind: Literal["transformer"] = Field("transformer", description=(
        "the family: transformer, a GPT-style decoder language model"))
    # small and fast for the contract tests (model_collapse.testing)
    example: ClassVar[dict] = {"layers": 1, "heads": 2, "width": 16, "epochs": 1, "batch": 16, "compile": False,
                               "threads": 1}
    # -- the model (Radford et al. 2019, as nanoGPT) ----------------------------------------------
    layers: int = Field(2, ge=1, description="transformer blocks (W4 uses 4)")
    heads: int = Field(4, ge=1, description="attention heads; must divide width")
    width: int = Field(128, ge=8, description="embedding width W (the MLP is 4W wide)")
    context: Optional[int] = Field(None, ge=1, description="positions the model sees (<= source.block); "
                                                           "None = one whole block. A shorter context trains on "
                                                           "windows of it and samples window by window")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on embeddings, attention output and MLP")
    # -- training (TrainingConfig's fields, run by nn/trainer.py, plus the fine-tuning ones) ---------
    lr: float = TrainingConfig.default("lr", 1e-3, "AdamW; W4: 1e-3")
    finetune_lr: Optional[float] = Field(None, gt=0, description=(
        "learning rate of a fit that starts from trained weights (init warm or gen0, generation >= 1); "
        "None = lr. Shumailov et al. fine-tune at a small fraction of the pre-training rate"))
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay (torch's default)")
    batch: int = TrainingConfig.default("batch", 32, "Blocks; W4: 32")
    finetune_epochs: Optional[int] = Field(None, ge=1, description=(
        "fixed epochs for a fit that starts from trained weights (init warm or gen0, generation >= 1), "
        "overriding `epochs`: Shumailov et al. fine-tune for 5 (or 10); None = the rule of `epochs`"))
    patience: int = TrainingConfig.default("patience", 2, "The score is the held-out loss")
    min_rel_improvement: float = Field(2e-3, ge=0, description="early stopping: relative drop of the held-out "
                                                              "loss that counts as an improvement")
    val_fraction: float = TrainingConfig.default("val_fraction", 0.05, "Blocks; also the `loss` column")
    init: Literal["fresh", "warm", "gen0"] = Field("fresh", description=(
        "where each generation's training starts: fresh = new random weights (Gerstgrasser et al. 2024), "
        "warm = the previous generation's model, gen0 = the generation-0 model, fitted on real text "
        "(Shumailov et al. 2024: every generation fine-tunes the same base model)"))
    # -- generation ------------------------------------------------------------------------------
    mode: Literal["unconditional", "prompted"] = Field("unconditional", description=(
        "prompted: each sample keeps the first `prompt` tokens of one of the blocks the model was trained "
        "on and the model writes the rest of the block (Shumailov et al. 2024: 64 tokens continued by 64)"))
    prompt: int = Field(32, ge=1, description="prompted: tokens of a training block kept before the continuation")
    prompt_from: Literal["start", "end"] = Field("start", description=(
        "prompted: the prompt is the first `prompt` tokens of a training block (start: real text stays in every "
        "block), or its last ones (end: each block continues where a training block ended, so after two "
        "generations every token is generated, as Shumailov et al.'s continuations of continuations)"))
    decode: Literal["sample", "greedy", "beam"] = Field("sample", description=(
        "sample: draw each token (temperature, top_k, top_p); greedy: the most likely token; "
        "beam: beam search of width `beams` (Shumailov et al.: 5)"))
    temperature: float = Field(1.0, gt=0, description="sample: logits / temperature (Gerstgrasser et al.: 1.0 "
                                                      "and 0.3)")
    top_k: Optional[int] = Field(None, ge=1, description="sample: keep the k most likely tokens (None = all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample: keep the smallest set of most likely tokens whose "
                                                      "mass reaches p (1 = all)")
    beams: int = Field(5, ge=1, description="beam: beams kept per block")
    repetition_penalty: float = Field(1.0, gt=0, description=(
        "HF's repetition penalty: scores of tokens already in the block (prompt included) are divided by it "
        "when positive, multiplied when negative; 1 = off"))
    kv_cache: bool = Field(True, description="keep keys and values of earlier positions while decoding "
                                             "(False recomputes every step: for comparison only)")
    # -- the shared training settings' defaults that differ here (nn/config.py: TrainingConfig) --------
    precision: Literal["fp32", "bf16", "fp16"] = TrainingConfig.default("precision", "bf16", (
        "Decoding and every reported score stay float32. On this 2-core CPU (AMX) bf16 trains W4 ~1.55x faster "
        "than fp32 eager, ~1.9x compiled, to the same held-out loss (benchmarks/bench_lm.py)"))
    compile: Optional[bool] = TrainingConfig.default("compile", True, (
        "~1.25x the eager bf16 step for W4; a one-off ~25 s per process and architecture, ~7 s from inductor's "
        "cache"))

    data_kinds: ClassVar[frozenset] = frozenset({"text"})

    def capabilities(self, source) -> frozenset:
        """Samples blocks, exact block log-probabilities, per-token scores."""
        return frozenset({"items", "log_prob", "score_text"})

    @model_validator(mode="after")
    def _consistent(self):
        """Heads divide the width."""
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        return self

    def check(self, exp) -> list[tuple[str, str]]:
        """The context and the prompt must fit in a block of the source."""
        block = getattr(exp.source, "block", None)
        errs = []
        if block is not None and self.context is not None and self.context > block:
            errs.append(("model.context", f"a context of {self.context} tokens is longer than a block "
                                          f"(source.block = {block}); lower model.context or raise source.block"))
        if block is not None and self.mode == "prompted" and self.prompt >= block:
            errs.append(("model.prompt", f"the prompt ({self.prompt} tokens) leaves nothing to write in a block "
                                         f"of {block}; make it shorter than source.block"))
        return errs

    def build(self, source, chains: int):
        """The family for a built text source (imports torch)."""
        from .transformer import TransformerFamily
        return TransformerFamily(self, source, chains)
