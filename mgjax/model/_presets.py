"""Named parameter presets: the healthy reference and the diabetic phenotypes.

Each preset is the healthy reference with a few physiologically motivated changes; the
changes and their evidence are listed here and in docs/model.md ("Presets").
"""

from __future__ import annotations

import functools

import jax

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
        # low habitual intake: 6 mmol/day (146 mg/day) against an EAR of 265–350 mg/day
        # (physiology.md §1.3); the trial population's intake was not reported — with the
        # renal set-point shift (k_gly, k_hg) it places fasting serum Mg²⁺ at 0.70 mmol/L
        "dietary_mg_intake": 6.0,
    },
    # Prediabetes (impaired fasting glucose with impaired glucose tolerance): fasting glucose
    # 5.6–6.9 mmol/L, HbA1c 5.7–6.4% and 75-g OGTT 2-h glucose 7.8–11.0 mmol/L (ADA/WHO
    # criteria); HEC M-value 5.4 mg/kg/min in IGT vs 8.3 in NGT (Diabetes 2001;50:1449).
    # Muscle and hepatic insulin resistance (IGT and IFG, Abdul-Ghani et al., Diabetes Care
    # 2006;29:1130); beta-cell mass about that of lean health (obese non-diabetic +50 %, obese
    # IFG −40 % of that: Butler et al., Diabetes 2003;52:102) with a reduced incretin effect
    # (Muscelli et al., Diabetes 2008;57:1340), so the early insulin response falls and the
    # insulin peak comes late.
    "prediabetes": {
        "signalling_capacity": 0.6,
        "hepatic_insulin_ec50": 200.0,
        "egp_max": 0.0165,
        "beta_cell_mass": 1.0,
        "incretin_gain": 2.5,
        "meal_glucose_excess": 1.5,
    },
    # Normoglycaemic insulin resistance with hypomagnesaemia: the subjects of Guerrero-Romero
    # et al. (Diabetes Metab 2004;30:253): HOMA-IR >= 3 (4.6 ± 2.8), serum Mg <= 0.74
    # (0.61–0.62 ± 0.08 mmol/L), no diabetes. Insulin resistance compensated by secretion;
    # low intake; and a lower renal Mg²⁺ set point — serum Mg²⁺ is heritable through renal
    # Mg²⁺ handling loci (TRPM6, CNNM2, …; Meyer et al., PLoS Genet 2010;6:e1001045).
    "ir_hypomagnesemia": {
        "signalling_capacity": 0.45,
        "hepatic_insulin_ec50": 250.0,
        "beta_cell_mass": 2.0,
        "dietary_mg_intake": 5.0,
        "tal_mg_ec50": 0.54,
    },
    # Insulin-treated T2DM: the population of de Valk et al. (Diabet Med 1998;15:503), placebo
    # arm at 3 months: serum Mg 0.78 ± 0.08 mmol/L, urinary Mg 3.7 ± 1.4 mmol/day, fasting
    # glucose 11.6 ± 6.2 mmol/L, HbA1c 9.1 ± 1.2%. Advanced beta-cell loss, marked insulin
    # resistance, basal insulin 24 U/day (0.3 U/kg/day).
    "t2dm_insulin": {
        "signalling_capacity": 0.25,
        "hepatic_insulin_ec50": 750.0,
        "egp_max": 0.0160,
        "beta_cell_mass": 0.1,
        "meal_glucose_excess": 3.0,
        "insulin_therapy_rate": 100.0,
    },
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESET_CHANGES)


def preset(name: str = "healthy") -> MgT2DModel:
    """The parameters of a named phenotype: `"healthy"`, `"t2dm"`, `"t2dm_hypomagnesemia"`,
    `"prediabetes"`, `"ir_hypomagnesemia"` or `"t2dm_insulin"` (`PRESET_CHANGES`)."""
    if name not in PRESET_CHANGES:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_CHANGES)}")
    return _built(tuple(sorted(PRESET_CHANGES[name].items())))


@functools.cache
def _built(changes: tuple[tuple[str, float], ...]) -> MgT2DModel:
    """A preset built once per process (an immutable module; building one converts ~100
    values to JAX arrays, 8 ms — before this cache, most of a batch's set-up per subject).
    Built eagerly even when first asked for inside a trace, so the cache never holds a
    tracer."""
    with jax.ensure_compile_time_eval():
        return set_parameters(MgT2DModel(), dict(changes))
