"""Parameters carry their metadata: unit, default, plausible bounds, scale and source.

Every physiological submodel declares its parameters as dataclass fields made with
[`parameter`][], so that the name, the unit, the default, the bounds and the literature
source live in one place, next to the equation that uses them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp


def _as_float64(x: Any):
    return jnp.asarray(x, dtype=jnp.float64)


class ParameterInfo(NamedTuple):
    """Metadata of one model parameter (the columns of a PEtab parameter table)."""

    name: str
    module: str
    unit: str
    default: float
    lower: float
    upper: float
    log_scale: bool
    description: str
    source: str


def parameter(
    default: float,
    unit: str,
    bounds: tuple[float, float],
    description: str,
    source: str,
    *,
    log_scale: bool | None = None,
) -> Any:
    """Declare a model parameter as an `eqx.Module` field.

    **Arguments:**

    - `default`: value of the healthy reference subject, in `unit`.
    - `unit`: physical unit, e.g. `"mmol/L"`, `"1/min"`, `"-"` for dimensionless.
    - `bounds`: plausible physiological range `(lower, upper)` used as optimisation bounds.
    - `description`: one line saying what the parameter is.
    - `source`: where the default comes from (paper, or "calibrated: <target>").
    - `log_scale`: optimise in log space. Defaults to `True` when `lower > 0`.

    The field is converted to a float64 array, so that changing its value never
    recompiles a jitted function.
    """
    lower, upper = bounds
    if not lower <= default <= upper:
        raise ValueError(f"default {default} outside bounds {bounds} ({description})")
    if log_scale is None:
        log_scale = lower > 0
    return eqx.field(
        default=default,
        converter=_as_float64,
        metadata=dict(
            unit=unit,
            bounds=(float(lower), float(upper)),
            description=description,
            source=source,
            log_scale=bool(log_scale),
            is_parameter=True,
        ),
    )


def parameter_fields(module: eqx.Module | type) -> list[dataclasses.Field]:
    """The dataclass fields of `module` that are model parameters."""
    return [f for f in dataclasses.fields(module) if f.metadata.get("is_parameter", False)]


def parameter_infos(module: eqx.Module | type, module_name: str) -> list[ParameterInfo]:
    """`ParameterInfo` for each parameter field of a submodel class or instance."""
    out = []
    for f in parameter_fields(module):
        m = f.metadata
        out.append(
            ParameterInfo(
                name=f.name,
                module=module_name,
                unit=m["unit"],
                default=float(f.default),
                lower=m["bounds"][0],
                upper=m["bounds"][1],
                log_scale=m["log_scale"],
                description=m["description"],
                source=m["source"],
            )
        )
    return out
