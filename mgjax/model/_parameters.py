"""Flat, by-name access to the parameters of an `MgT2DModel`.

Every parameter has a unique name across the submodels, so a model can be read and written as
a `{name: value}` mapping (configs, CLI overrides, fit results) while staying a PyTree.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._coupled import MgT2DModel
from ._parameter import ParameterInfo


def parameter_infos() -> dict[str, ParameterInfo]:
    """Metadata of every parameter, by name, in model order."""
    return {p.name: p for p in MgT2DModel.parameter_infos()}


def _owner(name: str) -> str:
    infos = parameter_infos()
    if name not in infos:
        raise KeyError(
            f"unknown parameter {name!r}. Known parameters: {', '.join(infos)} "
            "(see mgjax.parameter_table())"
        )
    return infos[name].module


def parameter_names() -> tuple[str, ...]:
    return tuple(parameter_infos())


def get_parameter(model: MgT2DModel, name: str) -> Any:
    """The value of parameter `name` in `model`."""
    return getattr(getattr(model, _owner(name)), name)


def get_parameters(model: MgT2DModel, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """`{name: value}` for `names` (default: all)."""
    return {n: get_parameter(model, n) for n in (names or parameter_names())}


class ParameterRangeWarning(UserWarning):
    """A parameter set outside its documented plausible range (`parameter_table()`)."""


def set_parameters(
    model: MgT2DModel, values: Mapping[str, Any] | None = None, *, strict: bool = False, **kw: Any
) -> MgT2DModel:
    """A copy of `model` with the given parameters replaced (values may be traced arrays).

    A concrete value outside the parameter's documented range (`lower`–`upper` of
    `parameter_table()`; NaN and infinities too) warns (`ParameterRangeWarning`); with
    `strict=True` it is refused (`ValueError`). Traced values are not checked."""
    values = {**(values or {}), **kw}
    if not values:
        return model
    for name, value in values.items():
        _check_range(name, value, strict)
    names = list(values)
    owners = [_owner(n) for n in names]
    new = [jnp.asarray(values[n], dtype=jnp.float64) for n in names]
    return eqx.tree_at(
        lambda m: [getattr(getattr(m, o), n) for o, n in zip(owners, names)], model, new
    )


def _check_range(name: str, value: Any, strict: bool) -> None:
    """Warn of (or, `strict`, refuse) a concrete value outside the documented range (NaN and
    infinities included)."""
    info = parameter_infos().get(name)
    if info is None or isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value, dtype=float)
    if np.all((array >= info.lower) & (array <= info.upper)):
        return
    message = (
        f"parameter {name!r} = {np.array2string(array, threshold=4)} {info.unit} is outside its "
        f"documented range {info.lower:g}–{info.upper:g} (docs/model.md)"
    )
    if strict:
        raise ValueError(message + "; give a value inside it or drop strict=True")
    warnings.warn(message, ParameterRangeWarning, stacklevel=3)


def parameter_table(model: MgT2DModel | None = None) -> pd.DataFrame:
    """One row per parameter: module, unit, value (of `model`, default the healthy reference),
    default, bounds, scale and source."""
    rows = []
    for name, info in parameter_infos().items():
        row = info._asdict()
        row["value"] = float(get_parameter(model, name)) if model is not None else info.default
        rows.append(row)
    cols = [
        "name",
        "module",
        "value",
        "unit",
        "default",
        "lower",
        "upper",
        "log_scale",
        "description",
        "source",
    ]
    return pd.DataFrame(rows)[cols]
