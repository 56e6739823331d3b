"""Causal language models of Hugging Face `transformers` in the loop (config: families/hf_config.py).

Shumailov et al. (Nature 2024) fine-tune OPT-125m on wikitext-2 in 64-token blocks; every generation
fine-tunes the pretrained model again (`init: base`) on 5-beam continuations of the previous
generation's blocks. Gerstgrasser et al. (2024) train GPT-2-shaped models from scratch each
iteration (`config`, `init: fresh`).

Data layout (project-wide for text): (S, N, T) int32 ids of the source's tokenizer, which for a
pretrained model is the model's own. Each block is read after a start token (the tokenizer's BOS,
else its EOS; for a model built from a config, one more id V after the tokenizer's V), so its first
token is predicted and `log_prob` is the log-probability of the whole block. Ids the tokenizer does
not have (OPT's embedding has 50,272 rows for 50,265 tokens; a config model's start token) are
never generated and get probability 0 in every score. The S chains are S models, each fitted by
the project's trainer (nn/trainer.py) and decoded by the model's own `generate`.

What a checkpoint holds: each chain's trained weights (all of them, or only the LoRA adapters),
generation 0's under init gen0, a config model's initial weights (init base), the prompt pool and
a fingerprint of the pretrained model, which is read again from its directory or the hub cache on
resume; a model that changed there since is refused.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Optional

import numpy as np
import torch

from ..datasets.errors import DataError
from ..nn.trainer import EarlyStopping, Trainer, evaluate, num_threads, resolve_device
from ..text.hf import load, transformers
from .blocks import check_blocks, heldout_split, pick_prompts, prompt_pool
from .hf_config import HFConfig

SCORE_ROWS = 64        # blocks scored at once


def _lm_loss(model, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of batches (1, B, T): (1,) (the trainer's per-chain loss)."""
    logits = model(input_ids=inp[0]).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tgt[0].flatten())[None]


def _seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 62, (1,), generator=gen))


