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
from .filters.stage import filtered_sample
from .interfaces import Reports, Stateful, Timed
from .metrics import Context, metric_entry
from .plugins import find
from .rng import Seeds


def build(exp):
    """Instantiate the source, model family, regime and filter (None: no filter) an experiment names."""
    source = exp.source.build(exp.chains)
    model = exp.model.build(source, exp.chains)
    return source, model, exp.regime.build(), exp.filter.build(source)


def build_metrics(exp) -> dict:
    """name -> callable(ctx) with its parameters bound (stateful metrics are fresh instances)."""
    out = {}
    for entry in exp.metrics:
        name, params = metric_entry(entry)
        out[name] = find("metrics", name).instantiate(params)
    return out


def _prefixed(prefix: str, arrays: dict) -> dict:
    """Copy arrays under a key prefix (copies: later fits must not alter a pending checkpoint)."""
    return {prefix + k: np.array(v, copy=True) for k, v in arrays.items()}


def _unprefixed(prefix: str, arrays: dict) -> dict:
    """The arrays stored under a key prefix, prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check_finite(columns: dict[str, np.ndarray], g: int) -> None:
    """Refuse to record a generation whose fitted parameters are NaN or infinite."""
    try:
        if np.isfinite(np.array(list(columns.values()), float)).all():   # equal (S,) columns: one call
            return
    except ValueError:
        pass   # columns of different shapes: checked one by one below
    bad = [k for k, v in columns.items() if not np.all(np.isfinite(v))]
    if bad:
        raise DivergenceError(
            f"generation {g}: the fit produced non-finite values in {', '.join(bad)}; the run stopped "
            "at the last good generation (resume it after changing settings, e.g. a lower learning rate)")


class _Stopper:
    """Turns SIGINT/SIGTERM into a clean stop at a generation boundary.

    A signal during a short generation (or while a checkpoint is written) only sets a flag:
    the loop stops after the generation, with the model and store consistent. During a long
    generation (a VAE fit) it raises KeyboardInterrupt at once, and the loop falls back to the
    state it copied after the previous generation. SIGINT is re-armed because a shell starts
    background jobs with it ignored, and a run must always be stoppable into a resumable state.
    """

    PATIENCE = 1.0   # seconds a generation may still run after a signal before it is cut short

    def __init__(self):
        self.requested, self.since, self.busy = False, time.monotonic(), False

    def __call__(self, signum, frame):
        self.requested = True
        if not self.busy and time.monotonic() - self.since > self.PATIENCE:
            raise KeyboardInterrupt

    def __enter__(self):
        self.old = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def run_generations(exp, store, progress: bool | None = None) -> int:
    """Run (or continue) an experiment into a RunStore; returns the last complete generation."""
    seeds = Seeds(exp.seed)
    source, model, regime, filt = build(exp)
    # A metric is a function, or a class whose instance keeps state (with state_dict to resume).
    metrics = build_metrics(exp)
    # Optional hooks (interfaces.py), resolved once here, never probed per generation.
    stateful = {m: fn for m, fn in metrics.items() if isinstance(fn, Stateful)}
    filt_state = filt if isinstance(filt, Stateful) else None
    filt_columns = filt if isinstance(filt, Reports) else None
    timed = model if isinstance(model, Timed) else None
    # The finiteness check reads the family's own parameter columns: from the recorded row when a
    # metric records them all (`params` does), else from model.params().
    param_cols, param_at = list(model.params()), None
    if exp.reference == "per-chain":   # chain s's own held-out set, from (seed, chain): the same on rerun
        reference = np.stack([np.asarray(source.reference(exp.reference_n, seeds.rng("reference", 1 + s)))
                              for s in range(exp.chains)])
    else:
        reference = source.reference(exp.reference_n, seeds.rng("reference"))
    real = source.real(regime.size(0), seeds.rng("real"))
    regime.first(real)

    def draw(g):
        """Generation g's samples, filtered, and the acceptance rate per chain (deterministic given the model)."""
        n = regime.samples_needed(g)
        if filt is None:
            return model.sample(n, seeds.rng("sample", g)), None
        return filtered_sample(model, filt, n, seeds.rng("sample", g), seeds.rng("filter", g),
                               exp.filter.max_rounds, f"filter {exp.filter.kind}")

    def state_now() -> dict:
        """Copies of everything a resume needs, as of the last complete generation."""
        out = {**_prefixed("model/", model.state_dict()), **_prefixed("regime/", regime.state_dict())}
        for m, fn in stateful.items():
            out.update(_prefixed(f"metric/{m}/", fn.state_dict()))
        if filt_state is not None:   # a filter that keeps state (likelihood under the generation-0 model)
            out.update(_prefixed("filter/", filt_state.state_dict()))
        return out

    start, samples, accept = 0, None, None
    ckpt = store.latest_checkpoint()
    if ckpt is not None:
        last = int(ckpt["__generation"])
        model.load_state_dict(_unprefixed("model/", ckpt))
        regime.load_state_dict(_unprefixed("regime/", ckpt))
        for m, fn in stateful.items():
            fn.load_state_dict(_unprefixed(f"metric/{m}/", ckpt))
        if filt_state is not None:
            filt_state.load_state_dict(_unprefixed("filter/", ckpt))
        start = last + 1
        if start < exp.generations:
            samples, accept = draw(last)
    done, saved, last_save = start - 1, start - 1, time.monotonic()
    copied = None   # (generation, state) copied after a slow generation, for a stop mid-way through the next
    final = exp.generations - 1
    snapshots = set(exp.snapshots)
    stop = _Stopper()
    try:
        with stop:
            for g in tqdm(range(start, exp.generations), disable=None if progress is None else not progress,
                          initial=start, total=exp.generations, desc=exp.name or "generations", leave=False):
                t0 = time.perf_counter()
                stop.since = time.monotonic()
                train = real if g == 0 else regime.next(g, samples, real, source, seeds.lazy("regime", g))
                model.fit(train, seeds.rng("fit", g))
                t1 = time.perf_counter()
                samples, accept = draw(g)
                t2 = time.perf_counter()
                rows, spent, fitted = {}, [], None
                store.generation = g
                if g % exp.record_every == 0 or g == final:
                    if accept is not None:
                        rows["accept_rate"] = accept
                        if filt_columns is not None:
                            rows.update(filt_columns.columns())
                    ctx = Context(g, model, samples, train, source, reference, seeds.lazy("metric", g), store, exp)
                    for name, fn in metrics.items():
                        tm = time.perf_counter()
                        rows.update(fn(ctx))
                        spent.append((name, time.perf_counter() - tm))
                    if param_at is None:   # where the family's parameter columns sit in a row (fixed)
                        keys = list(rows)
                        param_at = [keys.index(c) for c in param_cols] if set(param_cols) <= set(keys) else []
                    fitted = param_at or None
                if fitted is None:
                    _check_finite(model.params(), g)
                if rows:
                    table = store.add_rows(g, rows, exp.chains)
                    if fitted is not None and not np.isfinite(table[:, fitted]).all():
                        store.pending.pop()   # never commit a diverged generation
                        _check_finite({param_cols[i]: table[:, j] for i, j in enumerate(fitted)}, g)
                if g in snapshots or g == final:
                    store.save_snapshot(g, model.state_dict())
                done = g
                t3 = time.perf_counter()
                stop.busy = True   # a signal now waits: the checkpoint must not be torn
                if g == final or stop.requested or time.monotonic() - last_save >= exp.checkpoint_seconds:
                    store.checkpoint(g, state_now())
                    store.set_status("running", g)
                    saved, last_save = g, time.monotonic()
                elif t3 - t0 > 0.05:   # slow generations: keep a copy in case the next one is cut short
                    copied = (g, state_now())
                stop.busy = False
                if stop.requested:
                    raise KeyboardInterrupt
                if t3 - t0 > 0.05:  # slow generations only: 10,000 fast ones need no log
                    times = {"fit": t1 - t0, "sample": t2 - t1, **(timed.timings if timed is not None else {}),
                             **{f"metric:{k}": v for k, v in spent}, "io": time.perf_counter() - t3}
                    store.add_timing(g, times)
    except BaseException as e:
        if not isinstance(e, (KeyboardInterrupt, Exception)):
            raise
        stop.busy = True
        try:
            last = _save_last(store, done, saved, copied)
        except OSError:   # a full disk: the last good checkpoint stays the one to resume from
            store.pending.clear()
            last = saved
        if isinstance(e, OSError):
            store.discard_uncommitted()   # frees what rows past the checkpoint took: room for the status
        kind = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        message = kind if isinstance(e, KeyboardInterrupt) else (str(e) or type(e).__name__)
        if not isinstance(e, (KeyboardInterrupt, DivergenceError)) and str(e):
            message = f"{type(e).__name__}: {e}"
        try:
            store.set_status(kind, last, message=message)
        except OSError:
            pass   # no room even for status.json: the error itself still reaches the user
        raise
    store.set_status("complete", done)
    return done


def _save_last(store, done: int, saved: int, copied) -> int:
    """After a stop: checkpoint the newest consistent state; returns the generation it holds."""
    if done == saved:
        return saved
    if copied is not None and copied[0] == done:
        store.checkpoint(done, copied[1])
        return done
    store.pending.clear()   # rows past the last checkpoint are recomputed exactly on resume
    return saved
