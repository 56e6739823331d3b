"""Randomness: one SeedSequence per run, one stream per (role, generation).

Streams are derived, never carried: generation g's fit draws the same numbers
whether the run went straight through or was resumed at g, so a resumed run
reproduces an uninterrupted one exactly. No integer ``random_state`` is ever
handed to a library's sampler (scikit-learn rebuilds the same RNG from an int
on every call, which would freeze samples across generations).
"""

from __future__ import annotations

import numpy as np
from numpy.random.bit_generator import ISeedSequence

# Fixed role ids: the spawn key must not depend on dict ordering or names.
ROLES = {"real": 0, "reference": 1, "regime": 2, "fit": 3, "sample": 4,
         "filter": 5, "metric": 6, "init": 7, "grid": 8, "classifier": 9}


class Seeds:
    """Derives independent generators for (role, generation) from one seed."""

    BATCH = 256   # generations whose stream states are derived together

    def __init__(self, seed: int):
        self.seed = int(seed)
        words = _words(self.seed)
        self._run = words + [0] * (4 - len(words))   # numpy pads the run entropy to the pool size
        self._blocks: dict[int, tuple[int, np.ndarray]] = {}   # role -> (first generation, states)

    def sequence(self, role: str, generation: int = 0) -> np.random.SeedSequence:
        """The SeedSequence for one role at one generation."""
        return np.random.SeedSequence(self.seed, spawn_key=(ROLES[role], int(generation)))

    def rng(self, role: str, generation: int = 0) -> np.random.Generator:
        """A fresh numpy Generator for one role at one generation: exactly
        Generator(PCG64(self.sequence(role, generation))), built ~5x faster."""
        g = int(generation)
        if not 0 <= g < 2 ** 31:
            return np.random.Generator(np.random.PCG64(self.sequence(role, g)))
        r = ROLES[role]
        first, block = self._blocks.get(r, (-1, None))
        if block is None or not first <= g < first + len(block):
            # Blocks grow (256, 512, ... 4,096): a short run derives little, a long one ~0.07 us a stream.
            size = self.BATCH if block is None else min(2 * len(block), 16 * self.BATCH)
            gens = np.arange(g, g + size, dtype=np.uint64)
            words = np.zeros((size, len(self._run) + 2), np.uint32)
            words[:, :len(self._run)] = self._run
            words[:, -2], words[:, -1] = r, gens
            first, block = g, seed_states(words).view(np.uint64)
            self._blocks[r] = (first, block)
        return np.random.Generator(np.random.PCG64(_Derived(block[g - first])))

    def torch_seed(self, role: str, generation: int = 0) -> int:
        """A 63-bit integer seed for a torch.Generator, derived the same way."""
        return int(self.sequence(role, generation).generate_state(2, np.uint64)[0] >> np.uint64(1))

    def lazy(self, role: str, generation: int = 0) -> "LazyRng":
        """A generator for (role, generation) built on first use (most generations of a cheap
        family never touch their regime or metric stream, and building one costs ~10 us)."""
        return LazyRng(self, role, generation)


class LazyRng:
    """Stands in for the numpy Generator of one (role, generation) until a method is called."""

    __slots__ = ("_args", "_rng")

    def __init__(self, seeds: Seeds, role: str, generation: int):
        self._args, self._rng = (seeds, role, generation), None

    def __getattr__(self, name):
        if self._rng is None:
            seeds, role, generation = self._args
            self._rng = seeds.rng(role, generation)
        return getattr(self._rng, name)


# numpy's SeedSequence (numpy/random/bit_generator.pyx), vectorised over many spawn keys: building
# one SeedSequence and PCG64 costs ~10 us, a fifth of a W1 generation; the states below are the
# very words SeedSequence.generate_state gives (tests/test_engine.py checks them against numpy).
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_U = np.uint32


def _words(value: int) -> list[int]:
    """A non-negative integer as little-endian 32-bit words (0 -> [0]), as numpy coerces entropy."""
    out = [value & 0xFFFFFFFF]
    value >>= 32
    while value:
        out.append(value & 0xFFFFFFFF)
        value >>= 32
    return out


def _hashmix(value, h):
    value = (value ^ h) * (h * _U(_MULT_A))
    return value ^ (value >> _U(16)), h * _U(_MULT_A)


def _mix(x, y):
    r = _U(_MIX_L) * x - _U(_MIX_R) * y
    return r ^ (r >> _U(16))


def seed_states(words: np.ndarray, n_words: int = 8) -> np.ndarray:
    """SeedSequence(entropy).generate_state(n_words) for each row of assembled entropy words (B, E >= 4)."""
    with np.errstate(over="ignore"):
        h = np.full(len(words), _INIT_A, _U)
        pool = []
        for i in range(4):
            v, h = _hashmix(words[:, i], h)
            pool.append(v)
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    v, h = _hashmix(pool[src], h)
                    pool[dst] = _mix(pool[dst], v)
        for src in range(4, words.shape[1]):
            for dst in range(4):
                v, h = _hashmix(words[:, src], h)
                pool[dst] = _mix(pool[dst], v)
        out, hb = np.empty((len(words), n_words), _U), _U(_INIT_B)
        for i in range(n_words):
            v = (pool[i % 4] ^ hb) * (hb * _U(_MULT_B))
            hb = hb * _U(_MULT_B)
            out[:, i] = v ^ (v >> _U(16))
    return out


class _Derived(ISeedSequence):
    """A seed sequence whose state words are already known (PCG64 asks for four uint64)."""

    __slots__ = ("state",)

    def __init__(self, state: np.ndarray):
        self.state = state   # (4,) uint64: the 8 uint32 words of generate_state(8)

    def generate_state(self, n_words, dtype=np.uint32):
        """The precomputed words, as numpy's SeedSequence would give them."""
        if dtype is np.uint64:   # PCG64's call, on every generator built: no dtype parsing
            return self.state[:n_words]
        words = self.state if np.dtype(dtype) == np.uint64 else self.state.view(np.uint32)
        return words[:n_words]
