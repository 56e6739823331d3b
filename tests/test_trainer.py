"""The one training loop (nn/trainer.py) on a tiny chain-batched regression net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_collapse.errors import ConfigError, DivergenceError
from model_collapse.nn.trainer import AccuracyStopping, EarlyStopping, Trainer, evaluate, resolve_device
from model_collapse.nn.vae import ChainLinear

torch.set_num_threads(1)


class Tiny(nn.Module):
    """S independent 4-16-1 MLPs: (S, B, 4) -> (S, B, 1)."""

    def __init__(self, chains: int, seed: int = 0):
        super().__init__()
        self.net = nn.Sequential(ChainLinear(chains, 4, 16), nn.ReLU(), ChainLinear(chains, 16, 1))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-0.5, 0.5, generator=gen))

    def forward(self, x):
        return self.net(x)


def mse(model, x, y):
    """Per-chain mean squared error (S,)."""
    return (model(x) - y).square().mean((1, 2))


def data(chains=2, n=256, seed=0):
    """x (S, n, 4), y = a per-chain linear function plus noise (S, n, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(chains, n, 4, generator=g)
    w = torch.randn(chains, 4, 1, generator=g)
    return x, x @ w + 0.1 * torch.randn(chains, n, 1, generator=g)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compiled_step_matches_eager_and_reuses_one_graph():
    x, y = data()
    runs = {}
    for compile in (False, True, True):   # the second compiled fit: a new model, trainer and rate
        model = Tiny(2)
        res = Trainer(model, mse, lr=3e-2, compile=compile).fit(
            (x, y), torch.Generator().manual_seed(1), batch=32, max_epochs=4, stop=EarlyStopping(2, 50),
            score=lambda: evaluate(model, mse, (x, y)))
        runs.setdefault(compile, []).append((res, weights(model)))
    (eager, w_eager), = runs[False]
    (comp, w_comp), (again, w_again) = runs[True]
    np.testing.assert_allclose(np.array(comp.history), np.array(eager.history), rtol=1e-4)
    assert eager.history[-1].max() < 0.5 * eager.history[0].min()   # it learns
    for k in w_eager:
        torch.testing.assert_close(w_comp[k], w_eager[k], rtol=1e-4, atol=1e-5)
        assert torch.equal(w_again[k], w_comp[k])                    # same seeds, same graph: same bits


def test_learning_rate_is_data_not_a_constant_of_the_graph():
    x, y = data()
    Trainer(Tiny(2), mse, lr=1e-1).fit((x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=1)
    frozen = Tiny(2, seed=3)
    before = weights(frozen)
    res = Trainer(frozen, mse, lr=0.0).fit((x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=2)
    assert res.steps == 16
    for k, v in weights(frozen).items():
        assert torch.equal(v, before[k])                              # lr 0: the second model did not move
    moved = Tiny(2, seed=3)
    Trainer(moved, mse, lr=1e-2).fit((x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=1,
                                     lrs=np.r_[np.zeros(7), 1e-2])    # a schedule: only the 8th step moves
    assert not torch.equal(moved.net[0].weight, before["net.0.weight"])


def test_early_stopping_keeps_each_chains_best_weights():
    x, y = data(chains=3)
    model = Tiny(3)
    # Held-out scores we choose: chain 0 is best at epoch 2, chain 1 at epoch 4, chain 2 keeps improving.
    table = torch.tensor([[5.0, 5, 5], [1, 4, 4], [2, 3, 3], [3, 1, 2], [4, 2, 1.5], [5, 3, 1.2]], dtype=torch.float64)
    seen, epoch = [], iter(range(len(table)))

    def score():
        seen.append(weights(model))
        return (table[next(epoch)],)

    stop = EarlyStopping(3, patience=2, min_rel_improvement=0.0, min_epochs=1)
    res = Trainer(model, mse, lr=1e-2, compile=False).fit((x, y), torch.Generator().manual_seed(0), batch=64,
                                                          max_epochs=6, stop=stop, score=score)
    np.testing.assert_array_equal(res.epochs, [4, 6, 6])   # 2 stale epochs stop chains 0 (after 4) and 1 (after 6)
    np.testing.assert_array_equal(res.converged, [True, True, False])
    np.testing.assert_array_equal(res.scores[0], [1, 1, 1.2])
    final = weights(model)
    for chain, best_epoch in enumerate([1, 3, 5]):
        for k, v in final.items():
            assert torch.equal(v[chain], seen[best_epoch][k][chain]), (chain, k)
    assert not torch.equal(final["net.0.weight"][0], seen[-1]["net.0.weight"][0])   # not simply the last epoch


def test_min_epochs_and_relative_improvement():
    stop = EarlyStopping(1, patience=2, min_rel_improvement=0.1, min_epochs=4)
    losses = [10.0, 9.5, 9.2, 9.1, 8.9]            # never 10% better than 10: stale from epoch 2, but min_epochs=4
    active = []
    for e, v in enumerate(losses):
        better = stop.update(e, (torch.tensor([v]),))
        assert bool(better) == (e < 4)              # the best so far, until the chain has stopped
        active.append(bool(stop.active))
    assert active == [True, True, True, False, False]


def test_accuracy_stopping_target_patience_and_ties():
    stop = AccuracyStopping(2, patience=2, target=0.9)
    acc = lambda a, b: (torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))  # noqa: E731
    assert stop.update(0, acc([0.5, 0.5], [1.0, 1.0])).tolist() == [True, True]
    assert stop.update(1, acc([0.5, 0.95], [0.9, 1.1])).tolist() == [True, True]   # a tie goes to the lower loss
    assert stop.active.tolist() == [True, False]                                     # chain 1 reached the target
    assert stop.update(2, acc([0.5, 0.5], [0.95, 1.0])).tolist() == [False, False]
    stop.update(3, acc([0.4, 0.5], [2.0, 1.0]))
    assert stop.active.tolist() == [False, False]                                    # two stale epochs


def test_accuracy_stopping_waits_for_min_epochs():
    stop = AccuracyStopping(1, patience=1, target=0.5, min_epochs=3)
    for e in range(4):                               # at the target from epoch 0, stale from epoch 1
        stop.update(e, (torch.tensor([0.9], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)))
        assert bool(stop.active) == (e < 2), e       # but it trains epochs 0, 1, 2


def test_neural_families_share_one_training_config():
    """VAE, transformer and classifier configs inherit TrainingConfig's fields: one description and one set of
    constraints each; a family restates a default (and why), never the field; `kind` stays first."""
    from model_collapse.families.transformer_config import TransformerConfig
    from model_collapse.families.vae_config import VAEConfig
    from model_collapse.nn.config import ClassifierConfig, TrainingConfig
    shared = {k: f for k, f in TrainingConfig.model_fields.items() if k != "kind"}
    assert {"lr", "batch", "epochs", "patience", "device", "precision", "compile", "threads"} <= set(shared)
    for cls in (VAEConfig, TransformerConfig, ClassifierConfig):
        assert issubclass(cls, TrainingConfig) and next(iter(cls.model_fields)) == "kind"
        for name, base in shared.items():
            f = cls.model_fields[name]
            assert f.description.startswith(base.description) and f.metadata == base.metadata, (cls, name)
            assert f.annotation == base.annotation, (cls, name)
    with pytest.raises(ValueError, match="early stopping needs held-out data"):
        VAEConfig(val_fraction=0)
    assert ClassifierConfig(val_fraction=0).max_epochs == 30       # the classifier then runs max_epochs


def test_chain_batched_training_equals_separate_trainings():
    x, y = data(chains=3, n=96)
    together = Tiny(3)
    apart = [Tiny(1) for _ in range(3)]
    for s, m in enumerate(apart):   # chain s of the batched module = model s
        m.load_state_dict({k: v[s:s + 1] for k, v in together.state_dict().items()})
    gen = torch.Generator().manual_seed(0)
    for compile in (False, True):
        trainers = [Trainer(together, mse, lr=1e-2, compile=compile)]
        trainers += [Trainer(m, mse, lr=1e-2, compile=compile) for m in apart]
        for _ in range(2):
            inputs = trainers[0].batches((x, y), 32, gen)         # (steps, S, B, ...)
            loss = trainers[0].epoch(inputs)
            alone = [t.epoch([i[:, s:s + 1] for i in inputs]) for s, t in enumerate(trainers[1:])]
            torch.testing.assert_close(loss, torch.cat(alone), rtol=1e-5, atol=1e-6)
    for s, m in enumerate(apart):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(together.state_dict()[k][s:s + 1], v, rtol=1e-5, atol=1e-6)


def test_divergence_names_the_chains_and_what_to_lower():
    x, y = data(chains=3)
    x[1, 5, 0] = float("nan")                       # chain 1 only
    with pytest.raises(DivergenceError, match=r"chain\(s\) \[1\].*lower model\.lr"):
        Trainer(Tiny(3), mse, lr=1e-2, compile=False, name="tiny", lr_key="model.lr").fit(
            (x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=2)
    x, y = data(chains=2)
    with pytest.raises(DivergenceError, match="non-finite"):
        Trainer(Tiny(2), mse, lr=1e12, compile=False).fit((x, y * 1e20), torch.Generator().manual_seed(0),
                                                          batch=32, max_epochs=3)


def test_compile_failure_warns_once_and_trains_eagerly(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(Trainer, "_failed", set())
    x, y = data()
    fell, eager = Tiny(2), Tiny(2)
    with pytest.warns(UserWarning, match="training the tiny eagerly") as caught:
        Trainer(fell, mse, lr=1e-2, name="tiny").fit((x, y), torch.Generator().manual_seed(2), batch=32, max_epochs=2)
    assert len([w for w in caught if "eagerly" in str(w.message)]) == 1
    Trainer(eager, mse, lr=1e-2, compile=False).fit((x, y), torch.Generator().manual_seed(2), batch=32, max_epochs=2)
    for k, v in weights(eager).items():
        assert torch.equal(weights(fell)[k], v)     # the fallback is exactly the eager path


def test_step_budget_and_noise_inputs():
    x, y = data()
    seen = []

    def noisy(model, x, y, eps):
        seen.append(eps.shape)
        return mse(model, x + 0 * eps[..., :1], y)
    res = Trainer(Tiny(2), noisy, lr=1e-2, compile=False).fit(
        (x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=100, noise=(3,), max_steps=11)
    assert res.steps == 11 and len(seen) == 11 and res.epochs.tolist() == [2, 2]
    assert seen[0] == (2, 32, 3)


def test_bf16_autocast_trains_and_keeps_fp32_weights():
    x, y = data()
    model = Tiny(2)
    res = Trainer(model, mse, lr=3e-2, precision="bf16").fit(
        (x, y), torch.Generator().manual_seed(0), batch=32, max_epochs=5, stop=EarlyStopping(2, 50),
        score=lambda: evaluate(model, mse, (x, y)))
    assert np.isfinite(res.history).all() and (res.history[-1] < 0.5 * res.history[0]).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_cpu():
    x, y = data()
    cpu, gpu = Tiny(2), Tiny(2).cuda()
    for m, d in ((cpu, "cpu"), (gpu, "cuda")):
        Trainer(m, mse, lr=1e-2).fit((x.to(d), y.to(d)), torch.Generator().manual_seed(0), batch=32, max_epochs=2)
    for k, v in weights(cpu).items():
        torch.testing.assert_close(weights(gpu)[k].cpu(), v, rtol=1e-3, atol=1e-4)
