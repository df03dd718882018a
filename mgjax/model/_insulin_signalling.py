"""Insulin signalling: receptor binding and Mg²⁺-dependent autophosphorylation, the downstream
(post-receptor) signal, and GLUT4-mediated glucose uptake.

Receptor binding and autophosphorylation relax within a minute and are written in quasi-steady
state. Tyrosine kinases need free Mg²⁺ beyond MgATP, and Mg²⁺ changes both Vmax and Km
(Sun & Budde, Biochemistry 1997;36:2139), so the autophosphorylation rate is multiplied by a
saturating function of intracellular free Mg²⁺: low Mg²⁺ → less receptor activation →
insulin resistance. The same receptor signal activates the renal Mg²⁺ channel TRPM6 (kidney
module) and insulin-stimulated cellular Mg²⁺ uptake (Mg²⁺ pools module).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel, hill
from ._parameter import parameter

_DALLA_MAN = "Dalla Man, Rizza & Cobelli, IEEE TBME 2007;54:1740 (Table 1)"
_CLAMP = (
    "calibrated: M ≈ 8.3 mg/kg/min at a 1 mU/kg/min clamp in NGT, 4.7 in mild T2DM "
    "(Diabetes 2001;50:1449)"
)


class InsulinSignalling(AbstractSubmodel):
    """State: GLUT4 activity X (–), the remote insulin action on peripheral uptake.

    occupancy = I/(K_d + I)
    f_Mg = Mg_i^n/(K_Mg^n + Mg_i^n)
    P = λ·f_Mg·occupancy/(1 + λ·f_Mg·occupancy)          (phosphorylated receptor fraction)
    S = σ·P                                               (post-receptor signal)
    dX/dt = (S − X)/τ_X
    U_id = V_max·W·X·G/(K_m + G)
    """

    name: ClassVar[str] = "insulin_signalling"
    state_names: ClassVar[tuple[str, ...]] = ("glut4_activity",)
    state_units: ClassVar[tuple[str, ...]] = ("-",)

    receptor_kd: Any = parameter(
        2926.0,
        "pmol/L",
        (100.0, 20000.0),
        "apparent insulin concentration for half receptor occupancy (spare receptors)",
        _CLAMP,
    )
    autophosphorylation_gain: Any = parameter(
        5.4,
        "-",
        (0.5, 100.0),
        "autophosphorylation / dephosphorylation rate ratio λ at saturating Mg²⁺",
        _CLAMP,
    )
    receptor_mg_km: Any = parameter(
        0.45,
        "mmol/L",
        (0.05, 8.0),
        "free Mg²⁺ giving half-maximal receptor autophosphorylation",
        "EC50 not found (physiology.md §9; Sun & Budde 1997: PTKs need free Mg²⁺ beyond MgATP). "
        "calibrated with the Hill coefficient: 16 wk of 26 mmol/day Mg lowers FPG by ~1 mmol/L in "
        "hypomagnesaemic T2DM (Rodríguez-Morán 2003) but not in normomagnesaemic T2DM "
        "(de Valk 1998)",
    )
    receptor_mg_hill: Any = parameter(
        3.0,
        "-",
        (0.5, 5.0),
        "Hill coefficient of the free-Mg²⁺ dependence of autophosphorylation",
        "≥1 free Mg²⁺ beyond MgATP is required (Sun & Budde 1997); steepness not found — fit to "
        "decide (trial data: Rodríguez-Morán 2003 vs de Valk 1998)",
    )
    signalling_capacity: Any = parameter(
        1.0,
        "-",
        (0.05, 2.0),
        "post-receptor signalling capacity σ (1 = healthy; impaired in insulin resistance)",
        "receptor and post-receptor defects in T2DM (Kolterman et al., J Clin Invest "
        "1981;68:957); preset values calibrated to M-values",
    )
    glut4_time_constant: Any = parameter(
        30.0,
        "min",
        (5.0, 120.0),
        "time constant of GLUT4 translocation / remote action τ_X",
        f"{_DALLA_MAN}: p2U = 0.0331 /min",
    )
    glut4_uptake_max: Any = parameter(
        0.267, "mmol/kg/min", (0.02, 1.0), "maximal GLUT4-mediated uptake at X = 1", _CLAMP
    )
    glut4_km: Any = parameter(
        6.7,
        "mmol/L",
        (2.0, 20.0),
        "glucose half-saturation of GLUT4 uptake",
        f"{_DALLA_MAN}: Km0 = 225.59 mg/kg / V_G 1.88 dL/kg = 120 mg/dL",
    )

    def receptor_activation(self, insulin, mg_free) -> Any:
        """Phosphorylated insulin-receptor fraction P (–), quasi-steady."""
        occupancy = insulin / (self.receptor_kd + insulin)
        mg_factor = hill(mg_free, self.receptor_mg_km, self.receptor_mg_hill, None)
        z = self.autophosphorylation_gain * mg_factor * occupancy
        return z / (1.0 + z)

    def signal(self, insulin, mg_free) -> Any:
        """Post-receptor insulin signal S = σ·P (–)."""
        return self.signalling_capacity * self.receptor_activation(insulin, mg_free)

    def insulin_dependent_uptake(self, glucose, glut4_activity, body_weight) -> Any:
        """U_id (mmol/min): GLUT4-mediated glucose uptake in muscle and adipose tissue."""
        return (
            self.glut4_uptake_max
            * body_weight
            * glut4_activity
            * glucose
            / (self.glut4_km + glucose)
        )

    def rates(self, s, *, signal) -> dict[str, Any]:
        return dict(glut4_activity=(signal - s["glut4_activity"]) / self.glut4_time_constant)
