"""Config of the ``hf`` family, free of torch and transformers so validating an experiment imports neither."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..nn.config import TrainingConfig


class LoRAConfig(BaseModel):
    """Low-rank adapters (Hu et al. 2022) through `peft`: only the adapters train and are stored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    r: int = Field(8, ge=1, description="rank of each adapter")
    alpha: float = Field(16.0, gt=0, description="scale: the update is alpha / r times the adapter's product")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: Optional[list[str]] = Field(None, description=(
        "names of the modules that get adapters (e.g. [q_proj, v_proj]); None = peft's choice for the "
        "model type"))


class HFConfig(TrainingConfig):
    """Any causal language model of Hugging Face `transformers`, fine-tuned or trained each generation.

    Pretrained (`model`: a local directory or a hub id, with the source's `tokenizer` set to the same
    name) or built from a config (`config: {model_type: gpt2, n_layer: 2, ...}`, its vocabulary that
    of the source's tokenizer plus a start token). Each block is read after a start token (the
    tokenizer's BOS, else its EOS) so its first token is scored too. Generation goes through the
    model's own `generate` (KV cache, beams, repetition penalty); training through the project's
    trainer (nn/trainer.py): AdamW, bf16 or fp16 autocast, gradient accumulation, early stopping on
    held-out blocks. Shumailov et al. (Nature 2024): `model: facebook/opt-125m`, `init: base`,
    `mode: prompted`, `decode: beam`, `beams: 5`.
    """

    kind: Literal["hf"] = Field("hf", description=(
        "the family: hf, a causal language model of Hugging Face transformers (pretrained or from a config)"))
    # small and fast for the contract tests (model_collapse.testing)
    example: ClassVar[dict] = {"config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
                               "epochs": 1, "batch": 16, "compile": False, "threads": 1}
    # -- the model -------------------------------------------------------------------------------
    model: Optional[str] = Field(None, description=(
        "a pretrained model: a local directory (save_pretrained's) or a hub id such as facebook/opt-125m, "
        "downloaded only where the machine can reach the hub"))
    revision: Optional[str] = Field(None, description="hub only: a branch, tag or commit of the model")
    config: Optional[dict[str, Any]] = Field(None, description=(
        "a model built from scratch from a transformers config: model_type plus its fields, e.g. {model_type: "
        "gpt2, n_layer: 2, n_head: 4, n_embd: 128}; the vocabulary and the context (one block and its start "
        "token) are set from the source"))
    lora: Optional[LoRAConfig] = Field(None, description=(
        "low-rank adapters through peft (pip install peft) instead of full fine-tuning: {r: 8, alpha: 16}; "
        "None trains every weight"))
    # -- training (TrainingConfig's fields, run by nn/trainer.py, plus these) -----------------------
    lr: float = TrainingConfig.default("lr", 5e-5, "AdamW; 5e-5 is transformers' Trainer default for fine-tuning")
    batch: int = TrainingConfig.default("batch", 8, "Blocks per optimisation step (after `accumulate` micro-batches)")
    accumulate: int = Field(1, ge=1, description=(
        "gradient accumulation: each step sums the gradients of this many micro-batches of batch / accumulate "
        "blocks (the memory of one micro-batch, the update of the whole batch)"))
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay (transformers' default 0)")
    patience: int = TrainingConfig.default("patience", 2, "The score is the held-out loss")
    min_rel_improvement: float = Field(2e-3, ge=0, description="early stopping: relative drop of the held-out "
                                                              "loss that counts as an improvement")
    val_fraction: float = TrainingConfig.default("val_fraction", 0.05, (
        "Blocks; also the `loss` column (0, with `epochs`: the last epoch's training loss)"))
    finetune_lr: Optional[float] = Field(None, gt=0, description=(
        "learning rate of the fits of generations >= 1 when they start from trained weights (init base with "
        "a pretrained model, warm or gen0); None = lr"))
    finetune_epochs: Optional[int] = Field(None, ge=1, description=(
        "fixed epochs for the fits of generations >= 1, overriding `epochs`: Shumailov et al. fine-tune for 5 "
        "(or 10 with 10% real data); None = the rule of `epochs`"))
    init: Literal["base", "fresh", "warm", "gen0"] = Field("base", description=(
        "where each generation's training starts: base = the initial weights (the pretrained model, or the "
        "seeded random weights of a config; Shumailov et al.: every generation fine-tunes OPT-125m), fresh = "
        "new random weights of the same architecture (Gerstgrasser et al. 2024), warm = the previous "
        "generation's model, gen0 = the model fitted on real text at generation 0"))
    # -- generation ------------------------------------------------------------------------------
    mode: Literal["unconditional", "prompted"] = Field("unconditional", description=(
        "prompted: each sample keeps the first (or last) `prompt` tokens of a training block and the model "
        "writes the rest of the block (Shumailov et al. 2024: 64 tokens continued by 64)"))
    prompt: int = Field(32, ge=1, description="prompted: tokens of a training block kept before the continuation")
    prompt_from: Literal["start", "end"] = Field("start", description=(
        "prompted: the prompt is the first `prompt` tokens of a training block, or its last ones (each block "
        "continues where a training block ended: continuations of continuations)"))
    decode: Literal["sample", "greedy", "beam"] = Field("sample", description=(
        "sample: draw each token (temperature, top_k, top_p); greedy: the most likely token; beam: beam search "
        "of width `beams` (Shumailov et al.: 5)"))
    temperature: float = Field(1.0, gt=0, description="sample: logits / temperature")
    top_k: Optional[int] = Field(None, ge=1, description="sample: keep the k most likely tokens (None = all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample: the nucleus of mass p (1 = all)")
    beams: int = Field(5, ge=1, description="beam: beams kept per block")
    repetition_penalty: float = Field(1.0, gt=0, description=(
        "transformers' repetition penalty on tokens already in the sequence (Keskar et al. 2019); 1 = off"))
    gen_batch: int = Field(64, ge=1, description="blocks generated at once (beams multiply the rows)")
    # -- the shared training settings' defaults that differ here (nn/config.py: TrainingConfig) ------
    precision: Literal["fp32", "bf16", "fp16"] = TrainingConfig.default("precision", "fp32", (
        "On a GPU, bf16 (or fp16) is the usual choice"))
    compile: Optional[bool] = TrainingConfig.default("compile", False, (
        "Off by default: transformers' models graph-break under fullgraph compilation (the step then runs "
        "eagerly after one warning)"))

    data_kinds: ClassVar[frozenset] = frozenset({"text"})

    def capabilities(self, source) -> frozenset:
        """Samples blocks, exact block log-probabilities, per-token scores."""
        return frozenset({"items", "log_prob", "score_text"})

    @model_validator(mode="after")
    def _one_model(self):
        """Exactly one of a pretrained model and a config; accumulation divides the batch."""
        if (self.model is None) == (self.config is None):
            raise ValueError("give either model (a pretrained model's directory or hub id) or config (a model "
                             "built from scratch, e.g. {model_type: gpt2, n_layer: 2})")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("config needs a model_type (e.g. gpt2, opt, llama)")
        if self.batch % self.accumulate:
            raise ValueError(f"batch ({self.batch}) must be a multiple of accumulate ({self.accumulate})")
        return self

    def check(self, exp) -> list[tuple[str, str]]:
        """A pretrained model reads its own tokens; the prompt must fit in a block."""
        errs = []
        tok = getattr(exp.source, "tokenizer", None)
        if self.model is not None and tok in ("char", "bpe"):
            errs.append(("source.tokenizer", f"the pretrained model {self.model} reads its own tokens: set "
                                             f"source.tokenizer: {self.model} (its tokenizer's name or directory)"))
        elif self.model is not None and tok is None:
            errs.append(("source.kind", f"the pretrained model {self.model} reads its own tokens: use a source of "
                                        f"real text (kjv, text, hf-dataset) with source.tokenizer: {self.model}"))
        block = getattr(exp.source, "block", None)
        if block is not None and self.mode == "prompted" and self.prompt >= block:
            errs.append(("model.prompt", f"the prompt ({self.prompt} tokens) leaves nothing to write in a block "
                                         f"of {block}; make it shorter than source.block"))
        return errs

    def build(self, source, chains: int):
        """The family for a built text source (imports torch and transformers)."""
        from .hf import HFFamily
        return HFFamily(self, source, chains)
