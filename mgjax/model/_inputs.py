"""Exogenous inputs to the physiology at one instant: what a protocol delivers."""

from __future__ import annotations

from typing import Any, NamedTuple


class Inputs(NamedTuple):
    """Exogenous input rates at one instant (a PyTree, cheap to build in JAX and NumPy alike).

    - `glucose_infusion`: intravenous glucose (mmol/min).
    - `insulin_infusion`: intravenous insulin (pmol/min).
    - `oral_mg`: elemental Mg²⁺ entering the gut lumen from supplements, after the salt's
      bioavailability (mmol/min). Dietary Mg²⁺ is a subject parameter, not an input.
    - `iv_mg`: intravenous Mg²⁺ (mmol/min).
    - `incretin`: the gut's incretin (GLP-1/GIP) signal, 0–1 (an OGTT delivers it while
      glucose is absorbed; 0 in every intravenous protocol).
    """

    glucose_infusion: Any = 0.0
    insulin_infusion: Any = 0.0
    oral_mg: Any = 0.0
    iv_mg: Any = 0.0
    incretin: Any = 0.0

    @staticmethod
    def zeros() -> "Inputs":
        return Inputs(0.0, 0.0, 0.0, 0.0, 0.0)
