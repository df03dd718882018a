"""Units at the boundary: clinical data arrive in mg/dL, mEq/L, µU/mL, nmol/L, %, … and are
converted explicitly, once, where they enter; the model works in the units of
`mgjax.OBSERVABLE_UNITS`. An unknown unit is refused with the list of known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..model import OBSERVABLE_UNITS
from ..model._coupled import GLUCOSE_MG_PER_MMOL, PMOL_PER_MICROUNIT

MG_PER_MMOL_MAGNESIUM = 24.305
#: C-peptide molar mass (g/mol): 1 ng/mL = 0.3311 nmol/L.
C_PEPTIDE_G_PER_MOL = 3020.3


class UnitError(ValueError):
    """A unit that cannot be converted; the message names the known units."""


def _scale(factor: float) -> tuple[Callable, Callable]:
    return (lambda v, **_: v * factor), (lambda v, **_: v / factor)


def _hba1c_ifcc() -> tuple[Callable, Callable]:
    # IFCC (mmol/mol) ↔ NGSP/DCCT (%): % = 0.09148·mmol/mol + 2.152 (Hoelzel et al. 2004)
    return (lambda v, **_: 0.09148 * v + 2.152), (lambda v, **_: (v - 2.152) / 0.09148)


def _per_body_weight(factor: float) -> tuple[Callable, Callable]:
    """For a unit that is per kg of body weight when the model's is not, or vice versa."""

    def to_model(v, *, body_weight=None, **_):
        if body_weight is None:
            raise UnitError("this conversion needs the subject's body weight (kg)")
        return v * factor / body_weight

    def from_model(v, *, body_weight=None, **_):
        if body_weight is None:
            raise UnitError("this conversion needs the subject's body weight (kg)")
        return v * body_weight / factor

    return to_model, from_model


_MG_CONCENTRATION = {
    "mmol/L": _scale(1.0),
    "mM": _scale(1.0),
    "mg/dL": _scale(10.0 / MG_PER_MMOL_MAGNESIUM),
    "mg/L": _scale(1.0 / MG_PER_MMOL_MAGNESIUM),
    "mEq/L": _scale(0.5),
    "µmol/L": _scale(1e-3),
    "umol/L": _scale(1e-3),
}
_MG_FLUX = {
    "mmol/day": _scale(1.0),
    "mmol/24h": _scale(1.0),
    "mg/day": _scale(1.0 / MG_PER_MMOL_MAGNESIUM),
    "mg/24h": _scale(1.0 / MG_PER_MMOL_MAGNESIUM),
    "mEq/day": _scale(0.5),
    "mEq/24h": _scale(0.5),
}
_INSULIN = {
    "pmol/L": _scale(1.0),
    "µU/mL": _scale(PMOL_PER_MICROUNIT),
    "uU/mL": _scale(PMOL_PER_MICROUNIT),
    "µIU/mL": _scale(PMOL_PER_MICROUNIT),
    "uIU/mL": _scale(PMOL_PER_MICROUNIT),
    "mU/L": _scale(PMOL_PER_MICROUNIT),
    "mIU/L": _scale(PMOL_PER_MICROUNIT),
}

