"""One training loop for every neural family (the VAE, the classifiers, next the language model).

A model is a plain ``nn.Module``; ``loss(model, *batch)`` returns its per-chain mean loss,
shape (S,), where S independent models are batched in the module (S = 1 for an
unbatched one). Each input is one contiguous tensor (S, N, ...) and every epoch draws
each chain's batches by an index permutation: no DataLoader, no per-item Python.

The step (forward, backward, Adam/AdamW update) is compiled into ONE graph. It calls
torch.optim's own update (``torch.optim.adam.adam``) on the optimizer's state, because
``Optimizer.step()`` graph-breaks on purpose (torch/optim/optimizer.py), which splits the
step into three graphs and costs ~1.4x at W2's batch 128 (benchmarks/bench_vae.py). If
compiling fails, one warning and the same optimizer carries on eagerly with ``step()``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.optim.adam import adam as adam_update

from ..errors import ConfigError, DivergenceError

Scores = tuple[torch.Tensor, ...]   # held-out scores, each (S,); the first drives early stopping

# Inductor inlines Adam's scalar bias corrections (1 - beta^t) into each weight's update loop,
# where they are recomputed (two pows) for every vector of weights; realizing even small
# expressions as buffers computes them once: ~25% less time in the generated kernels of the
# W2 VAE step (benchmarks/bench_vae.py), no change for the MLP classifier.
COMPILE_OPTIONS = {"realize_opcount_threshold": 2}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when torch sees a GPU, else cpu; 'cuda' without one is a config error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda, but torch sees no CUDA device; use device: auto or cpu")
    return torch.device(device)


@contextlib.contextmanager
def num_threads(n: int):
    """Temporarily use n torch intra-op threads (n = 0: leave torch's setting, i.e. all cores)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


def make_optimizer(params, kind: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0):
    """torch.optim Adam or AdamW, fused where this build and device have it, else foreach, else plain."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    params = list(params)
    for impl in ({"fused": True}, {"foreach": True}, {}):
        try:
            opt = cls(params, lr=lr, weight_decay=weight_decay, **impl)
            break
        except (RuntimeError, TypeError, ValueError):
            continue
    for p in params:  # the state Adam would create lazily, made now so the compiled and eager steps share it
        opt.state[p] = {"step": torch.zeros((), device=p.device if impl.get("fused") else "cpu"),
                        "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    return opt


# ---- stop rules: update(epoch, scores) -> chains (S,) whose weights are their best so far -------------
class EarlyStopping:
    """Per-chain early stopping on a held-out loss (lower is better).

    A chain stops once its loss has not improved by ``min_rel_improvement`` (relative) for
    ``patience`` epochs, and not before ``min_epochs``. The improvement is measured against
    the last epoch that did improve by that much, so slow steady progress still counts.
    """

    def __init__(self, chains: int, patience: int, min_rel_improvement: float = 0.0, min_epochs: int = 1):
        self.patience, self.rel, self.min_epochs = patience, min_rel_improvement, min_epochs
        self.best = torch.full((chains,), float("inf"), dtype=torch.float64)
        self.ref = self.best.clone()                               # loss at the last significant improvement
        self.since = torch.zeros(chains, dtype=torch.int64)        # epochs since then
        self.active = torch.ones(chains, dtype=torch.bool)

    def update(self, epoch: int, scores: Scores) -> torch.Tensor:
        loss = scores[0].double()
        better = self.active & (loss < self.best)
        self.best = torch.where(better, loss, self.best)
        significant = loss <= self.ref * (1 - self.rel)
        self.ref = torch.where(self.active & significant, loss, self.ref)
        self.since = torch.where(significant, 0, self.since + 1)
        self.active &= ~((self.since >= self.patience) & (epoch + 1 >= self.min_epochs))
        return better


class AccuracyStopping:
    """Stop after ``patience`` epochs without a better held-out accuracy, or once it reaches ``target``,
    and not before ``min_epochs``.

    Scores are (accuracy, loss); ties in accuracy (coarse on a small held-out set) go to the lower loss.
    """

    def __init__(self, chains: int, patience: int, target: Optional[float] = None, min_epochs: int = 1):
        self.patience, self.target, self.min_epochs = patience, target, min_epochs
        self.acc = torch.full((chains,), -1.0, dtype=torch.float64)
        self.loss = torch.full((chains,), float("inf"), dtype=torch.float64)
        self.stale = torch.zeros(chains, dtype=torch.int64)
        self.active = torch.ones(chains, dtype=torch.bool)

    def update(self, epoch: int, scores: Scores) -> torch.Tensor:
        acc, loss = scores[0].double(), scores[1].double()
        better = self.active & ((acc > self.acc) | ((acc == self.acc) & (loss < self.loss)))
        self.acc, self.loss = torch.where(better, acc, self.acc), torch.where(better, loss, self.loss)
        self.stale = torch.where(better, 0, self.stale + 1)
        reached = acc >= self.target if self.target is not None else torch.zeros_like(better)
        self.active &= ~((reached | (self.stale >= self.patience)) & (epoch + 1 >= self.min_epochs))
        return better


@dataclass
class FitResult:
    """What a fit did, per chain (scikit-learn's n_iter_ / converged_, named)."""

    epochs: np.ndarray                  # (S,) epochs each chain trained before it stopped (or the cap)
    converged: np.ndarray               # (S,) bool: its stop rule fired before the cap
    scores: Optional[tuple]             # held-out scores at each chain's best epoch, each (S,); None if unscored
    train_loss: np.ndarray              # (S,) mean training loss of the last epoch
    history: list = field(default_factory=list)   # primary held-out score (S,) after each scored epoch
    steps: int = 0
    seconds: float = 0.0


def train_step(model, loss, params, exp_avgs, exp_avg_sqs, steps, lr, hyper, acc, *batch) -> None:
    """Forward, backward and torch.optim's Adam/AdamW update, as one graph; acc (S,) += the batch's losses.

    params and the optimizer state are lists of tensors; hyper is (beta1, beta2, eps,
    weight_decay, decoupled, bf16); lr is a 0-d tensor.
    """
    beta1, beta2, eps, weight_decay, decoupled, bf16 = hyper
    with torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=bf16):
        losses = loss(model, *batch)                                # (S,)
    grads = torch.autograd.grad(losses.sum(), params)               # the sum gives each chain its own gradient
    with torch.no_grad():
        adam_update(params, list(grads), exp_avgs, exp_avg_sqs, [], steps, foreach=False, amsgrad=False,
                    beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps, maximize=False,
                    decoupled_weight_decay=decoupled)
        acc.add_(losses.detach().float())


@torch.inference_mode()
def evaluate(model, fn: Callable, data: Sequence[torch.Tensor], chunk: int = 4096) -> Scores:
    """Item-weighted means over data (S, N, ...) of fn(model, *chunk) -> per-chain means, each (S,), in float64."""
    model.eval()
    n, total = data[0].shape[1], None
    for a in range(0, n, chunk):
        out = fn(model, *(d[:, a:a + chunk] for d in data))
        part = torch.stack([o.double() for o in (out if isinstance(out, tuple) else (out,))]) * min(chunk, n - a)
        total = part if total is None else total + part
    return tuple((total / max(n, 1)).cpu())


class Trainer:
    """Adam/AdamW over a module's parameters, one compiled step per batch.

    Every fit makes a fresh Trainer (fresh optimizer moments), so the weights alone decide
    what the next fit does: a resumed run matches an unbroken one.
    """

    _failed: set = set()   # models whose compiled step failed in this process: eager from then on

    def __init__(self, model: torch.nn.Module, loss: Callable, *, lr: float = 1e-3, optimizer: str = "adam",
                 weight_decay: float = 0.0, compile: bool = True, precision: str = "fp32",
                 name: str = "model", lr_key: str = "lr", accumulate: int = 1):
        self.model, self.loss, self.name, self.lr_key, self.base_lr = model, loss, name, lr_key, lr
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.opt = make_optimizer(self.params, optimizer, lr, weight_decay)
        self.bf16 = precision == "bf16"
        self.half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # fp16 needs a loss scale against underflowing gradients (torch.amp.GradScaler), on CUDA only
        self.scaler = None
        if precision == "fp16":
            if self.device.type != "cuda":
                raise ConfigError(f"precision fp16 needs a CUDA device (the {name} is on {self.device}); use bf16 "
                                  f"or fp32 on the CPU")
            self.scaler = torch.amp.GradScaler("cuda")
        self.accumulate = int(accumulate)
        self.lr = torch.tensor(float(lr), device=self.device)   # a tensor: a new rate is data, not a recompile
        self.key = (repr(model), getattr(loss, "__qualname__", repr(loss)), precision, str(self.device))
        self.compiled, self._args = None, None
        # the compiled graph is the plain step: accumulation and loss scaling run eagerly
        if compile and self.key not in Trainer._failed and self.scaler is None and self.accumulate == 1:
            self.compiled = torch.compile(train_step, fullgraph=True, dynamic=False, options=COMPILE_OPTIONS)

    # ---- steps -------------------------------------------------------------------------
    def _compiled_step(self, acc: torch.Tensor, *batch: torch.Tensor) -> None:
        """train_step fed explicitly (no guard on this Trainer or its optimizer, so later fits reuse the graph)."""
        if self._args is None:
            g, state = self.opt.param_groups[0], [self.opt.state[p] for p in self.params]
            hyper = (*g["betas"], g["eps"], g["weight_decay"], g["decoupled_weight_decay"], self.bf16)
            self._args = (self.model, self.loss, self.params, [s["exp_avg"] for s in state],
                          [s["exp_avg_sq"] for s in state], [s["step"] for s in state], self.lr, hyper)
        self.compiled(*self._args, acc, *batch)

    def _eager_step(self, acc: torch.Tensor, *batch: torch.Tensor) -> None:
        """The same step the PyTorch-examples way: backward, then the (fused) optimizer's step(); with
        accumulate = k, k micro-batches of B / k items each add their share of the gradient first."""
        self.opt.zero_grad(set_to_none=True)
        k = self.accumulate
        for part in zip(*(b.chunk(k, dim=1) for b in batch)) if k > 1 else (batch,):
            with torch.autocast(self.device.type, dtype=self.half or torch.float32, enabled=self.half is not None):
                losses = self.loss(self.model, *part)
            total = losses.sum() / k
            (self.scaler.scale(total) if self.scaler is not None else total).backward()
            acc.add_(losses.detach().float() / k)
        self.opt.param_groups[0]["lr"] = float(self.lr)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()

    def _step(self, acc: torch.Tensor, *batch: torch.Tensor) -> None:
        """One optimisation step on batch tensors (S, B, ...): compiled, or eager once compiling failed."""
        if self.compiled is not None:
            try:
                return self._compiled_step(acc, *batch)
            except Exception as e:  # noqa: BLE001 - e.g. no working C++ compiler: eager from now on
                first = (str(e).strip().splitlines() or [""])[0][:200]
                warnings.warn(f"compiled train step failed ({type(e).__name__}: {first}); "
                              f"training the {self.name} eagerly", stacklevel=3)
                Trainer._failed.add(self.key)
                self.compiled = None
        self._eager_step(acc, *batch)

    def epoch(self, inputs: Sequence[torch.Tensor], lrs: Optional[np.ndarray] = None,
              steps: Optional[int] = None) -> torch.Tensor:
        """Steps over batches inputs[k][i] (each (steps, S, B, ...)), step i at rate lrs[i]; mean loss (S,) on the CPU."""
        n = len(inputs[0]) if steps is None else min(steps, len(inputs[0]))
        acc = torch.zeros(inputs[0].shape[1], device=self.device)
        self.model.train()
        # trace_autograd_ops puts autograd.grad inside the graph; several architectures per process is normal.
        with torch._dynamo.config.patch(trace_autograd_ops=True, recompile_limit=64):
            for i in range(n):
                if lrs is not None:
                    self.lr.fill_(float(lrs[min(i, len(lrs) - 1)]))
                self._step(acc, *(x[i] for x in inputs))
        return (acc / max(n, 1)).cpu()

    # ---- the loop ----------------------------------------------------------------------
    def batches(self, train: Sequence[torch.Tensor], batch: int, gen: torch.Generator,
                noise: tuple = ()) -> list[torch.Tensor]:
        """One epoch's inputs, each (steps, S, B, ...): per-chain permutations, last partial batch dropped.

        noise: per-item shape of N(0, 1) noise (e.g. the VAE's eps) appended as one more input,
        drawn on the CPU from gen so every device sees the same numbers.
        """
        s, n = train[0].shape[:2]
        b = max(1, min(batch, n))
        steps = n // b                              # a fixed batch shape: one compiled graph, no recompiles
        perm = torch.stack([torch.randperm(n, generator=gen)[:steps * b] for _ in range(s)])   # (S, steps*B)
        # One gather per epoch into (steps, S, B, ...): every batch is then a contiguous slice.
        rows = (perm + n * torch.arange(s)[:, None]).reshape(s, steps, b).transpose(0, 1).reshape(-1)
        rows = rows.to(self.device)
        out = [t.reshape(s * n, *t.shape[2:]).index_select(0, rows).view(steps, s, b, *t.shape[2:]) for t in train]
        if noise:
            out.append(torch.randn(steps, s, b, *noise, generator=gen).to(self.device))
        return out

    def check(self, values: Scores, epoch: int, what: str) -> None:
        """DivergenceError naming the chains whose `what` loss (each (S,)) is not finite."""
        bad = sorted({int(c) for v in values for c in (~torch.isfinite(v)).nonzero().flatten()})
        if bad:
            raise DivergenceError(
                f"{self.name} training diverged: non-finite {what} loss in epoch {epoch + 1} on chain(s) {bad} "
                f"(lr={self.base_lr:g}); lower {self.lr_key} (e.g. {self.base_lr / 10:g}) and resume")

    def fit(self, train: Sequence[torch.Tensor], gen: torch.Generator, *, batch: int, max_epochs: int,
            stop=None, score: Optional[Callable[[], Scores]] = None, noise: tuple = (),
            lrs: Optional[np.ndarray] = None, max_steps: Optional[int] = None) -> FitResult:
        """Train for max_epochs (or max_steps); with a stop rule, score() after every epoch.

        train: inputs (S, N, ...) on the model's device. lrs: learning rate of every step.
        Each chain ends with the weights of its best scored epoch (stop rule) or its last.
        """
        t0, s = time.perf_counter(), train[0].shape[0]
        best = best_scores = None
        stopped_at = np.zeros(s, dtype=np.int64)     # epochs run when each chain's rule fired
        history, steps, ran, train_loss = [], 0, 0, torch.full((s,), float("nan"))
        for epoch in range(max_epochs):
            inputs = self.batches(train, batch, gen, noise)
            n = len(inputs[0]) if max_steps is None else min(len(inputs[0]), max_steps - steps)
            train_loss = self.epoch(inputs, None if lrs is None else lrs[steps:], n)
            steps, ran = steps + n, epoch + 1
            self.check((train_loss,), epoch, "training")
            if stop is not None:
                scores = score()
                self.check(scores, epoch, "held-out")
                history.append(scores[0].numpy().copy())
                was = stop.active.clone()
                best, best_scores = self._keep(stop.update(epoch, scores), best, best_scores, scores)
                stopped_at[(was & ~stop.active).numpy()] = ran
                if not stop.active.any():
                    break
            if max_steps is not None and steps >= max_steps:
                break
        if best is not None:
            self.model.load_state_dict(best)
        active = stop.active.numpy() if stop is not None else np.ones(s, bool)
        return FitResult(epochs=np.where(active, ran, stopped_at), converged=~active,
                         scores=tuple(x.numpy() for x in best_scores) if best_scores else None,
                         train_loss=train_loss.numpy(), history=history, steps=steps,
                         seconds=time.perf_counter() - t0)

    def _keep(self, better: torch.Tensor, best: Optional[dict], best_scores, scores: Scores):
        """Copy the weights and scores of the chains in `better` (S,) into the best so far."""
        state = self.model.state_dict()
        if best is None or bool(better.all()):
            return {k: v.detach().clone() for k, v in state.items()}, tuple(x.clone() for x in scores)
        if bool(better.any()):
            mask = better.to(self.device)
            for k, v in state.items():   # every tensor has the leading chain axis (S, ...)
                best[k][mask] = v[mask]
            for b, x in zip(best_scores, scores):
                b[better] = x[better]
        return best, best_scores
