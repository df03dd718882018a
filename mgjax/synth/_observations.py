"""Synthetic observations: simulate a subject under a protocol at a sampling plan and add noise
from an error model — for parameter-recovery studies and virtual cohorts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..model import MgT2DModel, sampling_times
from ..protocols import AbstractProtocol
from ..solve._simulate import observed_values, simulate


def observe_protocol(
    model: MgT2DModel,
    protocol: AbstractProtocol,
    plan: Mapping[str, Sequence[float] | np.ndarray],
    *,
    noise: float = 0.05,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Noisy observations (model units) of `protocol` on `model`: for each observable in
    `plan`, its sampling times (min). Noise is proportional (`noise` × value, Gaussian);
    `noise=0` gives exact values. Columns: time, observable, value, truth."""
    rng = rng or np.random.default_rng()
    grid = sampling_times((name, t) for name, times in plan.items() for t in times)
    traj = simulate(model, protocol, np.asarray(grid))
    rows = []
    for name, times in plan.items():
        for t, value in zip(times, observed_values(traj, name, times)):
            value = float(value)
            noisy = value * (1.0 + noise * rng.standard_normal()) if noise > 0 else value
            rows.append(dict(time=float(t), observable=name, value=noisy, truth=value))
    return pd.DataFrame(rows)


def perturb(
    model: MgT2DModel, names: Sequence[str], cv: float, rng: np.random.Generator, getter: Any = None
) -> tuple[MgT2DModel, dict[str, float]]:
    """`model` with the named parameters multiplied by log-normal factors of coefficient of
    variation ≈ `cv`; returns (model, the new values)."""
    from ..model._parameters import get_parameters, set_parameters

    base = get_parameters(model, tuple(names))
    values = {n: float(v) * float(np.exp(cv * rng.standard_normal())) for n, v in base.items()}
    return set_parameters(model, values), values