#: Accepted units per observable: {unit: (to model units, from model units)}.
UNITS: dict[str, dict[str, tuple[Callable, Callable]]] = {
    "glucose": {
        "mmol/L": _scale(1.0),
        "mM": _scale(1.0),
        "mg/dL": _scale(10.0 / GLUCOSE_MG_PER_MMOL),
        "mg/L": _scale(1.0 / GLUCOSE_MG_PER_MMOL),
        "g/L": _scale(1000.0 / GLUCOSE_MG_PER_MMOL),
    },
    "insulin": _INSULIN,
    "c_peptide": {
        "pmol/L": _scale(1.0),
        "nmol/L": _scale(1000.0),
        "ng/mL": _scale(1e6 / C_PEPTIDE_G_PER_MOL),
        "µg/L": _scale(1e6 / C_PEPTIDE_G_PER_MOL),
        "ug/L": _scale(1e6 / C_PEPTIDE_G_PER_MOL),
    },
    "serum_mg": _MG_CONCENTRATION,
    "ionized_mg": _MG_CONCENTRATION,
    "intracellular_mg": _MG_CONCENTRATION,
    "urinary_mg": _MG_FLUX,
    "urinary_mg_24h": _MG_FLUX,
    "mg_absorption": _MG_FLUX,
    "hba1c": {"%": _scale(1.0), "mmol/mol": _hba1c_ifcc()},
    "homa_ir": {"1": _scale(1.0), "": _scale(1.0), "-": _scale(1.0)},
    "fractional_mg_excretion": {"%": _scale(1.0), "1": _scale(100.0)},
    "glucose_infusion": {
        "mg/kg/min": _scale(1.0),
        "µmol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0),
        "umol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0),
        "mmol/min": _per_body_weight(GLUCOSE_MG_PER_MMOL),
        "mg/min": _per_body_weight(1.0),
    },
    "m_value": {
        "mg/kg/min": _scale(1.0),
        "µmol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0),
        "umol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0),
    },
    "insulin_secretion": {"pmol/min": _scale(1.0), "nmol/min": _scale(1000.0)},
    "egp": {"mg/kg/min": _scale(1.0), "µmol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0)},
    "glucose_uptake": {
        "mg/kg/min": _scale(1.0),
        "µmol/kg/min": _scale(GLUCOSE_MG_PER_MMOL / 1000.0),
    },
}

#: The model's unit of each convertible quantity.
MODEL_UNITS: dict[str, str] = {
    **OBSERVABLE_UNITS,
    "urinary_mg_24h": "mmol/day",
    "m_value": "mg/kg/min",
}


def _normalise(unit: str) -> str:
    return unit.strip().replace("μ", "µ").replace(" ", "")


def _lookup(observable: str, unit: str) -> tuple[Callable, Callable]:
    if observable not in UNITS:
        raise UnitError(
            f"unknown observable {observable!r}; observables with units: {', '.join(sorted(UNITS))}"
        )
    table = {_normalise(k): v for k, v in UNITS[observable].items()}
    key = _normalise(unit)
    if key not in table:
        known = ", ".join(UNITS[observable])
        raise UnitError(
            f"unknown unit {unit!r} for {observable}; use one of: {known} "
            f"(the model's unit is {MODEL_UNITS[observable]})"
        )
    return table[key]


def to_model_units(observable: str, values: Any, unit: str, **context: Any) -> Any:
    """`values` of `observable` given in `unit`, converted to the model's unit
    (`MODEL_UNITS[observable]`). `context` carries `body_weight` (kg) where a conversion needs
    it. Raises `UnitError` for an unknown observable or unit."""
    return _lookup(observable, unit)[0](np.asarray(values, dtype=float), **context)


def from_model_units(observable: str, values: Any, unit: str, **context: Any) -> Any:
    """The inverse of `to_model_units`."""
    return _lookup(observable, unit)[1](np.asarray(values, dtype=float), **context)


def known_units(observable: str) -> tuple[str, ...]:
    return tuple(UNITS[observable]) if observable in UNITS else ()


#: Plausible range of each observable in model units: wider than any patient's values (fasting
#: to clamp, severe deficiency to intravenous therapy), so a value outside it is almost surely a
#: unit mix-up or a typing error.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "glucose": (0.5, 60.0),
    "insulin": (0.0, 20000.0),
    "c_peptide": (0.0, 20000.0),
    "serum_mg": (0.1, 5.0),
    "ionized_mg": (0.05, 3.0),
    "intracellular_mg": (0.01, 30.0),
    "urinary_mg": (0.0, 60.0),
    "urinary_mg_24h": (0.0, 60.0),
    "mg_absorption": (-10.0, 60.0),
    "hba1c": (2.0, 20.0),
    "homa_ir": (0.0, 100.0),
    "fractional_mg_excretion": (0.0, 100.0),
    "glucose_infusion": (0.0, 40.0),
    "m_value": (0.0, 40.0),
    "insulin_secretion": (0.0, 20000.0),
    "egp": (-5.0, 20.0),
    "glucose_uptake": (0.0, 40.0),
}


def implausible_value(observable: str, raw: float, unit: str, value: float) -> str | None:
    """Why `raw` `unit` (`value` in model units) cannot be a measurement of `observable`,
    naming the unit it was probably given in; None if it is plausible."""
    if observable not in PLAUSIBLE_RANGES:
        return None
    lo, hi = PLAUSIBLE_RANGES[observable]
    if lo <= value <= hi:
        return None
    model_unit = MODEL_UNITS[observable]
    likely = []
    for other, (to_model, _) in UNITS[observable].items():
        try:
            with np.errstate(over="ignore"):
                converted = float(to_model(np.asarray(raw, dtype=float)))
        except UnitError:  # needs a body weight: not a likely mix-up
            continue
        if lo <= converted <= hi and not np.isclose(converted, value):
            likely.append(other)
    hint = f"did you mean {likely[0]}?" if likely else "check the value and its unit"
    return (
        f"{raw:g} {unit.strip()} {observable} is implausible (plausible {lo:g}–{hi:g} "
        f"{model_unit}); {hint}"
    )
