"""Extension points: replace or augment any mechanism of the model without editing mgjax.

Every mechanism of the model is a method of one submodel (`mgjax.mechanisms()` lists them,
e.g. `"renal_magnesium.trpm6_magnesium_response"`). `replace_mechanism` returns a copy of a
model whose submodel calls a user function or Equinox module instead. The replacement is held
in the submodel's `overrides` field (composition: the submodel's class stays the same, and
each of its methods dispatches to its override), so its arrays (an MLP's weights) are leaves
of the model PyTree: `jax.grad` with respect to the model reaches them, `eqx.filter_jit`
traces them, and a different set of weights never recompiles.

The same can be done by hand, the Equinox way: subclass the submodel, override the method,
and put an instance into the model with `eqx.tree_at` (docs/embedding.md).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx

from ._base import AbstractSubmodel, is_mechanism
from ._coupled import MgT2DModel


def _methods(cls: type) -> list[str]:
    return [name for name, value in inspect.getmembers(cls) if is_mechanism(name, value)]


def mechanisms() -> dict[str, str]:
    """Every replaceable mechanism, `"submodel.method"` → the first line of its docstring."""
    out = {}
    for sub, cls in MgT2DModel.submodel_classes.items():
        for method in _methods(cls):
            doc = inspect.getdoc(getattr(cls, method)) or ""
            out[f"{sub}.{method}"] = doc.splitlines()[0] if doc else ""
    return out


def replace_mechanism(
    model: MgT2DModel, mechanism: str, replacement: Callable[..., Any]
) -> MgT2DModel:
    """A copy of `model` in which `mechanism` (`"submodel.method"`) calls `replacement`.

    **Arguments:**

    - `model`: an `MgT2DModel` (its parameter values are kept).
    - `mechanism`: which method, e.g. `"renal_magnesium.trpm6_magnesium_response"`; see
      `mgjax.mechanisms()` for the list and each method's docstring for its arguments and units.
    - `replacement`: called as `replacement(submodel, *args, **kwargs)` with the arguments of
      the method it replaces (model units), returning what the method returns. An
      `eqx.Module` with a `__call__` (e.g. wrapping an `eqx.nn.MLP`) makes its arrays
      trainable model parameters; a plain function is static. To *augment* rather than
      replace, call the original inside it, e.g.
      `RenalMagnesium.trpm6_magnesium_response(kidney, mg_free) * correction`.

    **Returns:** the new model. It is a PyTree like any other model: pass it through
    `eqx.filter_jit` / `eqx.filter_grad` (a plain `jax.jit` needs every leaf to be an array;
    an MLP's activation function is not).
    """
    if not isinstance(model, MgT2DModel):
        raise TypeError(f"expected an MgT2DModel, got {type(model).__name__}")
    submodel_name, _, method = mechanism.partition(".")
    known = mechanisms()
    if mechanism not in known:
        raise KeyError(
            f"unknown mechanism {mechanism!r}; replaceable mechanisms: {', '.join(known)}"
        )
    if not callable(replacement):
        raise TypeError(f"the replacement for {mechanism} must be callable, got {replacement!r}")
    submodel: AbstractSubmodel = getattr(model, submodel_name)
    overrides = {**submodel.overrides, method: replacement}
    new = dataclasses.replace(submodel, overrides=overrides)
    return eqx.tree_at(lambda m: getattr(m, submodel_name), model, new)
