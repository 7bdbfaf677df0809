"""Derived seeds: independent, reproducible random streams from one run seed.

Every random choice of a run (a network's initialisation and shuffling, a path stage's
minibatches, a data split) draws from a stream keyed by the run seed plus what it is for, via
numpy's ``SeedSequence``; a stream therefore never depends on how many others were drawn, or
in which order.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that depends only on the integers ``keys`` (numpy's ``SeedSequence``):
    independent random streams for each (run seed, network, stage, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def network_seeds(seed: int, k: int) -> np.ndarray:
    """``k`` independent 31-bit seeds derived from ``seed``; entry ``i`` depends only on
    ``(seed, i)``, so network ``i`` is the same network whatever ``k`` is. Shape ``(k,)``."""
    return np.array([derive_seed(seed, i) >> 1 for i in range(k)], dtype=np.int64)


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """An independent numpy generator per (seed, purpose name), so streams never interact."""
    key = [int(b) for b in stream.encode()]
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))
