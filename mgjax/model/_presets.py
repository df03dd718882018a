"""Named parameter presets: the healthy reference and the diabetic phenotypes.

Each preset is the healthy reference with a few physiologically motivated changes; the
changes and their evidence are listed here and in docs/model.md ("Presets").
"""

from __future__ import annotations

from ._coupled import MgT2DModel
from ._parameters import set_parameters

#: Changes from the healthy reference, by preset. Values in each parameter's own unit.
PRESET_CHANGES: dict[str, dict[str, float]] = {
    "healthy": {},
    # Type 2 diabetes, normo- to borderline magnesaemic (Kurstjens 2017: serum Mg 0.74–0.80).
    "t2dm": {
        # post-receptor insulin resistance: M-value 4.7 vs 8.3 mg/kg/min (Diabetes 2001;50:1449)
        "signalling_capacity": 0.45,
        # hepatic insulin resistance: EGP suppression ΔRa 0.58 vs 1.25 mg/kg/min (same study)
        "hepatic_insulin_ec50": 330.0,
        # basal EGP raised in T2DM
        "egp_max": 0.0160,
        # functional beta-cell mass: second phase ≈ 30%, ΔI/ΔG ≈ 20% of normal (physiology.md §3)
        "beta_cell_mass": 0.45,
        # meal excursions larger than in health (HbA1c vs fasting glucose, ADAG)
        "meal_glucose_excess": 2.5,
    },
    # Type 2 diabetes with hypomagnesaemia: the population of Rodríguez-Morán & Guerrero-Romero
    # (Diabetes Care 2003): serum Mg ≤ 0.74 mmol/L, FPG ≈ 13 mmol/L, HbA1c ≈ 11.5%.
    "t2dm_hypomagnesemia": {
        "signalling_capacity": 0.36,
        "hepatic_insulin_ec50": 360.0,
        "egp_max": 0.0165,
        "beta_cell_mass": 0.21,
        "meal_glucose_excess": 3.0,
        # low habitual intake (~200 mg/day); EAR 265–350 mg/day (physiology.md §1.3)
        "dietary_mg_intake": 8.0,
    },
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESET_CHANGES)


def preset(name: str = "healthy") -> MgT2DModel:
    """The parameters of a named phenotype: `"healthy"`, `"t2dm"` or `"t2dm_hypomagnesemia"`."""
    if name not in PRESET_CHANGES:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_CHANGES)}")
    return set_parameters(MgT2DModel(), PRESET_CHANGES[name])
