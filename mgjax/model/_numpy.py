"""A plain-Python mirror of a model, for evaluating the same equations with NumPy.

Equinox binds methods on attribute access, which is free under `jax.jit` (it happens once, at
trace time) but costs microseconds per call in eager NumPy code. The mirror has the same
methods and float attributes on ordinary Python classes, so the SciPy reference solve and the
SciPy peer in the benchmarks run the model's own equations at NumPy speed.
"""

from __future__ import annotations

import dataclasses
import types
from functools import cache
from typing import Any

import equinox as eqx
import numpy as np

from ._base import Mechanism
from ._coupled import MgT2DModel


class NumPyMirror:
    """Base of the plain NumPy mirrors that `to_numpy` builds."""


#: What the protocols' methods receive: the model, or its NumPy mirror (the SciPy reference).
ModelLike = MgT2DModel | NumPyMirror


@cache
def _plain_class(cls: type) -> type:
    namespace: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__.startswith(("equinox", "abc")):
            continue
        for name, value in vars(klass).items():
            if name.startswith("__") and name != "__getitem__":
                continue
            # a mechanism is its plain method here; `to_numpy` binds overrides per instance
            namespace[name] = value.function if isinstance(value, Mechanism) else value
    return type(f"{cls.__name__}NumPy", (NumPyMirror,), namespace)


def to_numpy(module: Any) -> Any:
    """Convert an `eqx.Module` tree (a model or submodel) to its plain NumPy mirror."""
    if isinstance(module, eqx.Module):
        plain = _plain_class(type(module))
        obj = plain.__new__(plain)
        for field in dataclasses.fields(module):
            setattr(obj, field.name, to_numpy(getattr(module, field.name)))
        for name, replacement in getattr(module, "overrides", {}).items():
            setattr(obj, name, types.MethodType(replacement, obj))  # as given: callable
        return obj
    if isinstance(module, tuple) and hasattr(module, "_fields"):  # NamedTuple
        return type(module)(*[to_numpy(m) for m in module])
    if isinstance(module, (list, tuple)):
        return type(module)(to_numpy(m) for m in module)
    if isinstance(module, dict):
        return {k: to_numpy(v) for k, v in module.items()}
    if module is None or isinstance(module, (types.FunctionType, bool, str)):
        return module
    arr = np.asarray(module)
    return float(arr) if arr.ndim == 0 else arr


class _ScalarMath:
    """The array namespace the model needs, on Python floats (`math`), for per-call speed."""

    exp = staticmethod(__import__("math").exp)
    log = staticmethod(__import__("math").log)
    sqrt = staticmethod(__import__("math").sqrt)

    @staticmethod
    def logaddexp(a: float, b: float) -> float:
        import math

        hi, lo = (a, b) if a > b else (b, a)
        return hi + math.log1p(math.exp(lo - hi))

    @staticmethod
    def stack(values) -> np.ndarray:
        return np.array(values, dtype=np.float64)

    @staticmethod
    def ones_like(x) -> float:
        return 1.0

    @staticmethod
    def zeros(n: int, dtype=None) -> list:
        return [0.0] * n

    @staticmethod
    def concatenate(parts) -> list:
        out: list = []
        for p in parts:
            out.extend(list(p))
        return out


#: Namespace for evaluating a `to_numpy` mirror on Python floats:
#: `plain.rates(y.tolist(), inputs, scalar_math)`.
scalar_math = _ScalarMath()
