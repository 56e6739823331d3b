"""A GPT-style decoder, written as nanoGPT's model.py (Karpathy), with a KV cache for generation.

Radford et al. (2019), "Language models are unsupervised multitask learners" (GPT-2): token
and position embeddings, `layers` pre-LayerNorm blocks of causal self-attention and a 4x MLP,
a final LayerNorm, and an output layer tied to the token embedding (Press & Wolf 2017).
Attention is ``F.scaled_dot_product_attention`` (a fused kernel; flash attention where the
device has it). Shapes: B sequences, L positions, W = width, H heads of D = W / H.

The input vocabulary has one more token than the output: BOS (id ``vocab``) starts every
block, so the first token of a block is predicted too, and is never predicted itself.

One module is one chain; the family keeps a list of S modules (families/transformer.py).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

Cache = list  # per layer [k, v], each (B, H, context, D), filled from position 0


class _CausalAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D) + causal mask) v with bf16 matmuls and a float32 softmax, and its backward.

    Used only inside a compiled bf16 step on a CPU, where inductor fuses the softmax and its
    backward with their neighbours and the four small matmuls run on AMX: ~2x faster forward +
    backward than the fused kernel in float32 at W4's shapes, whose bf16 backward is slower still.
    """

    @staticmethod
    def forward(ctx, q, k, v):
        """q, k, v (B, H, L, D) bf16 -> (B, H, L, D)."""
        n = q.shape[-2]
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)                          # (B, H, L, L)
        keep = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        p = torch.where(keep, scores, float("-inf")).softmax(-1, dtype=torch.float32).to(q.dtype)
        ctx.save_for_backward(q, k, v, p)
        return p @ v

    @staticmethod
    def backward(ctx, dout):
        """Gradients of q, k, v: dS = P * (dP - rowsum(dP * P)), dP = dO V^T (softmax's Jacobian)."""
        q, k, v, p = ctx.saved_tensors
        dp = (dout @ v.transpose(-1, -2)).float()
        pf = p.float()
        ds = (pf * (dp - (dp * pf).sum(-1, keepdim=True))).to(q.dtype)
        scale = q.shape[-1] ** -0.5
        return (ds @ k) * scale, ds.transpose(-1, -2) @ (q * scale), p.transpose(-1, -2) @ dout


