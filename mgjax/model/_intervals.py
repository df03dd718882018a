"""Interval observables: quantities measured over a day rather than at an instant (24-h urinary
Mg²⁺). One observed at time t is the difference of a cumulative state between t and t + 1 day,
so a simulation must sample both ends. Every reader of an interval observable (fitting, batch
padding, synthetic data, the CLI's simulations) goes through these functions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from jaxtyping import Float

#: Length of an interval observable's window (min): one day.
INTERVAL_MINUTES = 1440.0

#: Observables measured over an interval [t, t + 1 day] (the value is a difference of a
#: cumulative state), with the state they difference.
INTERVAL_OBSERVABLES = {"urinary_mg_24h": "urinary_mg_cumulative"}


def is_interval(observable: str) -> bool:
    """Whether `observable` is read over [t, t + 1 day] rather than at t."""
    return observable in INTERVAL_OBSERVABLES


def source_observable(observable: str) -> str:
    """The simulated quantity `observable` is read from (the cumulative state of an interval
    observable; the observable itself otherwise)."""
    return INTERVAL_OBSERVABLES.get(observable, observable)


def interval_end(observable: str, t: float) -> float:
    """The second sampling time (min) of `observable` observed at `t` (min): t + 1 day for an
    interval observable, t itself otherwise."""
    return float(t) + INTERVAL_MINUTES if is_interval(observable) else float(t)


def sampling_times(observations: Iterable[tuple[str, float]]) -> Float[np.ndarray, " times"]:
    """The sorted distinct times (min) a simulation must sample to read each (observable, t)
    pair: every t, and the end of each interval observable's window."""
    grid = set()
    for observable, t in observations:
        grid.add(float(t))
        grid.add(interval_end(observable, t))
    return np.array(sorted(grid))


def interval_value(interval: Any, start: Any, end: Any, xp: Any = np) -> Any:
    """The observed value from the source quantity at t (`start`) and at `interval_end`
    (`end`): end − start where `interval` (a bool or a bool array, see `is_interval`), start
    elsewhere. `xp`: the array namespace (`numpy` or `jax.numpy`)."""
    return xp.where(interval, end - start, start)
