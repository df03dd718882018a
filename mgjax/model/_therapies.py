"""Background therapies: the drugs of the field as parameter changes, each switchable.

A therapy is a subject property, like a preset: it changes parameters and so acts in every
protocol (clamps, IVGTT, trials). The changes and their evidence are listed here and in
docs/model.md ("Therapies"); every value is a parameter a fit may re-estimate.
"""

from __future__ import annotations

from ._coupled import MgT2DModel
from ._parameters import get_parameters, set_parameters

#: Parameter values under each therapy (model units). Sources: the parameters' own entries.
THERAPY_CHANGES: dict[str, dict[str, float]] = {
    # proton-pump inhibitor: transcellular (TRPM6/7) absorption −20% (a susceptible user: 0.6–0.8)
    "ppi": {"ppi_absorption_inhibition": 0.2},
    # thiazide: renal TRPM6 down-regulated (Nijenhuis et al., J Clin Invest 2005)
    "thiazide": {"thiazide_trpm6_suppression": 0.3},
    # metformin: hepatic glucose output −24% (Hundal et al., Diabetes 2000) and a small loss
    # of intestinal Mg²⁺ absorption (lower serum Mg and lower FEMg, Peters et al. 2013)
    "metformin": {"metformin_egp_reduction": 0.24, "metformin_absorption_inhibition": 0.2},
    # basal insulin, 0.2 U/kg/day at 75 kg (15 U/day) absorbed at a steady rate
    "basal_insulin": {"insulin_therapy_rate": 60.0},
}


def therapy_names() -> tuple[str, ...]:
    return tuple(THERAPY_CHANGES)


def with_therapy(model: MgT2DModel, *therapies: str) -> MgT2DModel:
    """`model` on the named background therapies (`"ppi"`, `"thiazide"`, `"metformin"`,
    `"basal_insulin"`; see `THERAPY_CHANGES`), e.g. `with_therapy(preset("t2dm"), "metformin")`.

    Each therapy sets its parameters to their on-therapy values; a parameter the model already
    holds at a non-default value (a fitted drug effect) is overwritten, so apply therapies
    first and fitted values after."""
    changes: dict[str, float] = {}
    for name in therapies:
        if name not in THERAPY_CHANGES:
            raise KeyError(f"unknown therapy {name!r}; choose from {', '.join(THERAPY_CHANGES)}")
        changes.update(THERAPY_CHANGES[name])
    return set_parameters(model, changes)


def therapies_of(model: MgT2DModel) -> tuple[str, ...]:
    """The therapies whose parameters are all on (non-zero) in `model`."""
    values = get_parameters(model, tuple(k for c in THERAPY_CHANGES.values() for k in c))
    return tuple(
        name
        for name, changes in THERAPY_CHANGES.items()
        if all(float(values[k]) != 0.0 for k in changes)
    )