class HFFamily:
    """S causal language models of transformers over a text source's tokens."""

    def __init__(self, cfg: HFConfig, source, chains: int):
        self.cfg, self.source, self.chains = cfg, source, int(chains)
        self.tf = transformers()
        self.block, self.v_tok = int(source.block), len(source.vocab)
        self.device = resolve_device(cfg.device)
        self.vocab_hash = source.tokenizer.hash
        self.name = cfg.model or f"a {cfg.config['model_type']} built from its config"
        if cfg.model is not None:
            kw = {"revision": cfg.revision} if cfg.revision else {}
            self.mconfig = load(self.tf.AutoConfig, cfg.model, "model", **kw)
            self.bos = getattr(source.tokenizer, "bos", None)
            if self.bos is None:
                raise DataError(f"hf: the tokenizer {getattr(source.tokenizer, 'name', '')} has neither a BOS nor an "
                                f"EOS token to start a block with; use the model's own tokenizer")
        else:
            extra = {k: v for k, v in cfg.config.items() if k != "model_type"}
            self.bos = self.v_tok
            ids = {"vocab_size": self.v_tok + 1, "bos_token_id": self.bos, "eos_token_id": self.bos,
                   "pad_token_id": self.bos}
            positions = {k: self.block + 1 for k in ("n_positions", "max_position_embeddings")
                         if k not in extra}
            try:
                self.mconfig = self.tf.AutoConfig.for_model(cfg.config["model_type"], **{**positions, **extra, **ids})
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"hf: model.config is not a transformers config: {str(e).splitlines()[0]}") from None
        out_rows = int(getattr(self.mconfig, "vocab_size", 0) or 0)
        if out_rows < self.v_tok:
            raise DataError(f"hf: the model has {out_rows} output tokens but the tokenizer {self.v_tok}: they do not "
                            f"belong together; set source.tokenizer to the model's own")
        longest = next((getattr(self.mconfig, k) for k in ("n_positions", "max_position_embeddings")
                        if getattr(self.mconfig, k, None)), None)
        if longest is not None and self.block + 1 > longest:
            raise DataError(f"hf: a block of {self.block} tokens plus its start token needs {self.block + 1} positions, "
                            f"but {self.name} takes at most {longest}; lower source.block to {longest - 1} or less")
        self.out_rows = out_rows
        # taken before any model is built: building one writes run-time fields (attention kernel, dtype) into it
        self._config_digest = hashlib.sha256(self.mconfig.to_json_string(use_diff=False).encode()).digest()
        self.models: Optional[list] = None          # None until fitted or loaded
        self.base: Optional[list[dict]] = None      # a config model's initial weights, per chain (init base)
        self.gen0: Optional[list[dict]] = None      # init gen0: the weights fitted at generation 0, per chain
        self.prompts: Optional[np.ndarray] = None   # prompted: (S, N, prompt) of the last training set
        self._pretrained: Optional[dict] = None     # the pretrained weights on the CPU, read once
        nan = np.full(self.chains, np.nan)
        self.last_loss, self.last_epochs, self.last_tokens = nan.copy(), np.zeros(self.chains), np.zeros(self.chains)

    # ---- models -----------------------------------------------------------------------------
    def _architecture(self, seed: int):
        """A model of this architecture on the CPU, float32: random weights drawn from `seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.tf.AutoModelForCausalLM.from_config(self.mconfig, dtype=torch.float32)

    def _pretrained_state(self) -> dict:
        """The pretrained model's weights (read from disk or the hub cache once per process)."""
        if self._pretrained is None:
            kw = {"revision": self.cfg.revision} if self.cfg.revision else {}
            model = load(self.tf.AutoModelForCausalLM, self.cfg.model, "model", dtype=torch.float32, **kw)
            self._pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self._pretrained

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the model's config and its initial weights (what a resumed run must find again); taken
        once, not at every checkpoint (it sums every pretrained weight)."""
        h = hashlib.sha256(self._config_digest)
        if self.cfg.model is not None:
            for k, v in sorted(self._pretrained_state().items()):
                h.update(k.encode() + np.float64(v.double().sum()).tobytes())
        return h.hexdigest()[:16]

    def _lora(self, model):
        """The model with fresh LoRA adapters (peft), or the model itself without `lora`."""
        if self.cfg.lora is None:
            return model
        try:
            import peft
        except ImportError:
            raise DataError("model.lora needs the peft library: pip install 'model-collapse[hf]' (or pip install "
                            "peft)") from None
        lc = self.cfg.lora
        return peft.get_peft_model(model, peft.LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                          target_modules=lc.target_modules, task_type="CAUSAL_LM"))

    def _trained(self, model) -> dict:
        """What a chain's training changed: every weight, or the LoRA adapters only (CPU tensors)."""
        if self.cfg.lora is None:
            state = model.state_dict()
        else:
            import peft
            state = peft.get_peft_model_state_dict(model)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def _initial(self, s: int, seed: int, fresh: bool):
        """Chain s's initial weights, on the CPU: the pretrained model's; a config model's stored base (init base),
        or new ones drawn from seed (the first fit, init fresh)."""
        model = self._architecture(0 if self.cfg.model is not None else seed)
        if self.cfg.model is not None:
            model.load_state_dict(self._pretrained_state())
        elif self.base is not None and not fresh:
            model.load_state_dict(self.base[s])
        return model

    def _assemble(self, initial, trained: Optional[dict]):
        """A model on the device: initial weights, adapters when configured, then `trained` (a _trained() dict)."""
        model = self._lora(initial)
        if trained is not None:
            if self.cfg.lora is None:
                model.load_state_dict(trained)
            else:
                import peft
                peft.set_peft_model_state_dict(model, trained)
        return model.to(self.device)

    # ---- data -------------------------------------------------------------------------------
    def _blocks(self, data) -> np.ndarray:
        """Checked token blocks (S or 1, N, T) int32 (a shared view stays a view)."""
        return check_blocks(data, self.chains, self.block, self.v_tok, "hf")

    def _io(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (start token + block[:-1]) and targets (the block) of blocks x (M, T), int64."""
        t = torch.from_numpy(np.asarray(x, np.int64))
        return torch.cat([torch.full((len(t), 1), self.bos, dtype=torch.int64), t[:, :-1]], 1), t

    # ---- fit --------------------------------------------------------------------------------
    def fit(self, data, rng: np.random.Generator) -> None:
        """Train every chain on its blocks (S, N, T); torch seeds come from rng only."""
        x = self._blocks(data)
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        cfg, first = self.cfg, self.models is None
        later = not first                         # a fit of generation >= 1
        fixed = cfg.finetune_epochs if later and cfg.finetune_epochs is not None else cfg.epochs
        starts_trained = later and (cfg.init in ("warm", "gen0") or (cfg.init == "base" and cfg.model is not None))
        lr = cfg.finetune_lr if starts_trained and cfg.finetune_lr else cfg.lr
        models, loss, epochs, tokens = [], np.zeros(self.chains), np.zeros(self.chains), np.zeros(self.chains)
        base = [] if first and cfg.model is None else None
        with num_threads(cfg.threads):
            for s in range(self.chains):
                seed = _seed(gen)
                if first or cfg.init in ("base", "fresh"):
                    initial = self._initial(s, seed, fresh=first or cfg.init == "fresh")
                    if base is not None:
                        base.append({k: v.detach().clone() for k, v in initial.state_dict().items()})
                    model = self._assemble(initial, None)
                else:
                    weights = self._trained(self.models[s]) if cfg.init == "warm" else self.gen0[s]
                    model = self._assemble(self._initial(s, seed, fresh=False), weights)
                res, loss[s], tokens[s] = self._train(model, x[min(s, x.shape[0] - 1)], gen, fixed, lr)
                epochs[s] = res.epochs[0]
                models.append(model)
        if base is not None:
            self.base = base
        if cfg.init == "gen0" and self.gen0 is None:
            self.gen0 = [self._trained(m) for m in models]
        self.models = models
        self.last_loss, self.last_epochs, self.last_tokens = loss, epochs, tokens
        if cfg.mode == "prompted":
            self.prompts = prompt_pool(x, self.chains, cfg, self.block)

    def _train(self, model, x: np.ndarray, gen: torch.Generator, fixed: Optional[int], lr: float):
        """Fit one chain's model on blocks x (N, T) at rate lr: (FitResult, held-out loss, tokens trained)."""
        cfg = self.cfg
        train, val = heldout_split(x, cfg.val_fraction, gen)
        (ti, tt), (vi, vt) = ((a[None].to(self.device), b[None].to(self.device)) for a, b in map(self._io, (train, val)))
        trainer = Trainer(model, _lm_loss, lr=lr, optimizer="adamw", weight_decay=cfg.weight_decay,
                          compile=bool(cfg.compile), precision=cfg.precision, name="hf model", lr_key="model.lr",
                          accumulate=cfg.accumulate)
        score = lambda: evaluate(model, _lm_loss, (vi, vt), SCORE_ROWS)     # noqa: E731
        stop = None if fixed else EarlyStopping(1, cfg.patience, cfg.min_rel_improvement, cfg.min_epochs)
        # the models' own dropout draws from torch's global generator: seeded here, from gen, for exact reruns
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_seed(gen))
            res = trainer.fit((ti, tt), gen, batch=cfg.batch, max_epochs=fixed or cfg.max_epochs, stop=stop,
                              score=score)
        scores = res.scores
        if scores is None and val is train:      # nothing held out: the last epoch's training loss
            scores = (torch.from_numpy(res.train_loss),)
        elif scores is None:                     # fixed epochs: score the final weights once
            scores = score()
            trainer.check(scores, res.epochs[0] - 1, "held-out")
        return res, float(scores[0][0]), float(res.steps * min(cfg.batch, tt.shape[1]) * self.block)

    # ---- sampling ---------------------------------------------------------------------------
    def _require_fit(self) -> list:
        if self.models is None:
            raise RuntimeError("the hf model has not been fitted (or loaded) yet")
        return self.models

    def _banned(self) -> list[int]:
        """Output ids that are not tokens of the source's tokenizer (never generated, probability 0)."""
        return list(range(self.v_tok, self.out_rows))

    def _generation_config(self, new: int):
        """transformers' GenerationConfig for exactly `new` tokens after each prompt."""
        c = self.cfg
        kw = dict(max_new_tokens=new, min_new_tokens=new, num_beams=c.beams if c.decode == "beam" else 1,
                  do_sample=c.decode == "sample", repetition_penalty=c.repetition_penalty,
                  bos_token_id=self.bos, pad_token_id=self.bos, eos_token_id=None, use_cache=True,
                  suppress_tokens=self._banned() or None)
        if c.decode == "sample":
            kw.update(temperature=c.temperature, top_k=c.top_k or 0, top_p=c.top_p)
        if c.decode == "beam":
            kw.update(early_stopping=True, length_penalty=1.0)
        return self.tf.GenerationConfig(**kw)

    @torch.inference_mode()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n blocks per chain (S, n, T) int32. Prompted: block i starts with the first (or last) `prompt` tokens
        of a training block (each once, in order, when n equals their number; else drawn); the model writes the
        rest through its own generate (KV cache, beams)."""
        models, cfg, t = self._require_fit(), self.cfg, self.block
        out = np.empty((self.chains, n, t), np.int32)
        k = cfg.prompt if cfg.mode == "prompted" else 0
        gconf = self._generation_config(t - k)
        with num_threads(cfg.threads):
            for s, model in enumerate(models):
                model.eval()
                seq = torch.full((n, k + 1), self.bos, dtype=torch.int64)
                if k:
                    seq[:, 1:] = pick_prompts(self.prompts[s], n, rng)
                for a in range(0, n, cfg.gen_batch):
                    part = seq[a:a + cfg.gen_batch].to(self.device)
                    with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                        torch.manual_seed(int(rng.integers(2 ** 62)))
                        done = model.generate(input_ids=part, attention_mask=torch.ones_like(part),
                                              generation_config=gconf)
                    out[s, a:a + cfg.gen_batch] = done[:, 1:].cpu().numpy()
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
        with num_threads(self.cfg.threads):
            for s, model in enumerate(models):
                model.eval()
                blocks = x if shared else x[s]
                for a in range(0, m, SCORE_ROWS):
                    inp, tgt = self._io(blocks[a:a + SCORE_ROWS])
                    logits = model(input_ids=inp.to(self.device)).logits.float()
                    logits[..., self.v_tok:] = -torch.inf
                    lp = logits.log_softmax(-1).gather(-1, tgt.to(self.device)[..., None])[..., 0]
                    out[s, a:a + SCORE_ROWS] = lp.double().cpu().numpy()
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
        """Trained weights ('w/', stacked over chains; LoRA: the adapters only), generation-0's ('g0/'), a config
        model's initial weights ('b/'), the prompt pool, last-fit records, the vocabulary's hash and the model's
        fingerprint. AdamW's moments are not saved: every fit starts a fresh optimiser."""
        state = {"loss": self.last_loss, "epochs": self.last_epochs, "tokens": self.last_tokens,
                 "vocab_hash": np.array(self.vocab_hash)}
        for prefix, per_chain in (("w/", None if self.models is None else [self._trained(m) for m in self.models]),
                                  ("g0/", self.gen0), ("b/", self.base)):
            if per_chain is not None:
                for k in per_chain[0]:
                    state[prefix + k] = np.stack([c[k].float().numpy() for c in per_chain])
        if self.models is not None:
            state["fingerprint"] = np.array(self.fingerprint)
        if self.prompts is not None:
            state["prompts"] = self.prompts
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from state_dict(); refuses another tokenizer, architecture or pretrained model."""
        from ..text.tokenize import check_vocab_hash
        check_vocab_hash(state.get("vocab_hash"), self.source)

        def per_chain(prefix):
            keys = [k for k in state if k.startswith(prefix)]
            if not keys:
                return None
            return [{k[len(prefix):]: torch.from_numpy(np.array(state[k][s], np.float32)) for k in keys}
                    for s in range(self.chains)]

        self.base, self.gen0 = per_chain("b/"), per_chain("g0/")
        trained = per_chain("w/")
        if trained is None:
            self.models = None
        else:
            if "fingerprint" in state and str(state["fingerprint"]) != self.fingerprint:
                raise DataError(f"hf: {self.name} is not the model this run was made with (its config or weights "
                                f"changed since); restore it, or start a new run")
            try:
                self.models = [self._assemble(self._initial(s, 0, fresh=False), trained[s])
                               for s in range(self.chains)]
            except (RuntimeError, KeyError, ValueError) as e:
                raise ValueError(f"hf state does not match this model (config changed?): "
                                 f"{str(e).splitlines()[0][:300]}") from None
        self.prompts = np.array(state["prompts"], np.int32) if "prompts" in state else None
        self.last_loss = np.array(state["loss"], float)
        self.last_epochs, self.last_tokens = np.array(state["epochs"], float), np.array(state["tokens"], float)
