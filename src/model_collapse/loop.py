"""The generation loop: the one place where data flows from source to store.

    source --> regime builds generation g's training set --> model.fit
           --> model.sample --> filter --> metrics --> run store
"""

from __future__ import annotations

import signal
import time

import numpy as np
from tqdm import tqdm

from .errors import DivergenceError
from .families import FAMILIES
from .filters import FILTERS
from .metrics import Context, metric_impl
from .regimes import REGIMES
from .rng import Seeds
from .sources import SOURCES


def build(exp):
    """Instantiate the source, model family, regime and filter an experiment names."""
    source = SOURCES[exp.source.kind][1](exp.source, exp.chains)
    model = FAMILIES[exp.model.kind][1](exp.model, source, exp.chains)
    regime = REGIMES[exp.regime.kind][1](exp.regime)
    filt = FILTERS[exp.filter.kind][1](exp.filter)
    return source, model, regime, filt


def _prefixed(prefix: str, arrays: dict) -> dict:
    """Copy arrays under a key prefix (copies: later fits must not alter a pending checkpoint)."""
    return {prefix + k: np.array(v, copy=True) for k, v in arrays.items()}


def _unprefixed(prefix: str, arrays: dict) -> dict:
    """The arrays stored under a key prefix, prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check_finite(columns: dict[str, np.ndarray], g: int) -> None:
    """Refuse to record a generation whose fitted parameters are NaN or infinite."""
    bad = [k for k, v in columns.items() if not np.all(np.isfinite(v))]
    if bad:
        raise DivergenceError(
            f"generation {g}: the fit produced non-finite values in {', '.join(bad)}; the run stopped "
            "at the last good generation (resume it after changing settings, e.g. a lower learning rate)")


def run_generations(exp, store, progress: bool | None = None) -> int:
    """Run (or continue) an experiment into a RunStore; returns the last complete generation."""
    seeds = Seeds(exp.seed)
    source, model, regime, filt = build(exp)
    # A metric is a function, or a class whose instance keeps state (with state_dict to resume).
    metrics = {m: metric_impl(m) for m in exp.metrics}
    metrics = {m: (fn() if isinstance(fn, type) else fn) for m, fn in metrics.items()}
    stateful = {m: fn for m, fn in metrics.items() if hasattr(fn, "state_dict")}
    reference = source.reference(exp.reference_n, seeds.rng("reference"))
    real = source.real(regime.size(0), seeds.rng("real"))
    regime.first(real)

    def draw(g):
        """Generation g's filtered samples (deterministic given the fitted model)."""
        raw = model.sample(regime.samples_needed(g), seeds.rng("sample", g))
        return filt(raw, model, seeds.rng("filter", g))

    start, samples, state = 0, None, None
    ckpt = store.latest_checkpoint()
    if ckpt is not None:
        last = int(ckpt["__generation"])
        model.load_state_dict(_unprefixed("model/", ckpt))
        regime.load_state_dict(_unprefixed("regime/", ckpt))
        for m, fn in stateful.items():
            fn.load_state_dict(_unprefixed(f"metric/{m}/", ckpt))
        state, start = _unprefixed("", ckpt), last + 1
        samples = draw(last) if start < exp.generations else None
    done, last_save = start - 1, time.monotonic()
    final = exp.generations - 1
    # SIGTERM stops like Ctrl-C; SIGINT is re-armed because a shell starts background jobs
    # with it ignored, and a run must always be stoppable into a resumable state.
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for g in tqdm(range(start, exp.generations), disable=None if progress is None else not progress,
                      initial=start, total=exp.generations,
                      desc=exp.name or "generations", leave=False):
            t0 = time.perf_counter()
            train = real if g == 0 else regime.next(g, samples, real, source, seeds.rng("regime", g))
            model.fit(train, seeds.rng("fit", g))
            t1 = time.perf_counter()
            samples = draw(g)
            t2 = time.perf_counter()
            rows, times = {}, {"fit": t1 - t0, "sample": t2 - t1}
            times.update(getattr(model, "timings", {}))  # a family's own breakdown, e.g. VAE vs classifier
            store.generation = g
            if g % exp.record_every == 0 or g == final:
                ctx = Context(g, model, samples, train, source, reference, seeds.rng("metric", g), store, exp)
                for name, fn in metrics.items():
                    tm = time.perf_counter()
                    rows.update(fn(ctx))
                    times[f"metric:{name}"] = time.perf_counter() - tm
            _check_finite(model.params(), g)
            if g in exp.snapshots or g == final:
                store.save_snapshot(g, model.state_dict())
            new_state = {**_prefixed("model/", model.state_dict()), **_prefixed("regime/", regime.state_dict())}
            for m, fn in stateful.items():
                new_state.update(_prefixed(f"metric/{m}/", fn.state_dict()))
            if rows:
                store.add_rows(g, rows, exp.chains)
            state, done = new_state, g
            t3 = time.perf_counter()
            if g == final or time.monotonic() - last_save >= exp.checkpoint_seconds:
                store.checkpoint(g, state)
                store.set_status("running", g)
                last_save = time.monotonic()
            times["io"] = time.perf_counter() - t3
            if time.perf_counter() - t0 > 0.05:  # slow generations only: 10,000 fast ones need no log
                store.add_timing(g, times)
    except (KeyboardInterrupt, DivergenceError) as e:
        if state is not None and done >= 0:
            store.checkpoint(done, state)
        kind = "failed" if isinstance(e, DivergenceError) else "interrupted"
        store.set_status(kind, done, message=str(e) or kind)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    store.set_status("complete", done)
    return done
