"""A GPT-style language model retrained every generation on text written by its ancestors.

Shumailov et al. (Nature 2024) fine-tune OPT-125m on wikitext-2 in 64-token blocks, continue every
training block by 64 tokens with 5-way beam search, and fine-tune the same base model on that text
for the next generation (`init: gen0`, `mode: prompted`, `decode: beam`); perplexity on real test
text rises. Gerstgrasser et al. (2024) train small GPT-2s from scratch every iteration
(`init: fresh`): replacing the data collapses, accumulating it does not.

Data layout (project-wide for text): (S, N, T) int32 token ids, N blocks of T = source.block tokens.
Each block is read after a BOS token (id V), so its first token is predicted (and scored) too and
`log_prob` is the log-probability of the whole block. The S chains are S separate modules (one
chain per module: a chain-batched GPT would not pay on 2 cores), each fitted by the project's one
training loop (nn/trainer.py): AdamW, the whole step compiled, early stopping on held-out blocks.

A context C shorter than the block cuts every block into windows of C inputs at 0, C, 2C, ... (the
last one ending at the block's end; its targets already covered by the previous window are
ignored), used alike for training, scoring and sampling (nn/generate.py).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..nn.generate import generate, window_start
from ..nn.gpt import GPT, lm_loss
from ..nn.trainer import EarlyStopping, Trainer, evaluate, num_threads, resolve_device
from .blocks import check_blocks, heldout_split, pick_prompts, prompt_pool
from .transformer_config import TransformerConfig

IGNORE = -100          # target id that cross_entropy skips
ROWS = 1024            # sequences decoded at once (beams count as sequences): bounds the KV cache's memory
SCORE_ROWS = 512       # windows scored at once


class TransformerFamily:
    """S independent GPTs over a text source's vocabulary."""

    def __init__(self, cfg: TransformerConfig, source, chains: int):
        self.cfg, self.source, self.chains = cfg, source, int(chains)
        self.v, self.block = len(source.vocab), int(source.block)
        self.context = int(cfg.context or self.block)
        self.device = resolve_device(cfg.device)
        self.vocab_hash = source.tokenizer.hash
        self.models: Optional[list[GPT]] = None          # None until fitted or loaded
        self.gen0: Optional[list[dict]] = None           # init gen0: the generation-0 weights, per chain
        self.prompts: Optional[np.ndarray] = None        # prompted: (S, N, prompt) starts of the last training set
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_epochs, self.last_tokens = nan.copy(), np.zeros(self.chains), np.zeros(self.chains)
        self.last_history: list = []

    def _new_model(self) -> GPT:
        """An uninitialised GPT of this config, on the CPU."""
        c = self.cfg
        return GPT(self.v, self.context, c.layers, c.heads, c.width, c.dropout)

    # ---- data -------------------------------------------------------------------------------
    def _blocks(self, data) -> np.ndarray:
        """Checked token blocks (S or 1, N, T) int32 (a shared view stays a view)."""
        return check_blocks(data, self.chains, self.block, self.v, "transformer")

    def windows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (M * windows, C) of blocks x (M, T): BOS + block[:-1] -> block, cut into
        windows of the context (targets of the last window already covered earlier are IGNORE)."""
        m, t, c = x.shape[0], self.block, self.context
        seq = np.empty((m, t + 1), np.int64)
        seq[:, 0], seq[:, 1:] = self.v, x
        starts = sorted({window_start(p, c, t) for p in range(1, t + 1)})
        inp, tgt, covered = [], [], 0
        for s in starts:
            w = min(c, t)
            inp.append(seq[:, s:s + w])
            tg = seq[:, s + 1:s + 1 + w].copy()
            tg[:, :max(0, covered - s)] = IGNORE               # positions s+1 .. covered were targets before
            tgt.append(tg)
            covered = s + w
        return np.stack(inp, 1).reshape(-1, min(c, t)), np.stack(tgt, 1).reshape(-1, min(c, t))

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, data, rng: np.random.Generator) -> None:
        """Train every chain on its blocks (S, N, T); torch seeds come from rng only."""
        x = self._blocks(data)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        cfg, first = self.cfg, self.models is None
        finetune = not first and cfg.init != "fresh"
        fixed = cfg.finetune_epochs if finetune and cfg.finetune_epochs is not None else cfg.epochs
        models, loss, epochs, tokens, history = [], np.zeros(self.chains), np.zeros(self.chains), \
            np.zeros(self.chains), []
        with num_threads(cfg.threads):
            for s in range(self.chains):
                model = self._start(s, gen)
                res, loss[s], tokens[s] = self._train(model, x[min(s, x.shape[0] - 1)], gen, fixed,
                                                      cfg.finetune_lr if finetune and cfg.finetune_lr else cfg.lr)
                epochs[s] = res.epochs[0]
                history.append(np.concatenate(res.history) if res.history else np.zeros(0))
                models.append(model)
        if cfg.init == "gen0" and self.gen0 is None:
            self.gen0 = [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in models]
        self.models = models
        self.last_loss, self.last_epochs, self.last_tokens, self.last_history = loss, epochs, tokens, history
        if cfg.mode == "prompted":
            self.prompts = prompt_pool(x, self.chains, cfg, self.block)

    def _start(self, s: int, gen: torch.Generator) -> GPT:
        """Chain s's starting weights for this fit: fresh, the current model (warm) or generation 0's (gen0)."""
        model = self._new_model()
        if self.models is None or self.cfg.init == "fresh":
            model.reset_parameters(gen)               # drawn on the CPU: the same weights on every device
        elif self.cfg.init == "warm":
            model.load_state_dict(self.models[s].state_dict())
        else:
            model.load_state_dict(self.gen0[s])
        return model.to(self.device)

    def _train(self, model: GPT, x: np.ndarray, gen: torch.Generator, fixed: Optional[int], lr: float):
        """Fit one chain's model on blocks x (N, T) at rate lr: (FitResult, held-out loss, tokens trained)."""
        cfg = self.cfg
        train, val = heldout_split(x, cfg.val_fraction, gen)
        to = lambda a: torch.from_numpy(a)[None].to(self.device)          # noqa: E731 - (1, M, C)
        (ti, tt), (vi, vt) = (tuple(map(to, self.windows(part))) for part in (train, val))
        trainer = Trainer(model, lm_loss, lr=lr, optimizer="adamw", weight_decay=cfg.weight_decay,
                          compile=cfg.compile is not False, precision=cfg.precision, name="transformer", lr_key="model.lr")
        score = lambda: evaluate(model, lm_loss, (vi, vt), SCORE_ROWS)     # noqa: E731
        stop = None if fixed else EarlyStopping(1, cfg.patience, cfg.min_rel_improvement, cfg.min_epochs)
        res = trainer.fit((ti, tt), gen, batch=cfg.batch, max_epochs=fixed or cfg.max_epochs, stop=stop, score=score)
        scores = res.scores
        if scores is None:                       # fixed epochs: score the final weights once
            scores = score()
            trainer.check(scores, res.epochs[0] - 1, "held-out")
        per_window = float((tt[0] != IGNORE).sum()) / max(tt.shape[1], 1)   # targets a window trains on, on average
        return res, float(scores[0][0]), float(res.steps * min(cfg.batch, tt.shape[1]) * per_window)

    # ---- sampling ---------------------------------------------------------------------------
    def _require_fit(self) -> list[GPT]:
        if self.models is None:
            raise RuntimeError("the transformer has not been fitted (or loaded) yet")
        return self.models

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n blocks per chain (S, n, T) int32. Prompted: block i starts with the first (or last) `prompt` tokens
        of a training block (each once, in order, when n equals their number; else drawn) and the model writes
        the rest."""
        models, cfg, t = self._require_fit(), self.cfg, self.block
        out = np.empty((self.chains, n, t), np.int32)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        k = cfg.prompt if cfg.mode == "prompted" else 0
        rows = max(1, ROWS // (cfg.beams if cfg.decode == "beam" else 1))
        with num_threads(cfg.threads):       # float32: bf16 autocast made decoding slower here (casts per step)
            for s, model in enumerate(models):
                seq = torch.full((n, t + 1), self.v, dtype=torch.int64)
                if k:
                    seq[:, 1:k + 1] = pick_prompts(self.prompts[s], n, rng)
                for a in range(0, n, rows):
                    part = seq[a:a + rows].to(self.device)
                    done = generate(model, part, k + 1, decode=cfg.decode, temperature=cfg.temperature,
                                    top_k=cfg.top_k, top_p=cfg.top_p, beams=cfg.beams,
                                    repetition_penalty=cfg.repetition_penalty, gen=gen, cache=cfg.kv_cache)
                    out[s, a:a + rows] = done[:, 1:].cpu().numpy()
        return out

    # ---- scores -----------------------------------------------------------------------------
    @torch.inference_mode()
    def token_logprob(self, x) -> np.ndarray:
        """log p(x_t | x_<t) of every token: x (M, T) shared by all chains, or (S, M, T): (S, M, T) float64."""
        models = self._require_fit()
        x = np.asarray(x)
        shared = x.ndim == 2
        m = x.shape[-2]
        out = np.empty((self.chains, m, self.block))
        per = len({window_start(p, self.context, self.block) for p in range(1, self.block + 1)})
        step = max(1, SCORE_ROWS // per)
        with num_threads(self.cfg.threads):
            for s, model in enumerate(models):
                model.eval()
                blocks = x if shared else x[s]
                for a in range(0, m, step):
                    inp, tgt = self.windows(np.asarray(blocks[a:a + step]))
                    logp = model(torch.from_numpy(inp).to(self.device)).float().log_softmax(-1)   # (M w, C, V)
                    tg = torch.from_numpy(tgt).to(self.device)
                    lp = logp.gather(-1, tg.clamp(min=0)[..., None])[..., 0]
                    keep = (tg != IGNORE).cpu().numpy()
                    out[s, a:a + step] = lp.double().cpu().numpy()[keep].reshape(-1, self.block)
        return out

    def log_prob(self, x) -> np.ndarray:
        """Log-probability of each block: x (M, T) -> (S, M); (S, M, T) -> (S, M)."""
        return self.token_logprob(x).sum(axis=-1)

    # ---- records and state ------------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """Held-out loss (nats per token), epochs and tokens trained in the last fit: each (S,)."""
        return {"loss": self.last_loss.astype(float), "epochs": self.last_epochs.astype(float),
                "tokens": self.last_tokens.astype(float)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weights ('w/' + module keys, stacked over chains), generation-0 weights ('g0/') under init gen0,
        the prompt pool of a prompted model, last-fit records and the vocabulary's hash.

        AdamW's moments are not saved: every fit starts a fresh optimiser, so weights plus the fit's rng
        determine the next generation exactly (a resumed run matches an unbroken one)."""
        state = {"loss": self.last_loss, "epochs": self.last_epochs, "tokens": self.last_tokens,
                 "vocab_hash": np.array(self.vocab_hash)}
        if self.models is not None:
            for k in self.models[0].state_dict():
                state["w/" + k] = np.stack([m.state_dict()[k].detach().cpu().numpy() for m in self.models])
        if self.gen0 is not None:
            for k in self.gen0[0]:
                state["g0/" + k] = np.stack([g[k].numpy() for g in self.gen0])
        if self.prompts is not None:
            state["prompts"] = self.prompts
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict(); refuses weights of another architecture or tokenizer."""
        from ..text.tokenize import check_vocab_hash
        check_vocab_hash(state.get("vocab_hash"), self.source)

        def modules(prefix):
            keys = [k for k in state if k.startswith(prefix)]
            if not keys:
                return None
            out = []
            for s in range(self.chains):
                model = self._new_model()
                try:
                    model.load_state_dict({k[len(prefix):]: torch.from_numpy(np.array(state[k][s], np.float32))
                                           for k in keys})
                except (RuntimeError, IndexError) as e:
                    raise ValueError(f"transformer state does not match this architecture (config changed?): "
                                     f"{e}") from None
                out.append(model)
            return out

        models = modules("w/")
        self.models = None if models is None else [m.to(self.device) for m in models]
        g0 = modules("g0/")
        self.gen0 = None if g0 is None else [m.state_dict() for m in g0]
        self.prompts = np.array(state["prompts"], np.int32) if "prompts" in state else None
        self.last_loss = np.array(state["loss"], float)
        self.last_epochs, self.last_tokens = np.array(state["epochs"], float), np.array(state["tokens"], float)
