"""Intestinal Mg²⁺: dietary and supplement intake into the gut lumen, endogenous secretion of
Mg²⁺ with the digestive juices, saturable (transcellular, TRPM6/7) plus passive (paracellular)
absorption, and faecal loss of the rest.

Fine, Santa Ana, Porter & Fordtran (J Clin Invest 1991;88:396) found absorption to be a
hyperbola in intake plus a linear term absorbing 7% of intake; the lumen model below reproduces
that shape: the linear floor is k_p/(k_p + k_tr) = 7%.

Endogenous secretion (digestive juices, proportional to serum ionised Mg²⁺) is the obligatory
loss that drains the body on a Mg²⁺-poor diet while the kidney conserves: without it the model
could not lose Mg²⁺ faster than it excretes in urine, and serum Mg²⁺ barely responded to
months of low intake. Two drugs act here, both off by default (`mgjax.THERAPY_CHANGES`):
proton-pump inhibitors and metformin reduce transcellular (TRPM6/7) absorption.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import AbstractSubmodel
from ._parameter import parameter

_FINE = "Fine, Santa Ana, Porter & Fordtran, J Clin Invest 1991;88:396"
_ABSORPTION_CALIBRATION = (
    "calibrated with the secretion: apparent (net) absorption 31% at usual intake 12.5 "
    "mmol/day (~35%; 40–50% quoted, kidney atlas), urinary 3.9 mmol/day; "
    "+15 mmol/day supplement raises absorption by ~1.5–2 mmol/day (urinary Mg 5.5 vs "
    "3.7 mmol/day, de Valk et al., Diabet Med 1998;15:503)"
)


class IntestinalMagnesium(AbstractSubmodel):
    """State: Mg²⁺ in the gut lumen M_gut (mmol).

    dM_gut/dt = intake + J_sec − J_abs − k_tr·M_gut
    J_sec = CL_sec·S_ion
    J_abs = V_sat·(1 − i_PPI)·(1 − i_met)·M_gut/(K_sat + M_gut) + k_p·M_gut
    """

    name: ClassVar[str] = "intestinal_magnesium"
    state_names: ClassVar[tuple[str, ...]] = ("gut_mg",)
    state_units: ClassVar[tuple[str, ...]] = ("mmol",)

    dietary_mg_intake: Any = parameter(
        12.5,
        "mmol/day",
        (0.5, 40.0),
        "habitual dietary Mg²⁺ intake (300 mg/day ≈ 12.5 mmol/day)",
        "usual intake 300–360 mg/day (12.5–15 mmol); RDA 320–420 mg/day (physiology.md §1.3); "
        "depletion diets < 1 mEq/day (Fatemi 1991)",
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
        0.009,
        "mmol/min",
        (0.002, 0.05),
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

    endogenous_secretion_clearance: Any = parameter(
        0.010,
        "L/min",
        (0.002, 0.03),
        "clearance of serum ionised Mg²⁺ into the gut lumen (digestive juices) CL_sec",
        "calibrated: serum Mg 0.80 → 0.61 mmol/L (× 0.76) and red-cell free Mg²⁺ × 0.79 after "
        "3 weeks of < 1 mEq/day (Fatemi et al., J Clin Endocrinol Metab 1991;73:1067); "
        "plasma Mg falls for months on a Mg-free diet while urinary Mg is < 1 mEq/day "
        "(Shils, Medicine 1969;48:61). Implies 7.8 mmol/day secreted, 3.3 lost in faeces at "
        "usual intake — more than isotope studies' ~1 mmol/day (docs/model.md)",
    )
    ppi_absorption_inhibition: Any = parameter(
        0.0,
        "-",
        (0.0, 0.8),
        "fractional loss of transcellular (TRPM6/7) absorption under a proton-pump inhibitor",
        "off by default; 0.2 under a PPI (`THERAPY_CHANGES`): PPIs impair active TRPM6/7 "
        "absorption, causing hypomagnesaemia with renal conservation (FEMg < 2%) (Cundy & "
        "Dissanayake, Clin Endocrinol 2008;69:338; William & Danziger, World J Nephrol "
        "2016;5:152; Kieboom et al., Am J Kidney Dis 2015;66:775: hypomagnesaemia OR 2.0 "
        "in PPI users; FDA safety communication 2011); size: susceptible users fall to 0.3–0.5 "
        "mmol/L, most stay normal — a subject parameter for the data to set",
        log_scale=False,
    )
    metformin_absorption_inhibition: Any = parameter(
        0.0,
        "-",
        (0.0, 0.5),
        "fractional loss of transcellular Mg²⁺ absorption under metformin",
        "off by default; 0.2 under metformin (`THERAPY_CHANGES`), calibrated: serum Mg "
        "0.81 vs 0.85 mmol/L and FEMg 1.8 vs 2.2% on metformin vs diet alone (Peters et al., "
        "PLoS One 2013, PMC3760872) — lower serum *and* lower FEMg point outside the kidney; "
        "metformin lowers TRPM6 expression and Mg²⁺ uptake in vitro (Can J Physiol Pharmacol "
        "2020;98(6))",
        log_scale=False,
    )

    def dietary_intake_rate(self) -> Any:
        """Dietary intake (mmol/min)."""
        return self.dietary_mg_intake / 1440.0

    def endogenous_secretion(self, ionized) -> Any:
        """Mg²⁺ secreted into the gut lumen with the digestive juices J_sec (mmol/min)."""
        return self.endogenous_secretion_clearance * ionized

    def transcellular_capacity(self) -> Any:
        """Maximal TRPM6/7 absorption after drug effects (mmol/min)."""
        return (
            self.saturable_absorption_max
            * (1.0 - self.ppi_absorption_inhibition)
            * (1.0 - self.metformin_absorption_inhibition)
        )

    def absorption(self, gut_mg) -> Any:
        """Gross absorption from the lumen J_abs (mmol/min)."""
        return (
            self.transcellular_capacity() * gut_mg / (self.saturable_absorption_km + gut_mg)
            + self.passive_absorption_rate * gut_mg
        )

    def rates(self, s, *, oral_mg, secretion) -> dict[str, Any]:
        gut = s["gut_mg"]
        d_gut = (
            self.dietary_intake_rate()
            + oral_mg
            + secretion
            - self.absorption(gut)
            - self.gut_transit_rate * gut
        )
        return dict(gut_mg=d_gut)
