"""The shared contract of the physiological submodels."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx

from ._parameter import ParameterInfo, parameter_infos


class AbstractSubmodel(eqx.Module):
    """One physiological module: it owns its parameters (dataclass fields made with
    `parameter`) and its states (`state_names`, in `state_units`).

    Submodels are written against an array namespace `xp` (`jax.numpy` or `numpy`), so
    the same equations run inside Diffrax and, for cross-checks and peer benchmarks,
    inside SciPy's `solve_ivp`.
    """

    name: ClassVar[str] = ""
    state_names: ClassVar[tuple[str, ...]] = ()
    state_units: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parameter_infos(cls) -> list[ParameterInfo]:
        return parameter_infos(cls, cls.name)


def hill(x: Any, k: Any, n: Any, xp) -> Any:
    """Increasing Hill function x^n / (k^n + x^n), written to stay finite for x >= 0."""
    r = (x / k) ** n
    return r / (1.0 + r)


def softplus(x: Any, width: Any, xp) -> Any:
    """Smooth max(x, 0) with transition width `width` (same units as x)."""
    return width * xp.logaddexp(0.0, x / width)
