"""The benchmarks' one timing rule: a first call (it compiles) and the best of warm calls.

from timing import timed  # a benchmark run as a script finds its sibling
"""

from __future__ import annotations

import time

import jax
import numpy as np


def timed(fn, *args, repeat: int = 5) -> tuple[float, float]:
    """(seconds of the first call, compile included; best seconds of `repeat` warm calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best
