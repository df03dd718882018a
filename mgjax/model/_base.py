"""The shared contract of the physiological submodels."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx

from ._parameter import ParameterInfo, parameter_infos


class Mechanism:
    """A submodel method that can be replaced (`mgjax.replace_mechanism`): read from an
    instance, it is the replacement held in the instance's `overrides` field if there is one,
    else the method; read from the class, it is always the method itself, so a replacement can
    call the original (`RenalMagnesium.trpm6_magnesium_response(kidney, mg)`) to augment it.
    Every public method of a submodel class is one (installed when the class is defined)."""

    def __init__(self, name: str, function: Callable[..., Any]):
        self.name = name
        self.function = function
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __get__(self, instance: Any, owner: type | None = None) -> Callable[..., Any]:
        if instance is None:
            return self.function
        replacement = instance.overrides.get(self.name)
        if replacement is None:
            return types.MethodType(self.function, instance)
        # not a method object: Equinox would hold a replacement module's arrays as static
        return functools.partial(replacement, instance)


def is_mechanism(name: str, value: Any) -> bool:
    """Whether class attribute `name` = `value` is a replaceable mechanism: a public method."""
    skip = set(dir(eqx.Module)) | {"parameter_infos"}
    return not name.startswith("_") and name not in skip and inspect.isfunction(value)


class AbstractSubmodel(eqx.Module):
    """One physiological module: it owns its parameters (dataclass fields made with
    `parameter`) and its states (`state_names`, in `state_units`).

    Submodels are written against an array namespace `xp` (`jax.numpy` or `numpy`), so
    the same equations run inside Diffrax and, for cross-checks and peer benchmarks,
    inside SciPy's `solve_ivp`.

    `overrides`: user replacements of its mechanisms, method name → `replacement(submodel,
    *args)` (`mgjax.replace_mechanism`; empty by default). A field, so an Equinox module
    there is part of the model PyTree (its weights are trainable); each public method is a
    `Mechanism` that dispatches to it.
    """

    name: ClassVar[str] = ""
    state_names: ClassVar[tuple[str, ...]] = ()
    state_units: ClassVar[tuple[str, ...]] = ()

    overrides: dict[str, Callable[..., Any]] = eqx.field(default_factory=dict, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if is_mechanism(name, value):
                setattr(cls, name, Mechanism(name, value))

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