def attention(q, k, v, mask: Optional[torch.Tensor], causal: bool, dropout: float) -> torch.Tensor:
    """Scaled dot-product attention of q (B, H, Lq, D) over k, v (B, H, Lk, D) -> (B, H, Lq, D)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout)
    if (q.dtype == torch.bfloat16 and causal and mask is None and dropout == 0.0
            and torch.compiler.is_compiling() and torch.is_grad_enabled()):
        return _CausalAttention.apply(q, k, v)
    # Otherwise attention stays float32 on a CPU, even under bf16 autocast: the fused kernel's bf16
    # backward is ~4x slower than its float32 one here (benchmarks/bench_lm.py).
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal,
                                              dropout_p=dropout)


class _Lookup(torch.autograd.Function):
    """Rows of an embedding table, whose gradient is a one-hot matmul: the same numbers, but a compiled step
    (inductor) would otherwise scatter-add it with atomic adds across threads, in an order that changes
    from run to run, and a resumed run would no longer match an unbroken one."""

    @staticmethod
    def forward(ctx, idx, weight):
        """idx (B, L) ids, weight (N, W) -> (B, L, W)."""
        ctx.save_for_backward(idx)
        ctx.rows = weight.shape[0]
        return F.embedding(idx, weight)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        onehot = (idx.flatten()[:, None] == torch.arange(ctx.rows, device=idx.device)).to(grad.dtype)   # (B L, N)
        return None, onehot.t() @ grad.flatten(0, -2)                                    # (N, W)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, with an optional KV cache."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        assert width % heads == 0, "width must be a multiple of heads"
        self.c_attn = nn.Linear(width, 3 * width)      # q, k, v for all heads at once
        self.c_proj = nn.Linear(width, width)
        self.resid_dropout = nn.Dropout(dropout)
        self.heads, self.dropout = heads, dropout

    def forward(self, x: torch.Tensor, cache: Optional[list] = None, pos: int = 0) -> torch.Tensor:
        """x (B, L, W) -> (B, L, W). With a cache, x holds positions pos .. pos+L-1 and their keys
        and values are written into it; attention then covers positions 0 .. pos+L-1."""
        b, t, w = x.shape
        q, k, v = self.c_attn(x).split(w, dim=2)
        q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, L, D)
        mask, causal = None, True
        if cache is not None:
            cache[0][:, :, pos:pos + t] = k
            cache[1][:, :, pos:pos + t] = v
            k, v = cache[0][:, :, :pos + t], cache[1][:, :, :pos + t]
            if t == 1:
                causal = False                                    # one query sees every cached key
            elif pos > 0:                                         # queries pos.. see keys <= their position
                causal = False
                mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(pos)
        y = attention(q, k, v, mask, causal, self.dropout if self.training else 0.0)    # (B, H, L, D)
        y = y.transpose(1, 2).reshape(b, t, w)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """W -> 4W -> W with GELU."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x: torch.Tensor, cache: Optional[list] = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only language model over `vocab` tokens (plus BOS = vocab as input), `context` positions."""

    def __init__(self, vocab: int, context: int, layers: int = 4, heads: int = 4, width: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab, self.context, self.layers, self.heads, self.width = vocab, context, layers, heads, width
        self.wte = nn.Embedding(vocab + 1, width)          # + BOS
        self.wpe = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(width, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)

    def extra_repr(self) -> str:
        return f"vocab={self.vocab}, context={self.context}"

    def reset_parameters(self, gen: torch.Generator) -> None:
        """GPT-2's init (as nanoGPT): N(0, 0.02) weights, zero biases, residual projections scaled by
        1/sqrt(2 * layers); LayerNorms at 1 and 0. Drawn on the CPU from gen: the same weights on every device."""
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("c_proj.weight"):
                    std = 0.02 / math.sqrt(2 * self.layers)
                elif p.dim() >= 2:
                    std = 0.02
                else:
                    p.copy_(torch.ones_like(p) if name.split(".")[-2].startswith("ln") and name.endswith("weight")
                            else torch.zeros_like(p))
                    continue
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, idx: torch.Tensor, cache: Optional[Cache] = None, pos: int = 0) -> torch.Tensor:
        """Token ids (B, L) at positions pos .. pos+L-1 -> next-token logits (B, L, vocab)."""
        t = idx.shape[1]
        tok = _Lookup.apply(idx, self.wte.weight) if torch.is_grad_enabled() else self.wte(idx)
        x = tok + self.wpe.weight[pos:pos + t]              # (B, L, W)
        x = self.drop(x)
        for j, block in enumerate(self.h):
            x = block(x, None if cache is None else cache[j], pos)
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight[:self.vocab])      # tied output layer; BOS is never predicted

    def new_cache(self, batch: int, dtype: torch.dtype = torch.float32) -> Cache:
        """An empty KV cache for `batch` sequences: per layer [k, v], each (B, H, context, D)."""
        shape = (batch, self.heads, self.context, self.width // self.heads)
        dev = self.wte.weight.device
        return [[torch.empty(shape, dtype=dtype, device=dev), torch.empty(shape, dtype=dtype, device=dev)]
                for _ in range(self.layers)]

    def flops_per_token(self, length: int) -> float:
        """Forward FLOPs per token at sequence length `length`: 2 per weight of the matmuls
        (blocks and tied output layer) + 4 L W per layer for attention's two products (full L,
        as the fused kernel computes it). Training is 3x (forward + backward)."""
        w = self.width
        return 2 * (12 * w * w * self.layers + w * self.vocab) + 4 * length * w * self.layers


def lm_loss(model: GPT, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) per chain: inputs (S=1, B, L) ids, targets (1, B, L), -100 ignored -> (1,)."""
    logits = model(inputs[0].long())                                      # (B, L, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets[0].flatten().long(), ignore_index=-100)[None]
