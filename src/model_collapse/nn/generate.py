"""Decoding for the GPT (nn/gpt.py): sampling with temperature / top-k / top-p, greedy, and beam search.

Every decoder works on a batch of R sequences at once and, by default, keeps a KV cache, so each
new token costs one position of work instead of a pass over the whole sequence. Sequences are
`seq` (R, 1 + T) token ids: BOS then the block; positions 1 .. P-1 hold the prompt, the decoder
writes positions P .. T. Logits and scores are float32.

Windows: a model whose context C is shorter than the block T sees each block as windows of C
inputs starting at 0, C, 2C, ... with the last one ending at the block's end (`window_start`),
exactly as it was trained (families/transformer.py); at the first target of a new window the
cache is rebuilt from that window's inputs. With C >= T there is one window and no rebuild.

Processing follows Hugging Face transformers, so settings carry over:
- sampling: repetition penalty on the logits, then temperature, top-k, top-p (nucleus, Holtzman
  et al. 2020: the smallest set of most likely tokens whose mass reaches p), then one draw;
- repetition penalty (Keskar et al. 2019; HF's RepetitionPenaltyLogitsProcessor): the score of
  every token already in the sequence, prompt included, is divided by the penalty when positive
  and multiplied by it when negative;
- beam search: the K best partial sequences by summed log-probability (the penalty applied to the
  log-probabilities, as HF's beam search does); every sequence has the same length (no end token),
  so the result is the highest-scoring beam. Temperature, top-k and top-p do not apply to it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .gpt import GPT


def window_start(t: int, context: int, total: int) -> int:
    """Start (in seq positions) of the window whose inputs predict seq position t (1 .. total)."""
    if context >= total:
        return 0
    return min((t - 1) // context * context, total - context)


class Stepper:
    """Next-token logits for a batch of growing sequences, with or without a KV cache."""

    def __init__(self, model: GPT, total: int, cache: bool = True):
        self.model, self.total, self.use_cache = model, total, cache
        self.cache, self.spare, self.start, self.t = None, None, -1, -1
        self.shared = 0          # leading cached positions equal within every group of rows that reorder permutes

    def logits(self, seq: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (R, V) for seq position t given seq[:, :t] (positions before t already written)."""
        s = window_start(t, self.model.context, self.total)
        if not self.use_cache:
            return self.model(seq[:, s:t])[:, -1].float()
        if s != self.start or t != self.t + 1:               # a new window (or the first step): prefill it
            self.cache, self.spare, self.shared = self.model.new_cache(seq.shape[0]), None, 0
            out = self.model(seq[:, s:t], self.cache, 0)[:, -1]
        else:                                                # one more position of the same window
            out = self.model(seq[:, t - 1:t], self.cache, t - 1 - s)[:, -1]
        self.start, self.t = s, t
        return out.float()

    def share_prefix(self) -> None:
        """Declare the positions cached so far equal for every row of a group (k beams of one prompt): later
        reorders permute rows within groups only, so they leave those positions where they are."""
        self.shared = max(self.t - self.start, 0)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and repeat) the cached rows `rows` (R',): beams that survive, or one prompt copied to k beams."""
        if self.cache is None:
            return
        if len(rows) != self.cache[0][0].shape[0]:           # a new number of rows: one plain gather
            self.cache = [[c.index_select(0, rows) for c in layer] for layer in self.cache]
            self.spare, self.shared = None, 0
            return
        if self.spare is None:
            self.spare = [[c.clone() for c in layer] for layer in self.cache]
        # Gathered into a second, reused buffer (a freshly allocated one costs ~7x more here: page faults),
        # and only the positions that differ within a group (the shared prompt stays in both buffers).
        a, b = self.shared, self.t - self.start
        for layer, spare in zip(self.cache, self.spare):
            for c, out in zip(layer, spare):
                torch.index_select(c[:, :, a:b], 0, rows, out=out[:, :, a:b])
        self.cache, self.spare = self.spare, self.cache


def penalise(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF's repetition penalty: scores (R, V) of tokens with seen (R, V) True shrink towards lower values."""
    if penalty == 1.0:
        return scores
    return torch.where(seen, torch.where(scores > 0, scores / penalty, scores * penalty), scores)


def warp(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p: logits (R, V) with the excluded tokens at -inf."""
    logits = logits / temperature
    v = logits.shape[-1]
    if top_k is not None and top_k < v:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        srt, order = logits.sort(dim=-1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) >= top_p          # the mass before a token already reaches p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row by the inverse CDF: probs (R, V), uniforms u (R,) -> (R,) int64."""
    cdf = probs.cumsum(-1)
    idx = (cdf < u[:, None] * cdf[:, -1:]).sum(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


@torch.inference_mode()
def generate(model: GPT, seq: torch.Tensor, start: int, *, decode: str = "sample", temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: float = 1.0, beams: int = 5, repetition_penalty: float = 1.0,
             gen: Optional[torch.Generator] = None, cache: bool = True) -> torch.Tensor:
    """Write positions start .. T of seq (R, 1 + T) (BOS, then the prompt in 1 .. start-1); returns seq.

    decode: "sample" (uniforms from gen, a CPU generator: the same draws on every device),
    "greedy" or "beam" (`beams` wide). cache=False recomputes every window from its start at every
    step (the slow path, for comparison).
    """
    model.eval()
    seq = seq.clone()
    total = seq.shape[1] - 1
    if start > total:
        return seq
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(seq.shape[0], model.vocab, dtype=torch.bool, device=seq.device)
        if start > 1:
            seen.scatter_(1, seq[:, 1:start], True)
    if decode == "beam":
        return _beam(model, seq, start, beams, repetition_penalty, seen, cache)
    step = Stepper(model, total, cache)
    for t in range(start, total + 1):
        logits = step.logits(seq, t)
        if seen is not None:
            logits = penalise(logits, seen, repetition_penalty)
        if decode == "greedy":
            tok = logits.argmax(-1)
        else:
            probs = warp(logits, temperature, top_k, top_p).softmax(-1)
            tok = draw(probs, torch.rand(seq.shape[0], generator=gen, dtype=torch.float64).to(seq.device))
        seq[:, t] = tok
        if seen is not None:
            seen.scatter_(1, tok[:, None], True)
    return seq


def _beam(model: GPT, seq: torch.Tensor, start: int, k: int, penalty: float, seen, cache: bool) -> torch.Tensor:
    """Beam search of width k for each row of seq; returns each row's best beam (R, 1 + T)."""
    r, total = seq.shape[0], seq.shape[1] - 1
    v = model.vocab
    step = Stepper(model, total, cache)
    # The first step runs on the R prompts once; their cache is then copied to k beams each.
    logits = step.logits(seq, start)                                       # (R, V)
    expand = torch.arange(r, device=seq.device).repeat_interleave(k)       # row of each beam
    seq, scores = seq[expand], torch.zeros(r, k, device=seq.device)
    scores[:, 1:] = float("-inf")                                          # k identical beams: keep one
    logits = logits[expand]
    step.reorder(expand)
    step.share_prefix()                                                    # the prompt, the same in all k beams
    if seen is not None:
        seen = seen[expand]
    base = (torch.arange(r, device=seq.device) * k)[:, None]
    for t in range(start, total + 1):
        if t > start:
            logits = step.logits(seq, t)                                   # (R k, V)
        logp = logits.log_softmax(-1)
        if seen is not None:
            logp = penalise(logp, seen, penalty)
        cand = (scores[:, :, None] + logp.view(r, k, v)).view(r, k * v)     # (R, k V)
        scores, idx = cand.topk(k, dim=1)                                  # sorted: beam 0 is the best
        rows = (base + idx // v).flatten()                                 # surviving beams (R k,)
        tok = (idx % v).flatten()
        seq = seq[rows]
        seq[:, t] = tok
        if seen is not None:
            seen = seen[rows]
            seen.scatter_(1, tok[:, None], True)
        if t < total:
            step.reorder(rows)
    return seq.view(r, k, -1)[:, 0]
