"""Intestinal Mg²⁺: dietary and supplement intake into the gut lumen, saturable (transcellular,
TRPM6/7) plus passive (paracellular) absorption, and faecal loss of the rest.

Fine, Santa Ana, Porter & Fordtran (J Clin Invest 1991;88:396) found absorption to be a
hyperbola in intake plus a linear term absorbing 7% of intake; the lumen model below reproduces
that shape: the linear floor is k_p/(k_p + k_tr) = 7%.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel
from ._parameter import parameter

_FINE = "Fine, Santa Ana, Porter & Fordtran, J Clin Invest 1991;88:396"
_ABSORPTION_CALIBRATION = (
    "calibrated: ~35% absorbed at usual intake 12.5 mmol/day (40–50% quoted, kidney atlas); "
    "+15 mmol/day supplement raises absorption by ~1.5–2 mmol/day (urinary Mg 5.5 vs "
    "3.7 mmol/day, de Valk et al., Diabet Med 1998;15:503)"
)


class IntestinalMagnesium(AbstractSubmodel):
    """State: Mg²⁺ in the gut lumen M_gut (mmol).

    dM_gut/dt = intake − J_abs − k_tr·M_gut
    J_abs = V_sat·M_gut/(K_sat + M_gut) + k_p·M_gut
    """

    name: ClassVar[str] = "intestinal_magnesium"
    state_names: ClassVar[tuple[str, ...]] = ("gut_mg",)
    state_units: ClassVar[tuple[str, ...]] = ("mmol",)

    dietary_mg_intake: Any = parameter(
        12.5,
        "mmol/day",
        (2.0, 40.0),
        "habitual dietary Mg²⁺ intake (300 mg/day ≈ 12.5 mmol/day)",
        "usual intake 300–360 mg/day (12.5–15 mmol); RDA 320–420 mg/day (physiology.md §1.3)",
    )
    gut_transit_rate: Any = parameter(
        0.0021,
        "1/min",
        (0.0003, 0.02),
        "rate at which unabsorbed lumen Mg²⁺ leaves (faeces)",
        "mean lumen residence ≈ 8 h (absorption half-time 3–4 h, ch.oddb.org [weak])",
    )
    passive_absorption_rate: Any = parameter(
        0.000158,
        "1/min",
        (1e-5, 0.002),
        "paracellular (linear) absorption rate k_p",
        f"{_FINE}: linear term absorbs 7% of intake → k_p = 0.07/0.93·k_tr",
    )
    saturable_absorption_max: Any = parameter(
        0.0028,
        "mmol/min",
        (0.0002, 0.02),
        "maximal transcellular (TRPM6/7) absorption V_sat",
        _ABSORPTION_CALIBRATION,
    )
    saturable_absorption_km: Any = parameter(
        0.5,
        "mmol",
        (0.02, 10.0),
        "lumen Mg²⁺ giving half-maximal transcellular absorption",
        _ABSORPTION_CALIBRATION,
    )

    def dietary_intake_rate(self) -> Any:
        """Dietary intake (mmol/min)."""
        return self.dietary_mg_intake / 1440.0

    def absorption(self, gut_mg) -> Any:
        """Net absorption J_abs (mmol/min)."""
        return (
            self.saturable_absorption_max * gut_mg / (self.saturable_absorption_km + gut_mg)
            + self.passive_absorption_rate * gut_mg
        )

    def rates(self, s, *, oral_mg) -> dict[str, Any]:
        gut = s["gut_mg"]
        d_gut = (
            self.dietary_intake_rate()
            + oral_mg
            - self.absorption(gut)
            - self.gut_transit_rate * gut
        )
        return dict(gut_mg=d_gut)
